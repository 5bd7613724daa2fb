"""Multi-head self-attention with a padding mask: the Transformer's token mixer.

Vaswani et al. 2017, https://arxiv.org/abs/1706.03762 . Separate q/k/v/out projections with
biases (fairseq MultiheadAttention, so checkpoints map one to one). Without attention dropout the
product goes through `jax.nn.dot_product_attention`. Its `implementation=None` always means XLA
(JAX 0.10), so the fused cuDNN kernel has to be asked for: `implementation=None` here picks
"cudnn" on a GPU when the compute dtype is bf16/fp16 (the only dtypes that kernel takes) and
"xla" elsewhere. With attention dropout in training, flax's reference implementation is used.
Cost: O(T^2 D) time and, on the XLA path, O(H T^2) memory per layer.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import layers

IMPLEMENTATIONS = (None, "xla", "cudnn")


def resolve_implementation(implementation, dtype):
  """The attention kernel to use: "cudnn" or "xla".

  Args:
    implementation: None (automatic), "xla" or "cudnn".
    dtype: the compute dtype of q, k, v.

  Returns:
    "cudnn" when asked for, or automatically on a GPU backend with a bf16/fp16 dtype; else "xla".
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"mixer.implementation={implementation!r}; choose from {IMPLEMENTATIONS}.")
  if implementation is not None:
    return implementation
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return "cudnn" if half and jax.default_backend() == "gpu" else "xla"


class SelfAttention(nn.Module):
  """Every mixer: __call__(x [B, T, D], *, valid [B, T] bool, train) -> [B, T, D].

  Attributes:
    num_heads: number of heads H (D must divide by it).
    attention_dropout_rate: dropout on the attention probabilities in training.
    implementation: None (automatic, see the module docstring), "xla" or "cudnn". The cuDNN
      kernel takes the padding as per-row lengths (sum of `valid`), which equals the mask when
      `valid` is right padding (a prefix of True), as the data pipeline makes it; the XLA path
      masks every padded key exactly, wherever it is.
    dtype: compute dtype.
  """
  num_heads: int
  attention_dropout_rate: float = 0.0
  implementation: str | None = None
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
    if train and self.attention_dropout_rate > 0.0:
      out = nn.dot_product_attention(
          q, k, v, mask=valid[:, None, None, :], dropout_rng=self.make_rng("dropout"),
          dropout_rate=self.attention_dropout_rate, deterministic=False, dtype=self.dtype)
    elif resolve_implementation(self.implementation, q.dtype) == "cudnn":
      # cuDNN's flash kernel never materialises the [B, H, T, T] logits; a boolean mask would be
      # turned into a dense [B, 1, T, T] bias, so the padding goes in as lengths instead.
      lengths = jnp.sum(valid, axis=-1, dtype=jnp.int32)
      out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                         implementation="cudnn")
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :],
                                         implementation="xla")
    out = out.reshape(b, t, d)
    return layers.Dense(d, axes=("heads", "embed"), dtype=self.dtype, name="out")(out)
