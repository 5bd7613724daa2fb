"""Tests for jaxssl/data/sampling.py: statistics of samplers, curricula, selection."""
import json

import numpy as np
import pytest

from configs import common
from jaxssl.data import pipeline
from jaxssl.data import sampling


def test_language_probs_formula():
  n = np.array([900.0, 90.0, 10.0, 0.0])
  np.testing.assert_allclose(sampling.language_probs(n, 1.0), [0.9, 0.09, 0.01, 0.0])
  np.testing.assert_allclose(sampling.language_probs(n, 0.0), [1 / 3, 1 / 3, 1 / 3, 0.0])
  q = (n[:3] / n.sum()) ** 0.5
  np.testing.assert_allclose(sampling.language_probs(n, 0.5)[:3], q / q.sum())
  with pytest.raises(ValueError, match="alpha"):
    sampling.language_probs(n, -1.0)


def _corpus(num=300, seed=0):
  rng = np.random.default_rng(seed)
  language = rng.choice(3, size=num, p=[0.8, 0.15, 0.05])
  durations = rng.integers(1_000, 50_000, size=num)
  return language, durations


def test_temperature_sampler_matches_probs():
  language, durations = _corpus()
  sampler = sampling.TemperatureSampler(0, language, durations, alpha=0.3)
  pool = np.arange(len(language))
  draws = np.concatenate([sampler.sample(t, 64, 0, pool) for t in range(400)])  # 25,600 draws
  p = sampler.probs(0, pool)
  expected = sampling.language_probs(np.bincount(language, weights=durations), 0.3)
  np.testing.assert_allclose(p, expected)
  observed = np.bincount(language[draws], minlength=3) / len(draws)
  # Std of a frequency over 25,600 draws is <= 0.0031, so 0.02 is > 6 sigma.
  np.testing.assert_allclose(observed, p, atol=0.02)
  # alpha < 1 flattens: the rarest language is drawn far above its 5% share.
  assert observed[2] > 0.12
  # Uniform within a language: per-record counts of language 0 pass chi-square.
  members = np.flatnonzero(language == 0)
  counts = np.bincount(draws, minlength=len(language))[members]
  chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
  dof = len(members) - 1
  assert chi2 < dof + 5 * np.sqrt(2 * dof)


def test_temperature_sampler_pool_and_determinism():
  language, durations = _corpus()
  a = sampling.TemperatureSampler(7, language, durations, alpha=0.5)
  b = sampling.TemperatureSampler(7, language, durations, alpha=0.5)
  pool = np.flatnonzero(durations < 20_000)
  np.testing.assert_array_equal(a.sample(3, 32, 1, pool), b.sample(3, 32, 1, pool))
  assert not np.array_equal(a.sample(3, 32, 1, pool), a.sample(4, 32, 1, pool))
  assert np.isin(a.sample(5, 256, 1, pool), pool).all()


def test_uniform_sampler_epochs():
  pool = np.arange(10, 47)  # 37 records: batches straddle epoch boundaries.
  sampler = sampling.UniformSampler(seed=3)
  draws = np.concatenate([sampler.sample(t, 8, 0, pool) for t in range(37)])  # 8 full epochs
  for epoch in range(8):
    np.testing.assert_array_equal(np.sort(draws[epoch * 37:(epoch + 1) * 37]), pool)
  assert not np.array_equal(draws[:37], draws[37:74])  # A new order each epoch.
  fresh = sampling.UniformSampler(seed=3)
  np.testing.assert_array_equal(fresh.sample(20, 8, 0, pool), draws[160:168])


def test_curriculum_length_schedule():
  kw = dict(final_samples=64_000, start_samples=8_000, ramp_steps=1_000)
  assert sampling.curriculum_length(0, **kw) == 16_000  # 8k rounded up to the 1/4 grid.
  assert sampling.curriculum_length(500, **kw) == 48_000  # ramp at 36k -> 48k.
  assert sampling.curriculum_length(1_000, **kw) == 64_000
  assert sampling.curriculum_length(5_000, **kw) == 64_000
  lengths = [sampling.curriculum_length(t, **kw) for t in range(1_200)]
  assert sorted(set(lengths)) == [16_000, 32_000, 48_000, 64_000]
  assert all(a <= b for a, b in zip(lengths, lengths[1:]))
  for t, length in enumerate(lengths):
    ramp = 8_000 + 56_000 * min(t / 1_000, 1.0)
    assert ramp <= length < ramp + 16_000 + 1e-6


def test_select_by_score_keeps_top_fraction(tmp_path):
  ids = [f"u{i}" for i in range(10)]
  scores = {f"u{i}": float((i * 7) % 10) for i in range(10)}  # u0 -> 0, u3 -> 1, u7 -> 9, ...
  tsv = tmp_path / "scores.tsv"
  tsv.write_text("".join(f"{k}\t{v}\n" for k, v in scores.items()))
  kept = sampling.select_by_score(ids, str(tsv), 0.3)
  np.testing.assert_array_equal(kept, [1, 4, 7])  # Scores 7, 8, 9.
  js = tmp_path / "scores.json"
  js.write_text(json.dumps(scores))
  np.testing.assert_array_equal(sampling.select_by_score(ids, str(js), 0.3), kept)
  assert len(sampling.select_by_score(ids, str(js), 0.55)) == 6  # round(5.5) -> 6.
  assert len(sampling.select_by_score(ids, str(js), 1.0)) == 10


def test_select_by_score_errors(tmp_path):
  tsv = tmp_path / "scores.tsv"
  tsv.write_text("u0\t1.0\nu1\t2.0\n")
  with pytest.raises(ValueError, match="no score for 1 of 3 records.*u2"):
    sampling.select_by_score(["u0", "u1", "u2"], str(tsv), 0.5)
  with pytest.raises(ValueError, match="does not exist"):
    sampling.select_by_score(["u0"], str(tmp_path / "nope.tsv"), 0.5)
  bad = tmp_path / "bad.tsv"
  bad.write_text("u0 1.0\n")
  with pytest.raises(ValueError, match="malformed"):
    sampling.select_by_score(["u0"], str(bad), 0.5)
  with pytest.raises(ValueError, match="keep_fraction"):
    sampling.select_by_score(["u0"], str(tsv), 0.0)


def _multilingual(seed=0):
  """Three languages of different sizes and length distributions (long, short, mixed)."""
  rng = np.random.default_rng(seed)
  language = np.repeat([0, 1, 2], [600, 150, 50])
  lengths = np.concatenate([rng.integers(130_000, 250_000, 600),
                            rng.integers(20_000, 80_000, 150),
                            rng.integers(20_000, 250_000, 50)])
  return language, lengths


@pytest.mark.parametrize("mode", ["dynamic_batching", "crop_length", "max_duration"])
def test_training_stream_language_mix_is_p_l_under_dynamic_batching_and_curricula(mode):
  """XLS-R's p_l ∝ (n_l / N)^alpha over the utterances trained on, whatever the batching: the
  pipeline's own TrainPlan over 3,000 steps, against the standard error of the per-step mixes."""
  language, lengths = _multilingual()
  c = common.data("synthetic", crop_samples=250_000, batch_size=16)
  c.sampling = dict(name="temperature", alpha=0.3)
  ramp = 1_000
  if mode == "dynamic_batching":
    c.dynamic_batch_sec, c.dynamic_batch_multiple, c.dynamic_batch_buckets = 160.0, 1, 4
  else:
    c.curriculum = dict(name=mode, start_samples=62_500, ramp_steps=ramp)
  plan = pipeline.TrainPlan(c, seed=0, lengths=lengths, records=np.arange(len(lengths)),
                            language_ids=language, process_count=1)
  steps = range(ramp, ramp + 3_000) if mode == "max_duration" else range(3_000)
  per_step = np.array([np.bincount(language[plan(t)["indices"]], minlength=3) for t in steps])
  p = sampling.language_probs(np.bincount(language, weights=lengths), 0.3)
  observed = per_step.sum(0) / per_step.sum()
  frac = per_step / per_step.sum(1, keepdims=True)
  stderr = frac.std(0) / np.sqrt(len(frac))
  assert np.all(np.abs(observed - p) < 5 * stderr + 1e-3), (observed, p, stderr)
  if mode == "max_duration":
    # In the ramp, only short utterances: the mix is p_l over the languages that have them
    # (language 0 has none under 130,000 samples: steps < 300 draw from those <= 125,000).
    early = np.array([np.bincount(language[plan(t)["indices"]], minlength=3) for t in range(300)])
    assert early[:, 0].sum() == 0
    q = p[1:] / p[1:].sum()
    np.testing.assert_allclose(early.sum(0)[1:] / early.sum(), q, atol=0.03)
