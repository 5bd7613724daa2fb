"""Span masking: fairseq's statistics, static shapes, padding never masked, equal counts per peer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import masking
from tests import fairseq_reference


def _fairseq_fraction(num_frames, rows=3000, **kw):
  rng = np.random.default_rng(0)
  m = fairseq_reference.mask_batch(rng, [num_frames] * rows, num_frames, prob=0.65, span=10,
                                   require_same_masks=False, **kw)
  return m.mean()


def test_masked_fraction_matches_fairseq_sampler():
  valid = jnp.ones((256, 300), bool)
  masked = masking.span_mask(jax.random.key(0), valid, prob=0.65, span=10, same_count=False)
  expected = _fairseq_fraction(300)
  # 256 x 300 frames: the sampling error of the mean is ~0.003.
  assert abs(float(masked.mean()) - expected) < 0.01
  assert 0.47 < expected < 0.51  # The paper's "about 49%" at p=0.65, M=10.


def test_padding_is_never_masked_and_short_rows_get_min_spans():
  lengths = jnp.array([300, 120, 25, 40])
  valid = jnp.arange(300)[None] < lengths[:, None]
  for seed in range(5):
    masked = masking.span_mask(jax.random.key(seed), valid, prob=0.65, span=10, min_spans=2,
                               same_count=False)
    assert not bool((masked & ~valid).any())
    # A 25-frame row: 2 spans of 10 frames drawn from 15 starts cover at least 11 frames.
    assert int(masked[2].sum()) >= 11


def test_same_count_trims_only_among_rows_of_equal_length():
  """Rows of one length get that class's minimum; a short row never trims a long one."""
  lengths = jnp.array([200, 200, 200, 60, 60, 200, 90, 60])
  valid = jnp.arange(200)[None] < lengths[:, None]
  raw = masking.span_mask(jax.random.key(3), valid, prob=0.65, span=10, same_count=False)
  same = masking.span_mask(jax.random.key(3), valid, prob=0.65, span=10, same_count=True)
  raw_counts, counts = np.asarray(raw.sum(-1)), np.asarray(same.sum(-1))
  for length in (200, 60, 90):
    rows = np.asarray(lengths) == length
    assert (counts[rows] == raw_counts[rows].min()).all()
  assert counts[0] > 70  # ~0.49 x 200 frames, not the 60-frame rows' ~30.
  assert not bool((same & ~raw).any())  # Trimming only removes frames.


def test_groups_trim_within_their_block_only():
  """data.batch_groups: fairseq trims per GPU batch, so the minimum is taken per block of rows."""
  valid = jnp.ones((64, 100), bool)
  raw = masking.span_mask(jax.random.key(4), valid, prob=0.65, span=10, same_count=False)
  grouped = masking.span_mask(jax.random.key(4), valid, prob=0.65, span=10, groups=16)
  raw_counts = np.asarray(raw.sum(-1)).reshape(16, 4)
  counts = np.asarray(grouped.sum(-1)).reshape(16, 4)
  np.testing.assert_array_equal(counts, raw_counts.min(-1, keepdims=True).repeat(4, -1))
  assert len(np.unique(counts[:, 0])) > 1  # Blocks keep different counts.
  with pytest.raises(ValueError, match="batch_groups=5"):
    masking.span_mask(jax.random.key(4), valid, prob=0.65, span=10, groups=5)


def test_trimmed_counts_match_fairseq_require_same_masks():
  """Equal-length rows in blocks of 5 (BASE's per-GPU batch of 15.6 s crops): the mean trimmed
  count equals fairseq's require_same_masks on the same block size."""
  rows, t = 2000, 781
  masked = masking.span_mask(jax.random.key(5), jnp.ones((rows, t), bool), prob=0.65, span=10,
                             groups=rows // 5)
  rng = np.random.default_rng(1)
  ref = np.concatenate([fairseq_reference.mask_batch(rng, [t] * 5, t, prob=0.65, span=10).sum(-1)
                        for _ in range(rows // 5)])
  ours = np.asarray(masked.sum(-1))
  # Standard error of each mean: ~15 / sqrt(2000 / 5) ~ 0.8 frames.
  assert abs(ours.mean() - ref.mean()) < 4.0
  assert abs(ours.std() - ref.std()) < 4.0


def test_span_mask_is_jittable_with_static_shapes_and_deterministic():
  fn = jax.jit(lambda rng, v: masking.span_mask(rng, v, prob=0.65, span=10))
  v = jnp.ones((2, 100), bool)
  a, b = fn(jax.random.key(1), v), fn(jax.random.key(1), v)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, fn(jax.random.key(2), v))
  assert fn._cache_size() == 1
