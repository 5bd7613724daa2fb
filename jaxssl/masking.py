"""Span masking for masked-prediction SSL, in-graph with static shapes.

fairseq `compute_mask_indices` (wav2vec 2.0 §3.1, HuBERT §3.2) as a pure jnp function: each
utterance of unpadded length L gets n = max(min_spans, floor(prob * L / span + u)), u ~ U[0, 1)
span starts drawn uniformly without replacement from [0, L - span); spans of `span` frames may
overlap; padding is never masked. With `same_count=True` (fairseq's require_same_masks, the wav2vec
2.0 default) every row is then trimmed, by a random frame-level choice, to the batch's smallest
number of masked frames, so each utterance contributes equally to the loss.

Shapes never change between steps: the number of candidate spans is bounded from the padded
length T and unused candidates are switched off, rather than host-side numpy masking with a new
shape each step.
"""
import jax
import jax.numpy as jnp
import numpy as np


def max_spans(num_frames: int, prob: float, span: int, min_spans: int) -> int:
  """Static upper bound on the spans drawn for a row of `num_frames` frames."""
  return max(min_spans, int(prob * num_frames / span + 1.0))


def span_mask(rng, valid, *, prob: float, span: int, min_spans: int = 2, same_count: bool = True):
  """Draws an SSL mask.

  Args:
    rng: PRNG key.
    valid: [B, T] bool, True on real (unpadded) frames; each row's valid frames form a prefix.
    prob: probability of a frame starting a span (fairseq mask_prob).
    span: span length in frames (mask_length).
    min_spans: minimum number of spans per row (min_masks).
    same_count: trim every row to the batch-minimum number of masked frames.

  Returns:
    masked: [B, T] bool.
  """
  b, t = valid.shape
  lengths = valid.sum(-1)  # [B]
  k_num, k_start, k_trim = jax.random.split(rng, 3)
  num = jnp.floor(prob * lengths / span + jax.random.uniform(k_num, (b,))).astype(jnp.int32)
  num = jnp.maximum(num, min_spans)
  # fairseq shortens the start range when a row is too short for `num` distinct starts.
  num_starts = jnp.where(lengths - span <= num, num + 1, lengths - span)
  num_starts = jnp.clip(num_starts, 1, t)
  # Uniform choice without replacement: the `num` highest of i.i.d. scores over allowed starts.
  scores = jax.random.uniform(k_start, (b, t))
  scores = jnp.where(jnp.arange(t)[None] < num_starts[:, None], scores, -1.0)
  n_max = min(max_spans(t, prob, span, min_spans), t)
  _, starts = jax.lax.top_k(scores, n_max)  # [B, n_max], in random order.
  use = jnp.arange(n_max)[None] < jnp.minimum(num, num_starts)[:, None]
  begin = jnp.zeros((b, t + span + 1), jnp.int32)
  rows = jnp.arange(b)[:, None]
  # A span covers [s, s + span): +1 at s and -1 at s + span, then a running sum.
  begin = begin.at[rows, starts].add(use.astype(jnp.int32))
  begin = begin.at[rows, starts + span].add(-use.astype(jnp.int32))
  masked = (jnp.cumsum(begin, -1)[:, :t] > 0) & valid
  if same_count:
    masked = _trim_to_min(k_trim, masked)
  return masked


def _trim_to_min(rng, masked):
  """Keeps a uniformly random subset of each row's masked frames, of the batch-min size."""
  count = masked.sum(-1)
  target = count.min()
  scores = jnp.where(masked, jax.random.uniform(rng, masked.shape), -1.0)
  # Rank of each frame among its row's scores, highest first.
  rank = jnp.argsort(jnp.argsort(-scores, -1), -1)
  return masked & (rank < target)


def expected_masked_fraction(prob: float, span: int, num_frames: int, min_spans: int = 2,
                             num_samples: int = 20_000, seed: int = 0) -> float:
  """Monte-Carlo masked fraction of fairseq's sampler (numpy, host), used to check `span_mask`.

  A direct transcription of compute_mask_indices for one row (static spans, overlaps allowed).
  """
  rs = np.random.default_rng(seed)
  total = 0
  for _ in range(num_samples):
    n = max(min_spans, int(prob * num_frames / float(span) + rs.random()))
    min_len = span
    if num_frames - min_len <= n:
      min_len = num_frames - n - 1
    starts = rs.choice(num_frames - min_len, n, replace=False)
    idx = np.unique((starts[:, None] + np.arange(span)[None]).ravel())
    total += (idx < num_frames).sum()
  return total / (num_samples * num_frames)
