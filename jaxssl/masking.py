"""Span masking for masked-prediction SSL, in-graph with static shapes.

fairseq `compute_mask_indices` (wav2vec 2.0 §3.1, HuBERT §3.2) as a pure jnp function: each
utterance of unpadded length L gets n = max(min_spans, floor(prob * L / span + u)), u ~ U[0, 1)
span starts drawn uniformly without replacement from [0, L - span); spans of `span` frames may
overlap; padding is never masked. With `same_count=True` (fairseq's require_same_masks, the default
of wav2vec 2.0 and HuBERT) rows are then trimmed, by a random frame-level choice, to the smallest
number of masked frames among their peers, so each utterance contributes equally to the loss.

Peers, as in fairseq: fairseq trims within one GPU's batch, whose rows are all cropped to the same
length, so the trim only evens out span overlaps. Here the global batch is split into `groups`
consecutive blocks of rows (data.batch_groups: fairseq's per-GPU batches of one update), and within
a block only rows of the same valid length are peers. A short utterance therefore never trims a
long one: trimming across lengths would leave a 781-frame row with the ~49 masked frames of a
99-frame row.

Shapes never change between steps: the number of candidate spans is bounded from the padded
length T and unused candidates are switched off, rather than host-side numpy masking with a new
shape each step.

`channel_mask` is fine-tuning's channel masking (fairseq wav2vec2.py `apply_mask` with
mask_channel_prob / mask_channel_length): the same draw over the C channels of each utterance
instead of its frames, `compute_mask_indices((B, C), None, prob, length)` with min_masks 0 and
require_same_masks on, i.e. `span_mask` on an all-valid [B, C] grid.
"""
import jax
import jax.numpy as jnp


def max_spans(num_frames: int, prob: float, span: int, min_spans: int) -> int:
  """Static upper bound on the spans drawn for a row of `num_frames` frames."""
  return max(min_spans, int(prob * num_frames / span + 1.0))


def span_mask(rng, valid, *, prob: float, span: int, min_spans: int = 2, same_count: bool = True,
              groups: int = 1):
  """Draws an SSL mask.

  Args:
    rng: PRNG key.
    valid: [B, T] bool, True on real (unpadded) frames; each row's valid frames form a prefix.
    prob: probability of a frame starting a span (fairseq mask_prob).
    span: span length in frames (mask_length).
    min_spans: minimum number of spans per row (min_masks).
    same_count: trim every row to the minimum number of masked frames of its peers (the rows of
      its group with the same valid length).
    groups: the batch is this many consecutive blocks of rows (B must divide by it).

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
    masked = _trim_to_peer_min(k_trim, masked, lengths, groups)
  return masked


def _trim_to_peer_min(rng, masked, lengths, groups):
  """Keeps a uniformly random subset of each row's masked frames, of its peers' minimum size."""
  b = masked.shape[0]
  if b % groups:
    raise ValueError(f"The batch of {b} rows does not split into data.batch_groups={groups}.")
  count = masked.sum(-1).reshape(groups, b // groups)
  length = lengths.reshape(groups, b // groups)
  peers = length[:, :, None] == length[:, None, :]  # [G, n, n]; every row is its own peer.
  big = jnp.iinfo(count.dtype).max
  target = jnp.where(peers, count[:, None, :], big).min(-1).reshape(b, 1)
  scores = jnp.where(masked, jax.random.uniform(rng, masked.shape), -1.0)
  # Rank of each frame among its row's scores, highest first.
  rank = jnp.argsort(jnp.argsort(-scores, -1), -1)
  return masked & (rank < target)


def channel_mask(rng, batch: int, channels: int, *, prob: float, span: int):
  """Channels to zero in every frame of each utterance (fairseq's mask_channel_prob).

  fairseq draws n = floor(prob * C / span + u) spans (min_masks 0) per row, starts uniform
  without replacement in [0, C - span), then trims every row of the batch to the smallest count
  (require_same_masks); each row's mask is then expanded over all T frames and the masked
  channels set to 0 (wav2vec2.py `apply_mask`, after the time mask).

  Args:
    rng: PRNG key.
    batch: rows B.
    channels: C, the width of the features being masked.
    prob: fairseq mask_channel_prob.
    span: fairseq mask_channel_length.

  Returns:
    [B, C] bool, True on the channels to zero.
  """
  if span > channels:
    raise ValueError(f"masking.channel_span={span} is wider than the {channels} channels.")
  valid = jnp.ones((batch, channels), bool)
  return span_mask(rng, valid, prob=prob, span=span, min_spans=0, same_count=True)
