"""NumPy transcriptions of fairseq's batching and masking, the references the tests compare with.

- `mask_batch`: fairseq/data/data_utils.py `compute_mask_indices` (mask_type "static",
  num_mask_ver 2, idc_select_ver 1, no_overlap False), with `require_same_masks`.
- `audio_batches`: fairseq/data/audio/raw_audio_dataset.py with `pad: false` and the trainer's
  `batch_by_size` under `max_tokens`: utterances shorter than min_sample_size dropped, sizes
  clipped to max_sample_size, a random order stably sorted by size, consecutive utterances
  grouped while (count x longest) <= max_tokens, and every batch cropped to its shortest.
Written from the fairseq sources for the tests only; nothing in jaxssl imports it.
"""
import numpy as np

from jaxssl.models import variants


def mask_batch(rng, lengths, num_frames, *, prob, span, min_spans=2, require_same_masks=True):
  """fairseq's masks for one batch: lengths [B] valid frames -> bool [B, num_frames]."""
  mask = np.zeros((len(lengths), num_frames), bool)
  chosen = []
  for sz in lengths:
    n = max(min_spans, int(prob * sz / float(span) + rng.random()))
    min_len = span
    if sz - min_len <= n:
      min_len = sz - n - 1
    starts = rng.choice(sz - min_len, n, replace=False)
    idx = np.unique((starts[:, None] + np.arange(span)[None]).ravel())
    chosen.append(idx[idx < sz])
  smallest = min(len(c) for c in chosen)
  for i, idx in enumerate(chosen):
    if require_same_masks and len(idx) > smallest:
      idx = rng.choice(idx, smallest, replace=False)
    mask[i, idx] = True
  return mask


def audio_batches(rng, sizes, *, max_tokens, max_sample_size, min_sample_size):
  """One epoch of fairseq pretraining batches: a list of (crop samples, rows)."""
  sizes = np.asarray(sizes, np.int64)
  sizes = sizes[sizes >= min_sample_size]
  clipped = np.minimum(sizes, max_sample_size)
  order = rng.permutation(len(clipped))
  order = order[np.argsort(clipped[order], kind="stable")]
  batches, start = [], 0
  while start < len(order):
    end = start + 1
    while end < len(order) and (end + 1 - start) * clipped[order[end]] <= max_tokens:
      end += 1
    members = clipped[order[start:end]]
    batches.append((int(members.min()), end - start))
    start = end
  return batches


def masked_counts(rng, batches, *, prob, span, min_spans=2):
  """Per-row masked frame counts of fairseq's batches: (frames [R], counts [R]) over all rows."""
  frames, counts = [], []
  for crop, rows in batches:
    t = variants.frames_for(crop)
    m = mask_batch(rng, [t] * rows, t, prob=prob, span=span, min_spans=min_spans)
    frames += [t] * rows
    counts += list(m.sum(-1))
  return np.array(frames), np.array(counts)
