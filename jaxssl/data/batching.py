"""Batch shapes and batch assembly: fixed crops, dynamic batches, eval buckets.

Every shape decision is global and a pure function of (seed, step) plus the
dataset lengths, so all hosts build their slice of the same global batch with
the same shape. A per-host `bucket_by_sequence_length` would give hosts
different shapes and hang a pod. Shapes come from small fixed sets (at most
~4), which bounds the number of XLA compiles.
"""
import dataclasses
import math

import numpy as np

from jaxssl import constants

_STREAM_BUCKET = 21
_STREAM_EVAL_ORDER = 22
_STREAM_CROP = 23
# Eval bucket edges are rounded up to whole 20 ms frames (the CNN stride).
FRAME_SAMPLES = 320
_INT16_SCALE = np.float32(1 / 32768)


def crop_offsets(lengths, crop, *, seed, step):
  """Random crop starts, uniform over all valid offsets.

  Args:
    lengths: int [B] utterance lengths (samples), in global batch order.
    crop: crop length (samples).
    seed, step: the randomness; one draw per global slot, so a host's slice
      does not depend on how many hosts there are.

  Returns:
    int64 [B] offsets, 0 where the utterance is not longer than `crop`.
  """
  lengths = np.asarray(lengths, np.int64)
  u = np.random.default_rng([_STREAM_CROP, seed, step]).random(len(lengths))
  return (u * np.maximum(lengths - crop + 1, 1)).astype(np.int64)


def crop_batch(audios, offsets, length, *, normalize):
  """Crops, pads, scales int16 -> float32 and optionally normalises.

  One Python iteration per utterance (a few dozen per batch), never per sample:
  each row is one numpy copy that also converts and scales.

  Args:
    audios: list of B int16 [S_i] arrays (None for an all-padding row).
    offsets: int [B] crop starts.
    length: output length L in samples.
    normalize: zero mean, unit variance per row over its real samples only
      (same as `audio.normalize(audio.to_float(x))` on the cropped segment).

  Returns:
    audio: float32 [B, L] in [-1, 1) (or normalised), 0 on padding.
    valid: bool [B, L], True on real samples.
  """
  out = np.zeros((len(audios), length), np.float32)
  valid = np.zeros((len(audios), length), bool)
  for i, (x, off) in enumerate(zip(audios, offsets)):
    if x is None:
      continue
    seg = x[off:off + length]
    n = len(seg)
    row = out[i, :n]
    np.multiply(seg, _INT16_SCALE, out=row)  # Converts and scales in one pass.
    valid[i, :n] = True
    if normalize and n:
      row -= row.mean()
      row *= 1 / np.sqrt(np.dot(row, row) / n + 1e-5)  # eps as in audio.normalize.
  return out, valid


@dataclasses.dataclass(frozen=True)
class DynamicBuckets:
  """Length buckets for duration-based dynamic batching (fairseq's max_tokens batches).

  Bucket k holds utterances with min(length, crop) in [lengths[k], lengths[k+1]); they are
  cropped to lengths[k] (no padding at all) and batched batch_sizes[k] at a time: `groups`
  blocks of floor(target / groups / lengths[k]) rows, as fairseq fills each GPU's batch up to
  max_tokens (see `budget_batch_size`).
  """
  lengths: tuple       # K crop lengths, ascending.
  batch_sizes: tuple   # K global batch sizes, multiples of lcm(multiple, groups).
  assignment: np.ndarray  # int [N] bucket of every record.
  probs: np.ndarray    # float [K] chance of each bucket per step.

  def choose(self, *, seed, step):
    """The bucket (index into `lengths`) of `step`."""
    rng = np.random.default_rng([_STREAM_BUCKET, seed, step])
    return int(rng.choice(len(self.probs), p=self.probs))


def batch_unit(multiple, groups=1):
  """What every dynamic batch size is a multiple of: lcm(multiple, groups)."""
  return math.lcm(multiple, groups)


def budget_batch_size(target_samples, length, *, multiple, groups=1):
  """Global rows of `length` samples for an audio budget of `target_samples` per update.

  fairseq's rule per GPU batch (max_tokens): as many rows as fit, floor(budget / length), in each
  of `groups` blocks of target / groups samples. The total is then a multiple of
  lcm(multiple, groups) (hosts, batch-sharded devices): exact when `multiple` divides it,
  else rounded to the nearest such multiple (at least one).
  """
  unit = batch_unit(multiple, groups)
  rows = groups * max(1, int(target_samples / groups // length))
  return max(unit, round(rows / unit) * unit)


def dynamic_buckets(lengths, *, target_samples, crop_samples, multiple, groups=1, max_buckets=4,
                    weights=None):
  """Builds `DynamicBuckets` from the length distribution.

  Args:
    lengths: int [N] utterance lengths (samples) of the records to train on.
    target_samples: audio per global batch (data.dynamic_batch_sec * rate).
    crop_samples: longest crop; longer utterances are cropped to it.
    multiple: every batch size is a multiple of it. It must be a multiple of
      the number of hosts and of batch-sharded devices, and should not depend on
      the number of hosts, so that the global batches do not either.
    groups: data.batch_groups, the per-GPU batches of one fairseq update (`budget_batch_size`).
    max_buckets: at most this many (batch, length) shapes (= compiles).
    weights: optional [N] relative chance of each record being drawn (a multilingual sampler's
      resampling, `TemperatureSampler.weights`); default all equal.

  Returns:
    DynamicBuckets whose lower edges are `crop_edges`.
  """
  clipped = np.minimum(np.asarray(lengths, np.int64), crop_samples)
  unit = batch_unit(multiple, groups)
  if target_samples < unit * crop_samples:
    raise ValueError(f"data.dynamic_batch_sec gives {target_samples} samples per batch, fewer "
                     f"than {unit} (lcm of data.dynamic_batch_multiple, data.batch_groups and "
                     f"hosts) crops of data.crop_samples ({crop_samples}).")
  edges = crop_edges(clipped, max_buckets)
  assignment = np.searchsorted(edges, clipped, side="right") - 1
  batch_sizes = [budget_batch_size(target_samples, int(e), multiple=multiple, groups=groups)
                 for e in edges]
  # A bucket is drawn in proportion to its number of batches per epoch (of the resampled
  # records, with `weights`), so every utterance is visited at about its intended rate.
  mass = np.bincount(assignment, weights=weights, minlength=len(edges))
  probs = mass / np.array(batch_sizes)
  return DynamicBuckets(tuple(int(e) for e in edges), tuple(batch_sizes), assignment,
                        probs / probs.sum())


def crop_edges(clipped, max_buckets, *, grid=256):
  """At most `max_buckets` crop lengths that waste the least audio.

  Every utterance is cropped to the largest edge not above its (clipped) length, so the audio
  thrown away is sum(length - edge). The edges minimise it exactly over a grid of `grid` length
  quantiles (rounded down to whole frames; the shortest and longest lengths are candidates as
  they are), by dynamic programming over sorted lengths: O(max_buckets x grid^2).

  Args:
    clipped: int [N] utterance lengths, already clipped to the longest crop.
    max_buckets: at most this many edges.
    grid: candidate edges.

  Returns:
    int64 [K] ascending edges, K <= max_buckets; the first is the shortest length.
  """
  x = np.sort(np.asarray(clipped, np.int64))
  cand = np.quantile(x, np.linspace(0, 1, grid, endpoint=False), method="lower")
  cand = np.unique(np.concatenate([np.maximum(cand // FRAME_SAMPLES * FRAME_SAMPLES, x[0]),
                                   x[-1:]]))
  g = len(cand)
  pos = np.append(np.searchsorted(x, cand, side="left"), len(x))
  prefix = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
  # waste[i, j - 1]: audio cropped away by one bucket holding [cand[i], cand[j]) (cand[g] = inf).
  i, j = np.arange(g)[:, None], np.arange(1, g + 1)[None]
  waste = np.where(j > i, prefix[pos[j]] - prefix[pos[i]] - cand[i] * (pos[j] - pos[i]), np.inf)
  best = waste[0]  # best[j - 1]: least waste covering lengths < cand[j] with t buckets.
  starts, totals = [np.zeros(g, np.int64)], [best[-1]]
  for _ in range(max_buckets - 1):
    options = best[:-1, None] + waste[1:]  # The previous buckets end where the next one starts.
    starts.append(options.argmin(0) + 1)
    best = options.min(0)
    totals.append(best[-1])
  edges, end = [], g
  for t in range(int(np.argmin(totals)), -1, -1):  # Fewest buckets among the least wasteful.
    start = int(starts[t][end - 1])
    edges.append(cand[start])
    end = start
  return np.array(edges[::-1], np.int64)


def eval_bucket_edges(lengths, max_buckets=4):
  """Padded lengths for eval: quantiles of the length distribution.

  Args:
    lengths: int [N] utterance lengths (samples).
    max_buckets: at most this many distinct padded lengths.

  Returns:
    int64 [K] ascending edges (K <= max_buckets), multiples of FRAME_SAMPLES;
    the last one fits the longest utterance.
  """
  lengths = np.asarray(lengths, np.int64)
  q = np.quantile(lengths, np.arange(1, max_buckets + 1) / max_buckets, method="higher")
  return np.unique(-(-q // FRAME_SAMPLES) * FRAME_SAMPLES).astype(np.int64)


def eval_batches(lengths, edges, batch_size, *, seed):
  """Groups every record, once, into padded global batches.

  Each record goes to the smallest edge that fits it; each bucket is cut into
  batches of `batch_size` in record order, the last one padded with -1. The
  order of the batches is a permutation drawn from `seed`, so step t's bucket
  is a function of (seed, t) that every host computes identically.

  Args:
    lengths: int [N] utterance lengths.
    edges: int [K] padded lengths from `eval_bucket_edges`.
    batch_size: global batch size.
    seed: orders the batches.

  Returns:
    list of (padded_length, int64 [batch_size] record indices, -1 = padding).
  """
  bucket = np.searchsorted(edges, np.asarray(lengths, np.int64), side="left")
  batches = []
  for k, edge in enumerate(edges):
    members = np.flatnonzero(bucket == k)
    for start in range(0, len(members), batch_size):
      chunk = np.full(batch_size, -1, np.int64)
      part = members[start:start + batch_size]
      chunk[:len(part)] = part
      batches.append((int(edge), chunk))
  order = np.random.default_rng([_STREAM_EVAL_ORDER, seed]).permutation(len(batches))
  return [batches[i] for i in order]


def dummy_batch(num_samples=constants.SAMPLE_RATE):
  """One second (by default) of silence for model init and shape inference:
  {"audio": float32 [1, S] zeros, "valid": bool [1, S] ones}."""
  return {"audio": np.zeros((1, num_samples), np.float32),
          "valid": np.ones((1, num_samples), bool)}
