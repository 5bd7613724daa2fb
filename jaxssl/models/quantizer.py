"""Gumbel-softmax product quantizer (wav2vec 2.0's targets).

Baevski et al. 2020 §2 and fairseq GumbelVectorQuantizer: G codebooks (groups) of V entries each;
a linear layer scores the V entries of every group, a hard (straight-through) Gumbel-softmax picks
one per group in training and argmax at eval, and the chosen entries (each vq_dim/G wide) are
concatenated. Two perplexities are logged: `code_perplexity` from the hard choices and
`prob_perplexity` from the batch-averaged softmax, which the diversity loss maximises.

fairseq computes both on each GPU's batch (a few utterances), not on the whole update: here the N
frames split into `groups` consecutive blocks (data.batch_groups), each block gets its own
perplexities, and the metrics are their mean over blocks (what fairseq logs); "diversity" is the
diversity term (GV - prob_perplexity) / GV averaged over blocks with the weights' sums, as fairseq
scales each GPU's extra loss by its sample size before summing over GPUs.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import layers


def gumbel_temperature(step, max_temp=2.0, min_temp=0.5, decay=0.999995):
  """fairseq's schedule: max(max_temp * decay**step, min_temp)."""
  # exp(step * log(decay)) with log(decay) taken in float64: 0.999995 itself rounds badly in f32.
  log_decay = math.log(decay)
  return jnp.maximum(max_temp * jnp.exp(jnp.asarray(step, jnp.float32) * log_decay), min_temp)


def _perplexity(probs, weights):
  """Sum over codebooks of exp(entropy) of the weighted mean distribution, per block.

  probs: [K, N, G, V] (K blocks of N frames), weights: [K, N] -> [K]."""
  w = weights[..., None, None] / jnp.maximum(weights.sum(-1), 1.0)[:, None, None, None]
  avg = (probs * w).sum(1)  # [K, G, V]
  return jnp.exp(-(avg * jnp.log(avg + 1e-7)).sum(-1)).sum(-1)


class GumbelQuantizer(nn.Module):
  """[N, Din] features -> ([N, vq_dim] quantized, metrics). `weights` [N] picks the frames
  (masked ones) over which the perplexities are averaged, within each of `groups` blocks."""
  num_groups: int = 2
  num_vars: int = 320
  vq_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, weights, temperature, train: bool, groups: int = 1):
    g, v = self.num_groups, self.num_vars
    if self.vq_dim % g:
      raise ValueError(f"vq_dim {self.vq_dim} is not divisible by num_groups {g}.")
    codebook = self.param(
        "codevectors", nn.with_logical_partitioning(nn.initializers.uniform(1.0),
                                                    ("codevectors", None)),
        (g * v, self.vq_dim // g))
    logits = layers.Dense(g * v, axes=(None, "codevectors"),
                          kernel_init=nn.initializers.normal(1.0), dtype=self.dtype,
                          name="weight_proj")(x)
    logits = logits.astype(jnp.float32).reshape(-1, g, v)
    hard = jax.nn.one_hot(jnp.argmax(logits, -1), v, dtype=jnp.float32)
    if x.shape[0] % groups:
      raise ValueError(f"{x.shape[0]} frames do not split into data.batch_groups={groups}.")
    def blocks(a):  # [N, ...] -> [groups, N / groups, ...]
      return a.reshape(groups, -1, *a.shape[1:])

    block_weights = blocks(weights)
    prob_ppl = _perplexity(blocks(jax.nn.softmax(logits, -1)), block_weights)
    share = block_weights.sum(-1) / jnp.maximum(weights.sum(), 1.0)
    metrics = {
        "code_perplexity": _perplexity(blocks(hard), block_weights).mean(),
        "prob_perplexity": prob_ppl.mean(),
        "diversity": ((g * v - prob_ppl) / (g * v) * share).sum(),
    }
    if train:
      gumbel = jax.random.gumbel(self.make_rng("gumbel"), logits.shape, jnp.float32)
      soft = jax.nn.softmax((logits + gumbel) / temperature, -1)
      onehot = jax.nn.one_hot(jnp.argmax(soft, -1), v, dtype=jnp.float32)
      onehot = onehot + soft - jax.lax.stop_gradient(soft)  # Straight-through estimator.
    else:
      onehot = hard
    # Selecting rows of the codebook as a matmul keeps it one fused op with a clean gradient.
    codes = codebook.reshape(g, v, -1).astype(jnp.float32)
    q = jnp.einsum("ngv,gvd->ngd", onehot, codes).reshape(x.shape[0], self.vq_dim)
    return q.astype(self.dtype), metrics
