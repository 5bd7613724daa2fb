"""Multi-head self-attention with a padding mask: the Transformer's token mixer.

Vaswani et al. 2017, https://arxiv.org/abs/1706.03762 . Separate q/k/v/out projections with
biases (fairseq MultiheadAttention, so checkpoints map one to one). Without attention dropout the
product goes through `jax.nn.dot_product_attention`'s cuDNN kernel on a GPU when the compute
dtype is bf16/fp16 (the only dtypes that kernel takes; `implementation=None` picks it there),
and through `heads_first_attention` ("xla") elsewhere and whenever attention dropout is on.
Cost: O(T^2 D) time; on the XLA path O(H T^2) memory per layer up to `query_chunk_size`
frames and O(H T chunk) beyond (query blocks, rematerialised).
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


def heads_first_attention(q, k, v, valid, *, dropout_rng=None, dropout_rate=0.0, bias=None):
  """softmax(q k^T / sqrt(d) + bias + padding mask) v, with optional dropout on the probabilities.

  The XLA path of `SelfAttention`, numerically the same as `jax.nn.dot_product_attention`
  (no dropout). Dropout draws an independent Bernoulli mask for every batch element, head, query
  and key, as torch's F.dropout on fairseq's [B*H, T, T] attention probabilities does (flax's
  default broadcast_dropout would share one [T, T] mask across rows and heads). The heads are
  moved in front of time first, so that both products are plain
  batched matmuls over [B*H] with contiguous [T, head_dim] operands: on CPU this runs the
  attention core ~1.5x faster forward and ~1.2x with its gradient than the [B, T, H, d] einsums
  (experiments/benchmarks/NOTES.md).

  Args:
    q, k, v: [B, T, H, d].
    valid: [B, T] bool; False keys get no attention.
    dropout_rng: PRNG key of the dropout, or None for no dropout.
    dropout_rate: probability of dropping an attention weight.
    bias: optional additive logit bias broadcastable to [B, H, T, T] (e.g. ALiBi), added in
      float32 before the padding mask, as data2vec 2.0's AltAttention does.

  Returns:
    [B, T, H, d].
  """
  dtype = q.dtype
  q = jnp.swapaxes(q, 1, 2) / jnp.sqrt(q.shape[-1]).astype(dtype)  # [B, H, T, d]
  k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k)
  if bias is not None:
    logits = logits.astype(jnp.float32) + bias.astype(jnp.float32)
    dtype_min = jnp.finfo(jnp.float32).min
  else:
    dtype_min = jnp.finfo(dtype).min
  logits = jnp.where(valid[:, None, None, :], logits, dtype_min)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
  if dropout_rng is not None and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = weights * (keep.astype(dtype) / jnp.asarray(1.0 - dropout_rate, dtype))
  return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, v), 1, 2)


def chunked_attention(q, k, v, valid, chunk_size: int):
  """`heads_first_attention` over blocks of `chunk_size` queries, each block rematerialised.

  The same values as one call; the [B, H, T, T] logits are never whole in memory, only
  [B, H, chunk_size, T] per block, in the forward and in the backward pass (which recomputes
  each block's probabilities). On CPU this makes 120 s of audio (6,000 frames: 1.7 GB of f32
  logits per layer, several times that in the backward pass) trainable without a flash kernel.

  Args:
    q, k, v: [B, T, H, d].
    valid: [B, T] bool; False keys get no attention.
    chunk_size: the most queries per block.

  Returns:
    [B, T, H, d].
  """
  b, t, h, d = q.shape
  n = -(-t // chunk_size)
  # ceil(T / n) queries per block, not chunk_size: the last block pads fewer than n queries
  # (1,500 frames in 2 x 1,024 would compute 37% padded attention rows; 2 x 750 computes none).
  chunk_size = -(-t // n)
  blocks = jnp.pad(q, ((0, 0), (0, n * chunk_size - t), (0, 0), (0, 0)))
  blocks = jnp.moveaxis(blocks.reshape(b, n, chunk_size, h, d), 1, 0)
  one_block = jax.checkpoint(lambda q_block: heads_first_attention(q_block, k, v, valid))
  out = jax.lax.map(one_block, blocks)                          # [n, B, chunk, H, d]
  return jnp.moveaxis(out, 0, 1).reshape(b, n * chunk_size, h, d)[:, :t]


class SelfAttention(nn.Module):
  """Every mixer: __call__(x [B, T, D], *, valid [B, T] bool, train) -> [B, T, D].

  Attributes:
    num_heads: number of heads H (D must divide by it).
    attention_dropout_rate: dropout on the attention probabilities in training.
    implementation: None (automatic, see the module docstring), "xla" or "cudnn". The cuDNN
      kernel takes the padding as per-row lengths (sum of `valid`), which equals the mask when
      `valid` is right padding (a prefix of True), as the data pipeline makes it; the XLA path
      masks every padded key exactly, wherever it is.
    query_chunk_size: without dropout on the XLA path, sequences longer than this attend in
      blocks of this many queries (`chunked_attention`: same values, O(chunk T) memory instead
      of O(T^2)); 0 never chunks. 1024 frames (20 s) leaves pretraining crops untouched.
    dtype: compute dtype.

  `bias` (optional, [B or 1, H, T, T]) is added to the attention logits (data2vec 2.0's ALiBi,
  from `encoder.Encoder`); with a bias the XLA path never chunks its queries.
  """
  num_heads: int
  attention_dropout_rate: float = 0.0
  implementation: str | None = None
  query_chunk_size: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool, bias=None):
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
      out = heads_first_attention(q, k, v, valid, dropout_rng=self.make_rng("dropout"),
                                  dropout_rate=self.attention_dropout_rate, bias=bias)
    elif resolve_implementation(self.implementation, q.dtype) == "cudnn":
      # cuDNN's flash kernel never materialises the [B, H, T, T] logits; a boolean mask would be
      # turned into a dense [B, 1, T, T] bias, so the padding goes in as lengths instead.
      lengths = jnp.sum(valid, axis=-1, dtype=jnp.int32)
      out = jax.nn.dot_product_attention(q, k, v, bias=bias, key_value_seq_lengths=lengths,
                                         implementation="cudnn")
    elif 0 < self.query_chunk_size < t and bias is None:
      out = chunked_attention(q, k, v, valid, self.query_chunk_size)
    else:
      out = heads_first_attention(q, k, v, valid, bias=bias)
    out = out.reshape(b, t, d)
    return layers.Dense(d, axes=("heads", "embed"), dtype=self.dtype, name="out")(out)
