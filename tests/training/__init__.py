"""Tests of jaxssl/training."""
