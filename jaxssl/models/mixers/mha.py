"""Multi-head self-attention with a padding mask: the Transformer's token mixer.

Vaswani et al. 2017, https://arxiv.org/abs/1706.03762 . Separate q/k/v/out projections with
biases (fairseq MultiheadAttention, so checkpoints map one to one). Without attention dropout the
product goes through `jax.nn.dot_product_attention`, which picks the fused cuDNN kernel on GPU when
it can and plain XLA elsewhere; with dropout flax's reference implementation is used.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import layers


class SelfAttention(nn.Module):
  """Every mixer: __call__(x [B, T, D], *, valid [B, T] bool, train) -> [B, T, D]."""
  num_heads: int
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    b, t, d = x.shape
    if d % self.num_heads:
      raise ValueError(f"embed_dim {d} is not divisible by num_heads {self.num_heads}.")
    head_dim = d // self.num_heads

    def project(name):
      y = layers.Dense(d, axes=("embed", "heads"), dtype=self.dtype, name=name)(x)
      return y.reshape(b, t, self.num_heads, head_dim)

    q, k, v = project("query"), project("key"), project("value")
    # Padded keys are never attended to; padded queries produce values nobody reads.
    allowed = valid[:, None, None, :]  # [B, 1, 1, T]
    if train and self.attention_dropout_rate > 0.0:
      out = nn.dot_product_attention(
          q, k, v, mask=allowed, dropout_rng=self.make_rng("dropout"),
          dropout_rate=self.attention_dropout_rate, deterministic=False, dtype=self.dtype)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=allowed)
    out = out.reshape(b, t, d)
    return layers.Dense(d, axes=("heads", "embed"), dtype=self.dtype, name="out")(out)
