"""wav2vec 2.0 convolutional feature encoder: raw 16 kHz audio -> 50 Hz frames (stride 320).

Baevski et al. 2020, https://arxiv.org/abs/2006.11477 ; fairseq ConvFeatureExtractionModel.
Seven 1-D convolutions (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2), GELU after each:
- mode "default" (BASE): no conv bias, GroupNorm with one group per channel after conv 0 only,
  its statistics over the valid (unpadded) frames of each row: fairseq's pretraining batches have
  no padding, so this equals fairseq there and keeps a padded utterance's features equal to its
  unpadded ones elsewhere (probes, inference);
- mode "layer_norm" (LARGE LV-60, XLS-R): LayerNorm over channels after every conv (conv bias on).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import layers
from jaxssl.models import variants

MODES = ("default", "layer_norm")
# PyTorch's kaiming_normal_ (fan_in, gain sqrt(2), untruncated), as fairseq initialises the convs.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class ChannelNorm(nn.Module):
  """GroupNorm with one group per channel (fairseq's Fp32GroupNorm(C, C)) over valid frames.

  x: [B, T, C]; valid: [B, T] bool. Mean and variance per row and channel over the valid frames,
  in float32; padded frames are normalised with the same statistics (nobody reads them)."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, valid):
    c = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (c,))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (c,))
    x = x.astype(jnp.float32)
    w = valid.astype(jnp.float32)
    n = jnp.maximum(w.sum(1), 1.0)[:, None, None]
    # Masked sums over time as contractions with the mask ([B, T] x [B, T, C]): on CPU, XLA
    # fuses the equivalent (x * w).sum(1) badly (the whole CNN ran 3.3x slower on 10 s).
    mean = jnp.einsum("bt,btc->bc", w, x, precision=jax.lax.Precision.HIGHEST)[:, None] / n
    var = jnp.einsum("bt,btc->bc", w, jnp.square(x - mean),
                     precision=jax.lax.Precision.HIGHEST)[:, None] / n
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def layer0_valid(audio_valid, num_frames):
  """[B, S] sample mask -> [B, num_frames] mask of the first conv's frames (kernel 10, stride 5)
  that see only valid samples."""
  lengths = audio_valid.sum(-1)
  valid_frames = (lengths - variants.CONV_KERNELS[0]) // variants.CONV_STRIDES[0] + 1
  return jnp.arange(num_frames)[None] < valid_frames[:, None]


class ConvFeatureEncoder(nn.Module):
  """[B, S] float audio (and optional [B, S] bool sample mask) -> [B, T, conv_dim] features,
  T = variants.frames_for(S). Frames whose receptive field holds padding are not padding-free."""
  conv_dim: int = 512
  mode: str = "default"
  conv_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, audio_valid=None):
    if self.mode not in MODES:
      raise ValueError(f"Unknown feature encoder mode {self.mode!r}; choose from {MODES}.")
    x = audio[..., None].astype(self.dtype)  # [B, S, 1]: channels last.
    for i, (k, s) in enumerate(zip(variants.CONV_KERNELS, variants.CONV_STRIDES)):
      x = nn.Conv(
          self.conv_dim, kernel_size=(k,), strides=(s,), padding="VALID",
          use_bias=self.conv_bias, dtype=self.dtype,
          kernel_init=nn.with_logical_partitioning(
              kaiming_normal, ("conv_kernel", "conv_in", "conv_out")),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
          name=f"conv_{i}")(x)
      if self.mode == "layer_norm":
        x = layers.layer_norm(f"norm_{i}", self.dtype)(x)
      elif i == 0:
        valid = (jnp.ones(x.shape[:2], bool) if audio_valid is None
                 else layer0_valid(audio_valid, x.shape[1]))
        x = ChannelNorm(name="norm_0")(x, valid).astype(self.dtype)
      x = layers.gelu(x)
    return x
