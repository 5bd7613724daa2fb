"""Tests of the data-selection scorers (jaxssl/data/scorers.py, jaxssl/score.py) on signals
with known answers, and of the score file's round trip into `data.selection`."""
import math

import jax
import ml_collections as mlc
import numpy as np
import pytest

from configs.hubert import melhubert
from configs.wav2vec2 import demo as w2v_demo
from jaxssl import pretrained
from jaxssl import score
from jaxssl.data import labels as labels_lib
from jaxssl.data import pipeline
from jaxssl.data import sampling
from jaxssl.data import scorers
from jaxssl.data import sources
from jaxssl.interop import native

SR = 16000
SNR_TOLERANCE_DB = 1.0  # Measured: within 0.6 dB for 0-40 dB (5 noise seeds).


def _gated_tone(seconds=4.0, amplitude=0.3, freq=440.0, period=0.5):
  """A tone switched on and off every `period` s (speech with pauses): (signal, on-power)."""
  t = np.arange(int(seconds * SR)) / SR
  gate = np.floor(t / period) % 2 == 0
  return amplitude * np.sin(2 * np.pi * freq * t) * gate, amplitude ** 2 / 2


# ---------------------------------------------------------------- signal scorers


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0, 30.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_snr_of_a_tone_in_white_noise(snr, seed):
  signal, power = _gated_tone()
  noise = np.random.default_rng(seed).standard_normal(len(signal)) * math.sqrt(
      power / 10 ** (snr / 10))
  estimate = scorers.snr_db((signal + noise).astype(np.float32))
  assert abs(estimate - snr) <= SNR_TOLERANCE_DB, estimate


def test_snr_int16_input_silence_and_noise_only():
  signal, power = _gated_tone()
  noise = np.random.default_rng(0).standard_normal(len(signal)) * math.sqrt(power / 100)
  as_int16 = np.round((signal + noise) * 32768).astype(np.int16)
  assert abs(scorers.snr_db(as_int16) - 20.0) <= SNR_TOLERANCE_DB
  assert scorers.snr_db(np.zeros(SR, np.int16)) == scorers.SNR_RANGE_DB[0]
  white = np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32) * 0.1
  assert scorers.snr_db(white) < 3.0  # Stationary noise: no louder frames than the quiet ones.


def test_activity_of_silence_tone_and_half_silence():
  t = np.arange(4 * SR) / SR
  tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
  assert scorers.activity_ratio(np.zeros(2 * SR, np.int16)) == 0.0
  assert scorers.activity_ratio(tone) == 1.0
  half = tone * (t < 2)
  assert scorers.activity_ratio(half) == pytest.approx(0.5, abs=0.02)
  # A -80 dBFS noise floor under the pauses is still silence, and alone it is all silence.
  floor = np.random.default_rng(0).standard_normal(len(t)).astype(np.float32) * 1e-4
  assert scorers.activity_ratio(half + floor) == pytest.approx(0.5, abs=0.02)
  assert scorers.activity_ratio(floor) == 0.0
  quarter = tone * (t < 1)
  assert scorers.activity_ratio(quarter) == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("amplitude", [1.25, 2.0, 4.0])
def test_clipping_ratio_of_a_clipped_sine(amplitude):
  t = np.arange(2 * SR) / SR
  x = np.clip(amplitude * np.sin(2 * np.pi * 100.3 * t), -1, 1)
  # |A sin| >= 0.99 for a fraction 1 - (2 / pi) asin(0.99 / A) of a period.
  expected = 1 - 2 / np.pi * np.arcsin(scorers.CLIP_LEVEL / amplitude)
  assert scorers.clipping_ratio(x) == pytest.approx(expected, abs=0.003)
  as_int16 = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
  assert scorers.clipping_ratio(as_int16) == pytest.approx(expected, abs=0.003)
  assert scorers.clipping_ratio(0.5 * np.sin(2 * np.pi * 100.3 * t)) == 0.0


# ---------------------------------------------------------------- length and random


def test_length_and_random_scores():
  assert scorers.length_seconds(24000) == 1.5
  ids = [f"utt{i}" for i in range(4000)]
  draws = np.array([scorers.random_score(i, seed=3) for i in ids])
  assert np.all((draws >= 0) & (draws < 1))
  assert abs(draws.mean() - 0.5) < 0.02 and abs(np.mean(draws < 0.25) - 0.25) < 0.03
  assert scorers.random_score("utt7", seed=3) == draws[7]  # Independent of the other ids.
  other = np.array([scorers.random_score(i, seed=4) for i in ids])
  assert abs(np.corrcoef(draws, other)[0, 1]) < 0.1


# ---------------------------------------------------------------- unit n-gram


def test_unit_bigram_perplexity_by_hand():
  seqs = [[0, 0, 1], [1, 2], [0, 1, 2, 2]]  # Collapsed: [0 1], [1 2], [0 1 2].
  # Transitions (<s> 0) x2, (<s> 1), (0 1) x2, (1 2) x2, (1 </s>), (2 </s>) x2; context totals
  # <s> 3, 0: 2, 1: 3, 2: 2; add-1 over 3 units + </s>: P(b|a) = (c(a,b) + 1) / (c(a) + 4).
  ppl = scorers.unit_perplexities(seqs, 3, k=1.0)
  assert ppl[0] == pytest.approx((3 / 7 * 3 / 6 * 2 / 7) ** (-1 / 3))
  assert ppl[1] == pytest.approx((2 / 7 * 3 / 7 * 3 / 6) ** (-1 / 3))
  assert ppl[2] == pytest.approx((3 / 7 * 3 / 6 * 3 / 7 * 3 / 6) ** (-1 / 4))
  # k = 0.5 and no collapsing: [0 0 1] keeps its (0 0) transition.
  raw = scorers.unit_perplexities(seqs, 3, k=0.5, dedup=False)
  # Counts: (<s> 0) 2, (<s> 1) 1, (0 0) 1, (0 1) 2, (1 </s>) 1, (1 2) 2, (2 2) 1, (2 </s>) 2;
  # totals <s> 3, 0: 3, 1: 3, 2: 3; P = (c + 0.5) / (3 + 2).
  assert raw[0] == pytest.approx((2.5 / 5 * 1.5 / 5 * 2.5 / 5 * 1.5 / 5) ** (-1 / 4))


def test_contrastive_unit_scores_prefer_the_target_domain():
  pool = [[0, 1, 0, 1, 0, 1], [2, 3, 2, 3, 2, 3], [0, 1, 0, 1], [2, 3, 2, 3]]
  target = [[0, 1, 0, 1, 0, 1, 0]] * 3
  s = scorers.contrastive_unit_scores(pool, target, 4)
  # In-domain (0 1 ...) utterances rank above out-of-domain (2 3 ...) ones of the same length.
  assert s[0] > s[1] + 0.5 and s[2] > s[3] + 0.5
  assert min(s[0], s[2]) > max(s[1], s[3])


# ---------------------------------------------------------------- score files and selection


def _data_cfg(score_file, keep_fraction):
  return mlc.ConfigDict(dict(name="synthetic", split="train", min_samples=0, selection=dict(
      score_file=score_file, keep_fraction=keep_fraction)))


@pytest.mark.parametrize("keep_fraction", [0.1, 0.5, 0.73, 1.0])
def test_length_scores_round_trip_into_selection(tmp_path, keep_fraction):
  source = sources.SyntheticSource(40, seed=1)
  meta = source.metadata()
  ids, values, info = score.score_split("length", source)
  path = str(tmp_path / "length.tsv")
  scorers.write_score_file(path, ids, values, "length", info=info)
  text = open(path, encoding="utf-8").read()
  assert text.startswith("# scorer=length\n") and "higher score kept" in text
  kept = pipeline._records_to_train_on(_data_cfg(path, keep_fraction), source, meta)
  count = max(1, round(keep_fraction * 40))
  longest = np.argsort(-meta["num_samples"].astype(np.int64), kind="stable")[:count]
  np.testing.assert_array_equal(kept, np.sort(longest))


def test_lower_is_better_scorers_keep_the_lowest_and_ties_go_by_record_order(tmp_path):
  ids = [f"u{i}" for i in range(10)]
  ratios = [0.5, 0.0, 0.2, 0.0, 0.9, 0.0, 0.1, 0.3, 0.0, 0.4]
  path = str(tmp_path / "clip.tsv")
  scorers.write_score_file(path, ids, ratios, "clipping")
  read = sampling.read_scores(path)
  assert read == {i: -r + 0.0 for i, r in zip(ids, ratios)}
  # Keep 5: the four clean ones (ties, record order) and then 0.1.
  np.testing.assert_array_equal(sampling.select_by_score(ids, path, 0.5), [1, 3, 5, 6, 8])
  # Keep 3 of the 4 tied at 0.0: the first three by record order.
  np.testing.assert_array_equal(sampling.select_by_score(ids, path, 0.3), [1, 3, 5])


def test_score_file_rejects_ids_that_would_break_it(tmp_path):
  with pytest.raises(ValueError, match="tabs"):
    scorers.write_score_file(str(tmp_path / "x.tsv"), ["a\tb"], [1.0], "random")


def test_perplexity_scores_from_a_label_set(tmp_path):
  source = sources.SyntheticSource(6, seed=2)
  meta = source.metadata()
  rng = np.random.default_rng(0)
  labels = [rng.integers(0, 5, n // 320) for n in meta["num_samples"]]
  order = [5, 3, 1, 0, 2, 4]  # Label rows in another order than the records: matched by id.
  labels_lib.write_split(str(tmp_path / "km"), "train", [meta["id"][i] for i in order],
                         [labels[i] for i in order])
  labels_lib.write_meta(str(tmp_path / "km"), label_rate=50, num_clusters=5)
  ids, values, info = score.score_split("perplexity", source, labels=str(tmp_path / "km"))
  assert values == pytest.approx(scorers.unit_perplexities(labels, 5))
  assert "num_units=5" in info
  with pytest.raises(ValueError, match=r"(?s)no_such.*python -m jaxssl.kmeans"):
    score.score_split("perplexity", source, labels=str(tmp_path / "no_such"))


# ---------------------------------------------------------------- model-based loss


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  """configs/wav2vec2/demo.py:runlocal (the tiny variant), random init, saved natively."""
  config = w2v_demo.get_config("runlocal")
  params = pretrained.init_params(config, seed=0)
  path = str(tmp_path_factory.mktemp("ckpt") / "w2v_tiny")
  native.save(path, config, params)
  return path, config


def test_loss_scorer_feeds_the_whole_utterance(tiny_checkpoint):
  path, config = tiny_checkpoint
  fn = score.LossScorer(path, seed=1, pad_multiple=8000)
  seen = []

  def fake_loss(params, batch, key):  # Stands in for the compiled objective loss.
    seen.append((params, batch, key))
    return 2.0, {"loss_contrastive": 1.5, "loss_diversity": 0.5}

  fn._loss = fake_loss
  audio = np.round(np.random.default_rng(0).standard_normal(9000) * 3000).astype(np.int16)
  assert fn(audio) == 1.5 and fn.metric == "loss_contrastive"
  params, batch, key = seen[-1]
  assert params is fn.params
  assert batch["audio"].shape == batch["valid"].shape == (1, 16000)  # Padded to 2 x 8000.
  assert batch["valid"][0, :9000].all() and not batch["valid"][0, 9000:].any()
  assert config.data.normalize  # The demo recipe normalises: so must the scorer.
  np.testing.assert_allclose(batch["audio"][0, :9000], (audio - audio.mean()) / audio.std(),
                             rtol=1e-4, atol=1e-4)
  assert not batch["audio"][0, 9000:].any()
  np.testing.assert_array_equal(key, jax.random.PRNGKey(1))
  fn.metric = "loss_diversity"
  assert fn(audio) == 0.5
  fn.metric = "nope"
  with pytest.raises(ValueError, match="loss_metric='nope'"):
    fn(audio)


def test_loss_scorer_runs_the_objective_in_eval_mode(tiny_checkpoint, monkeypatch):
  path, _ = tiny_checkpoint
  fn = score.LossScorer(path, seed=0, pad_multiple=8000)
  calls = []
  original = type(fn.objective).loss

  def spy(self, params, batch, rng, **kwargs):
    calls.append(kwargs)
    return original(self, params, batch, rng, **kwargs)

  monkeypatch.setattr(type(fn.objective), "loss", spy)
  audio = np.round(np.random.default_rng(0).standard_normal(16000) * 3000).astype(np.int16)
  value = fn(audio)
  assert calls == [dict(step=0, train=False)]
  assert fn.metric == "loss_contrastive" and np.isfinite(value) and value > 0
  assert fn(audio) == value  # Deterministic (and compiled once).
  fn.key = jax.random.PRNGKey(5)
  assert fn(audio) != value  # The key draws the mask and the negatives.


def test_loss_scores_of_a_split_and_bad_checkpoints(tiny_checkpoint, tmp_path):
  path, _ = tiny_checkpoint
  source = sources.SyntheticSource(3, seed=0, min_samples=9000, max_samples=15000)
  ids, values, info = score.score_split("loss", source, checkpoint=path, pad_multiple=8000)
  assert len(values) == 3 and np.all(np.isfinite(values)) and len(set(values)) == 3
  assert "metric=loss_contrastive" in info
  with pytest.raises(ValueError, match=r"does not exist.*jaxssl.main"):
    score.LossScorer(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="needs --checkpoint"):
    score.LossScorer("")


def test_loss_scorer_of_a_unit_predicting_checkpoint_reads_each_utterances_units(tmp_path):
  """MelHuBERT (HuBERT-style masked unit prediction): the loss needs the utterance's k-means
  units, found by id in the label set; other units give another loss."""
  config = melhubert.get_config("runlocal")
  path = str(tmp_path / "mel_tiny")
  native.save(path, config, pretrained.init_params(config, seed=0))
  source = sources.SyntheticSource(2, seed=0, min_samples=9000, max_samples=12000)
  ids = [str(i) for i in source.metadata()["id"]]
  rate, k = config.data.label_rate, config.objective.num_clusters
  counts = [labels_lib.expected_count(int(n), rate) for n in source.metadata()["num_samples"]]
  rng = np.random.default_rng(0)
  sets = {}
  for name, make in (("random", lambda n: rng.integers(0, k, n)), ("zeros", np.zeros)):
    sets[name] = str(tmp_path / name)
    labels_lib.write_split(sets[name], "train", ids, [make(n).astype(int) for n in counts])
    labels_lib.write_meta(sets[name], label_rate=rate, num_clusters=k)
  with pytest.raises(ValueError, match="pass --labels"):
    score.LossScorer(path)
  got = {name: score.score_split("loss", source, checkpoint=path, labels=d, split="train")
         for name, d in sets.items()}
  (ids_r, random_loss, info), (_, zeros_loss, _) = got["random"], got["zeros"]
  assert list(ids_r) == ids and "metric=loss" in info  # The total: masked CE only.
  assert np.all(np.isfinite(random_loss)) and np.all(np.isfinite(zeros_loss))
  assert not np.allclose(random_loss, zeros_loss)  # The units are the targets.
  # At init every unit is about equally likely: the cross-entropy is near log K either way.
  np.testing.assert_allclose(random_loss, np.log(k), rtol=0.2)
