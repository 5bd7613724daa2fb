"""Tests for jaxssl/data/batching.py: crops, dynamic batch shapes, eval buckets."""
import itertools

import numpy as np
import pytest

from jaxssl.data import audio
from jaxssl.data import batching


def test_crop_offsets_cover_valid_range():
  lengths = np.array([100, 500, 1_000, 5_000] * 500)
  offsets = batching.crop_offsets(lengths, 500, seed=0, step=3)
  assert (offsets >= 0).all() and (offsets <= np.maximum(lengths - 500, 0)).all()
  assert (offsets[lengths <= 500] == 0).all()
  long = lengths == 5_000
  # Uniform over [0, 4500]: mean 2250, std of the mean over 500 draws ~58.
  assert abs(offsets[long].mean() - 2_250) < 300
  assert offsets[long].max() > 4_000
  np.testing.assert_array_equal(offsets, batching.crop_offsets(lengths, 500, seed=0, step=3))
  assert not np.array_equal(offsets, batching.crop_offsets(lengths, 500, seed=0, step=4))


def test_crop_batch_values_and_padding():
  rng = np.random.default_rng(0)
  audios = [rng.integers(-3_000, 3_000, n).astype(np.int16) for n in (50, 300)] + [None]
  out, valid = batching.crop_batch(audios, [0, 120], 100, normalize=False)
  assert out.shape == (3, 100) and out.dtype == np.float32 and valid.dtype == bool
  np.testing.assert_array_equal(valid.sum(1), [50, 100, 0])
  np.testing.assert_allclose(out[0, :50], audios[0] / 32768)
  np.testing.assert_allclose(out[1], audios[1][120:220] / 32768)
  assert not out[0, 50:].any() and not out[2].any()


def test_crop_batch_normalizes_over_real_samples_only():
  rng = np.random.default_rng(1)
  audios = [(rng.standard_normal(n) * 2_000 + 500).astype(np.int16) for n in (700, 3_000)]
  out, valid = batching.crop_batch(audios, [0, 1_000], 1_000, normalize=True)
  for row, ok in zip(out, valid):
    # std is 1 up to the 1e-5 variance floor (0.3% of this signal's variance).
    assert abs(row[ok].mean()) < 1e-4 and abs(row[ok].std() - 1) < 5e-3
    assert not row[~ok].any()
  np.testing.assert_allclose(out[0, :700], audio.normalize(audio.to_float(audios[0])),
                             atol=1e-5)


@pytest.mark.parametrize("multiple", [1, 2, 4])
def test_dynamic_buckets_audio_per_batch(multiple):
  rng = np.random.default_rng(2)
  lengths = rng.integers(4_000, 300_000, size=2_000)
  target, crop = 40 * 250_000 // 4 * multiple, 250_000  # ~10 crops per multiple.
  b = batching.dynamic_buckets(lengths, target_samples=target, crop_samples=crop,
                               multiple=multiple)
  assert 1 < len(b.lengths) <= 4 and max(b.lengths) <= crop
  assert all(bs % multiple == 0 for bs in b.batch_sizes)
  for bs, length in zip(b.batch_sizes, b.lengths):
    # floor(target / L) rows (fairseq's max_tokens), then rounded to a multiple m: off by at
    # most (m / 2 + 1) rows of L; here that is <= 8%.
    assert abs(bs * length - target) <= (multiple / 2 + 1) * length
    assert abs(bs * length - target) / target <= 0.08
  # Cropping to the bucket's lower edge means no padding in any bucket.
  clipped = np.minimum(lengths, crop)
  for k, length in enumerate(b.lengths):
    assert (clipped[b.assignment == k] >= length).all()
  assert (b.assignment >= 0).all() and all(np.bincount(b.assignment) > 0)
  # Buckets are drawn in proportion to their number of batches per epoch.
  picks = np.bincount([b.choose(seed=0, step=t) for t in range(4_000)], minlength=len(b.lengths))
  weights = np.bincount(b.assignment) / np.array(b.batch_sizes)
  np.testing.assert_allclose(picks / 4_000, weights / weights.sum(), atol=0.03)


def test_budget_batch_size_fills_each_group_as_fairseq_max_tokens():
  """fairseq: each GPU batch takes floor(max_tokens / length) rows; 64 GPUs of 1.4M samples."""
  assert batching.budget_batch_size(64 * 1_400_000, 250_000, multiple=8, groups=64) == 64 * 5
  assert batching.budget_batch_size(64 * 1_400_000, 32_000, multiple=8, groups=64) == 64 * 43
  # A mesh multiple that the groups do not fill: the nearest multiple of lcm(m, groups).
  assert batching.budget_batch_size(128 * 1_200_000, 320_000, multiple=256, groups=128) == 512
  assert batching.budget_batch_size(10 * 16_000, 16_000, multiple=1) == 10


def test_dynamic_buckets_rejects_tiny_target():
  with pytest.raises(ValueError, match="dynamic_batch_sec"):
    batching.dynamic_buckets([1_000, 2_000], target_samples=3_000, crop_samples=2_000,
                             multiple=2)


def test_eval_buckets_cover_every_record_once():
  rng = np.random.default_rng(3)
  lengths = rng.integers(1_000, 200_000, size=203)
  edges = batching.eval_bucket_edges(lengths, max_buckets=4)
  assert len(edges) <= 4 and (edges % batching.FRAME_SAMPLES == 0).all()
  assert edges[-1] >= lengths.max()
  batches = batching.eval_batches(lengths, edges, 16, seed=0)
  indices = np.concatenate([idx for _, idx in batches])
  real = indices[indices >= 0]
  np.testing.assert_array_equal(np.sort(real), np.arange(203))
  assert len(batches) <= 203 // 16 + 4  # At most one partial batch per bucket.
  for edge, idx in batches:
    assert len(idx) == 16 and edge in edges
    assert (lengths[idx[idx >= 0]] <= edge).all()
  same = batching.eval_batches(lengths, edges, 16, seed=0)
  assert [e for e, _ in same] == [e for e, _ in batches]
  other = batching.eval_batches(lengths, edges, 16, seed=1)
  assert [e for e, _ in other] != [e for e, _ in batches]


def _waste(clipped, edges):
  edges = np.asarray(edges)
  return (clipped - edges[np.searchsorted(edges, clipped, side="right") - 1]).sum()


def test_crop_edges_waste_the_least_audio_of_any_edges_on_the_grid():
  """The dynamic programme against brute force over every set of grid edges."""
  rng = np.random.default_rng(4)
  clipped = np.minimum(rng.integers(8_000, 90_000, 120), 80_000)
  grid = 10
  x = np.sort(clipped)
  cand = np.quantile(x, np.linspace(0, 1, grid, endpoint=False), method="lower")
  cand = np.unique(np.concatenate([np.maximum(cand // batching.FRAME_SAMPLES
                                              * batching.FRAME_SAMPLES, x[0]), x[-1:]]))
  for k in (1, 2, 3, 4):
    edges = batching.crop_edges(clipped, k, grid=grid)
    assert len(edges) <= k and edges[0] == x[0] and (np.diff(edges) > 0).all()
    brute = min(_waste(clipped, (cand[0],) + rest)
                for n in range(k) for rest in itertools.combinations(cand[1:], n))
    assert _waste(clipped, edges) == pytest.approx(brute)
  # More buckets never waste more audio.
  wastes = [_waste(clipped, batching.crop_edges(clipped, k)) for k in (2, 4, 8, 16)]
  assert wastes == sorted(wastes, reverse=True)
