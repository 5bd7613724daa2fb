"""wav2vec 2.0 convolutional feature encoder: raw 16 kHz audio -> 50 Hz frames (stride 320).

Baevski et al. 2020, https://arxiv.org/abs/2006.11477 ; fairseq ConvFeatureExtractionModel.
Seven 1-D convolutions (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2), GELU after each:
- mode "default" (BASE): no conv bias, GroupNorm with one group per channel after conv 0 only;
- mode "layer_norm" (LARGE LV-60, XLS-R): LayerNorm over channels after every conv (conv bias on).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import layers
from jaxssl.models import variants

MODES = ("default", "layer_norm")
# PyTorch's kaiming_normal_ (fan_in, gain sqrt(2), untruncated), as fairseq initialises the convs.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class ConvFeatureEncoder(nn.Module):
  """[B, S] float audio -> [B, T, conv_dim] features, T = variants.frames_for(S)."""
  conv_dim: int = 512
  mode: str = "default"
  conv_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio):
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
        # GroupNorm(512 groups, 512 channels) = per-channel normalisation over time, in float32
        # (fairseq's Fp32GroupNorm). Like fairseq it spans padded frames too.
        x = nn.GroupNorm(
            num_groups=self.conv_dim, epsilon=1e-5, dtype=jnp.float32, name="norm_0",
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))(
                x.astype(jnp.float32)).astype(self.dtype)
      x = layers.gelu(x)
    return x
