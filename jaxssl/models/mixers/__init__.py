"""Token mixers. Every mixer has the signature `(x [B, T, D], *, valid [B, T], train) -> [B, T, D]`,
so `encoder.EncoderBlock` does not care which one it holds; `model.mixer.name` is a key of
`REGISTRY`. A fork adds one with `mixers.register("name", MyMixer)` (a flax Module class whose
dataclass fields are the `model.mixer` config fields).
"""
from jaxssl import registry
from jaxssl.models.mixers import fnet
from jaxssl.models.mixers import hyena
from jaxssl.models.mixers import mha
from jaxssl.models.mixers import relpos_mha
from jaxssl.models.mixers import summary_mixing

REGISTRY = registry.Registry("mixer", "model.mixer.name", {
    "mha": mha.SelfAttention,
    "summary_mixing": summary_mixing.SummaryMixing,
    "fnet": fnet.FourierMixer,
    "hyena": hyena.HyenaMixer,
    "relpos_mha": relpos_mha.RelPosSelfAttention,
})
register, get, names = REGISTRY.register, REGISTRY.get, REGISTRY.names
