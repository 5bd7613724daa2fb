"""jaxssl: efficient self-supervised speech representation learning in JAX/Flax.

Entry point: `python -m jaxssl.main --config=configs/<recipe>.py --workdir=DIR`; see README.md.
"""
