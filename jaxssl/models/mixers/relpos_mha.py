"""Self-attention with Transformer-XL relative positions, as SpeechBrain's RelPosMHAXL.

Dai et al. 2019, https://arxiv.org/abs/1901.02860 (section 3.3); the attention of SpeechBrain's
Conformer / BEST-RQ encoder: speechbrain/nnet/attention.py `RelPosEncXL` (L333-427) and
`RelPosMHAXL` (L430-742), commit 9c826ef. For query i and key j, per head,

  score(i, j) = (q_i + u) . k_j * s + (q_i + v) . (W_pos p_{i-j}) * s,   s = 1 / sqrt(D)

(matrix_ac and matrix_bd, L659-688), softmax over the valid keys, dropout on the probabilities,
then the values and an output projection. Transcribed details:
- q, k, v projections have no bias (in_proj_weight, vbias=False by default, L494-501); the
  output projection has one (out_proj, L504); W_pos has none (linear_pos, L506).
- The scale is 1 / sqrt(embed_dim), not 1 / sqrt(head_dim) (L521).
- u, v (pos_bias_u / pos_bias_v, L508-513) are learned per head, Xavier-uniform initialised.
- p_r is RelPosEncXL's sinusoid over the 2T - 1 relative positions: entries 2m and 2m + 1 are
  sin(|r| w_m) and cos(|r| w_m), w_m = 10000^(-2m / D). Its past and future halves use the same
  sin (L397-401: "same for past and future"), so p_r = p_{-r}: the positional term sees the
  distance, not the direction (Transformer-XL's and ESPnet's negate the sin for one side).
  Direction still reaches the model through the Conformer's depthwise conv and, in jaxssl, the
  encoder's conv positional embedding.
- The [T, 2T - 1] position scores go to [T, T] by the rel-shift trick (pad one zero column on
  the left, reshape, drop the first row, keep T columns; `rel_shift`, L537-553): entry (i, j)
  reads relative position i - j.
- Padded keys get no weight (key_padding_mask, L704-728). Since p depends on i - j only, real
  frames do not depend on the padded length.

Parameter layout: SpeechBrain packs q, k, v into one [3D, D] matrix interleaved per head; here
they are separate `query` / `key` / `value` Dense layers as in `mha` (a checkpoint import would
split in_proj_weight per head).
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import layers


def relative_sinusoids(t: int, d: int):
  """RelPosEncXL.make_pe: [2T - 1, D], row n for relative position T - 1 - n (past first)."""
  inv_freq = jnp.exp(jnp.arange(0, d, 2, dtype=jnp.float32) * -(math.log(10000.0) / d))
  dist = jnp.abs(jnp.arange(t - 1, -t, -1, dtype=jnp.float32))[:, None] * inv_freq
  return jnp.stack([jnp.sin(dist), jnp.cos(dist)], axis=-1).reshape(2 * t - 1, -1)[:, :d]


def rel_shift(x):
  """[..., T, 2T - 1] scores against positions T - 1 ... -(T - 1) -> [..., T, T], entry (i, j)
  the score of relative position i - j (SpeechBrain's rel_shift, Transformer-XL's trick)."""
  *lead, t, p = x.shape
  x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
  x = x.reshape(*lead, p + 1, t)[..., 1:, :].reshape(*lead, t, p)
  return x[..., :p // 2 + 1]


class RelPosSelfAttention(nn.Module):
  """Every mixer: __call__(x [B, T, D], *, valid [B, T] bool, train) -> [B, T, D].

  Attributes:
    num_heads: number of heads H (D must divide by it).
    attention_dropout_rate: dropout on the attention probabilities in training.
    dtype: compute dtype.
  """
  num_heads: int
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    b, t, d = x.shape
    h = self.num_heads
    if d % h:
      raise ValueError(f"embed_dim {d} is not divisible by model.mixer.num_heads {h}.")
    hd = d // h

    def project(name, z, use_bias=False):
      return layers.Dense(d, axes=("embed", "heads"), use_bias=use_bias, dtype=self.dtype,
                          name=name)(z).reshape(z.shape[0], z.shape[1], h, hd)

    q, k, v = project("query", x), project("key", x), project("value", x)
    pos = project("pos", relative_sinusoids(t, d).astype(self.dtype)[None])[0]  # [2T-1, H, hd]
    bias_init = nn.initializers.xavier_uniform(in_axis=0, out_axis=1)
    u = self.param("pos_bias_u", nn.with_logical_partitioning(bias_init, ("heads", "kv")),
                   (h, hd)).astype(self.dtype)
    w = self.param("pos_bias_v", nn.with_logical_partitioning(bias_init, ("heads", "kv")),
                   (h, hd)).astype(self.dtype)
    scale = jnp.asarray(1.0 / math.sqrt(d), self.dtype)
    content = jnp.einsum("bqhd,bkhd->bhqk", (q + u) * scale, k)
    position = rel_shift(jnp.einsum("bqhd,phd->bhqp", (q + w) * scale, pos))
    logits = jnp.where(valid[:, None, None, :], content + position, jnp.finfo(self.dtype).min)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    if train and self.attention_dropout_rate > 0.0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.attention_dropout_rate,
                                  probs.shape)
      probs = probs * keep.astype(self.dtype) / jnp.asarray(1.0 - self.attention_dropout_rate,
                                                            self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d)
    return layers.Dense(d, axes=("heads", "embed"), dtype=self.dtype, name="out")(out)
