"""Encoder size table: a variant name -> dimensions (big_vision's `decode_variant` idea).

BASE and LARGE are wav2vec 2.0 / HuBERT as released (docs/reference.md); `demo` trains on
two CPU cores in minutes; `tiny` is for tests.
"""
import dataclasses

# fairseq's conv_feature_layers: [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2.
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclasses.dataclass(frozen=True)
class Variant:
  """Dimensions of one encoder size."""
  num_layers: int
  embed_dim: int
  mlp_dim: int
  num_heads: int
  conv_dim: int = 512        # Channels of every feature-encoder conv.
  final_dim: int = 256       # Contrastive / prediction space (and the quantizer's vq_dim).
  pos_conv_kernel: int = 128
  pos_conv_groups: int = 16


VARIANTS = {
    "tiny": Variant(num_layers=2, embed_dim=32, mlp_dim=64, num_heads=2, conv_dim=32,
                    final_dim=16, pos_conv_kernel=8, pos_conv_groups=4),
    "demo": Variant(num_layers=3, embed_dim=128, mlp_dim=512, num_heads=4, conv_dim=64,
                    final_dim=64, pos_conv_kernel=32, pos_conv_groups=8),
    "base": Variant(num_layers=12, embed_dim=768, mlp_dim=3072, num_heads=12),
    "large": Variant(num_layers=24, embed_dim=1024, mlp_dim=4096, num_heads=16, final_dim=768),
    # XLS-R 1B / 2B (Babu et al. 2021; HF facebook/wav2vec2-xls-r-{1b,2b} configs: 16 heads).
    "xlsr_1b": Variant(num_layers=48, embed_dim=1280, mlp_dim=5120, num_heads=16, final_dim=1024),
    "xlsr_2b": Variant(num_layers=48, embed_dim=1920, mlp_dim=7680, num_heads=16, final_dim=1024),
}


def get(name) -> Variant:
  """A variant by name, or explicit dims: a dict / ConfigDict of `Variant` fields (the odd
  sizes of an imported checkpoint, see jaxssl/interop/native.py)."""
  if hasattr(name, "items"):
    dims = dict(name.items())
    fields = {f.name for f in dataclasses.fields(Variant)}
    if set(dims) - fields or not set(dims) >= fields - {"conv_dim", "final_dim",
                                                         "pos_conv_kernel", "pos_conv_groups"}:
      raise ValueError(f"model.variant={dims}: explicit dims take the fields {sorted(fields)} "
                       "(num_layers, embed_dim, mlp_dim and num_heads required).")
    return Variant(**dims)
  if name not in VARIANTS:
    raise ValueError(f"Unknown model variant {name!r}; choose from {sorted(VARIANTS)}.")
  return VARIANTS[name]


def frames_for(num_samples):
  """Number of frames the conv feature encoder outputs for `num_samples` inputs.

  Works on Python ints and on integer arrays (fairseq `_get_feat_extract_output_lengths`):
  each conv maps L -> floor((L - kernel) / stride) + 1, which gives T = floor((L - 400) / 320) + 1
  for L >= 400 (receptive field 400 samples, stride 320).
  """
  n = num_samples
  for k, s in zip(CONV_KERNELS, CONV_STRIDES):
    n = (n - k) // s + 1
  return n


RECEPTIVE_FIELD = 400  # Samples: the shortest input that yields one frame.
