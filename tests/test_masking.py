"""Span masking: fairseq's statistics, static shapes, padding never masked, equal counts."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import masking


def test_masked_fraction_matches_fairseq_sampler():
  valid = jnp.ones((256, 300), bool)
  masked = masking.span_mask(jax.random.key(0), valid, prob=0.65, span=10, same_count=False)
  expected = masking.expected_masked_fraction(0.65, 10, 300, num_samples=3000)
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


def test_same_count_gives_every_row_the_batch_minimum():
  lengths = jnp.array([200, 150, 90, 60])
  valid = jnp.arange(200)[None] < lengths[:, None]
  raw = masking.span_mask(jax.random.key(3), valid, prob=0.65, span=10, same_count=False)
  same = masking.span_mask(jax.random.key(3), valid, prob=0.65, span=10, same_count=True)
  counts = np.asarray(same.sum(-1))
  assert (counts == counts[0]).all()
  assert counts[0] == int(raw.sum(-1).min())
  assert not bool((same & ~raw).any())  # Trimming only removes frames.


def test_span_mask_is_jittable_with_static_shapes_and_deterministic():
  fn = jax.jit(lambda rng, v: masking.span_mask(rng, v, prob=0.65, span=10))
  v = jnp.ones((2, 100), bool)
  a, b = fn(jax.random.key(1), v), fn(jax.random.key(1), v)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, fn(jax.random.key(2), v))
  assert fn._cache_size() == 1
