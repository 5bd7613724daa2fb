"""Token mixers. Every mixer has the signature `(x [B, T, D], *, valid [B, T], train) -> [B, T, D]`,
so `encoder.EncoderBlock` does not care which one it holds; `model.mixer.name` is a key here.
"""
from jaxssl.models.mixers import fnet
from jaxssl.models.mixers import hyena
from jaxssl.models.mixers import mha
from jaxssl.models.mixers import summary_mixing

MIXERS = {
    "mha": mha.SelfAttention,
    "summary_mixing": summary_mixing.SummaryMixing,
    "fnet": fnet.FourierMixer,
    "hyena": hyena.HyenaMixer,
}


def get(name):
  if name not in MIXERS:
    raise ValueError(f"Unknown mixer {name!r}; choose from {sorted(MIXERS)}.")
  return MIXERS[name]
