"""Offline clustering for HuBERT-style targets: k-means in JAX, features to cluster, and cluster
quality against phone alignments (https://arxiv.org/abs/2106.07447)."""
