"""Frontends: raw audio -> frame features. A config's `model.frontend.name` is a key here."""
from jaxssl.models.frontends import cnn
from jaxssl.models.frontends import mel_stack

FRONTENDS = {"cnn": cnn.ConvFeatureEncoder, "mel_stack": mel_stack.MelStack}


def get(name):
  if name not in FRONTENDS:
    raise ValueError(f"Unknown frontend {name!r}; choose from {sorted(FRONTENDS)}.")
  return FRONTENDS[name]
