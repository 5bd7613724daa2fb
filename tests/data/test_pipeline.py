"""Tests for jaxssl/data/pipeline.py: train/eval loaders, sharding, resume, strategies."""
import json

import numpy as np
import pytest

from configs import common
from jaxssl.data import build
from jaxssl.data import pipeline
from jaxssl.data import sources
from tests.data import corpus_fixtures


class IndexSource:
  """In-memory Source whose audio is the constant record index + 1, so a batch
  row tells which record it came from (int16 -> /32768 is exact)."""

  def __init__(self, num=120, *, seed=0, lo=200, hi=12_000, languages=("en", "fr")):
    rng = np.random.default_rng(seed)
    self.lengths = rng.integers(lo, hi, num)
    self.language = np.array([languages[i % len(languages)] for i in range(num)])
    self.speaker = np.array([f"spk{i % 7}" for i in range(num)])

  def __len__(self):
    return len(self.lengths)

  def __getitem__(self, i):
    n = int(self.lengths[i])
    return dict(audio=np.full(n, i + 1, np.int16), id=f"utt{i}", text="", phones="",
                speaker=str(self.speaker[i]), language=str(self.language[i]),
                phone_starts=np.zeros(0, np.int32), phone_ends=np.zeros(0, np.int32),
                num_samples=n)

  def metadata(self):
    return dict(num_samples=self.lengths.astype(np.int64), language=self.language,
                speaker=self.speaker)


def _cfg(**overrides):
  cfg = common.data("index", crop_samples=4_000, batch_size=8)
  cfg.update(overrides)
  return cfg


def _rows(batch):
  """Record index of every row (-1 for an all-padding row)."""
  first = np.round(batch["audio"][:, 0] * 32768).astype(int) - 1
  return np.where(batch["valid"][:, 0], first, -1)


def _take(loader, n):
  return [next(loader) for _ in range(n)]


def test_train_batches_are_crops_of_the_right_records():
  src = IndexSource()
  loader = pipeline.make_train_loader(_cfg(), seed=0, source=src)
  assert loader.languages == ["en", "fr"] and len(loader.speakers) == 7
  assert loader.seconds_per_batch() == 8 * 4_000 / 16_000
  seen = []
  for batch in _take(loader, 10):
    assert batch["audio"].shape == (8, 4_000) and batch["audio"].dtype == np.float32
    assert batch["valid"].dtype == bool and batch["language"].dtype == np.int32
    rows = _rows(batch)
    seen.extend(rows)
    np.testing.assert_array_equal(batch["valid"].sum(1), np.minimum(src.lengths[rows], 4_000))
    np.testing.assert_array_equal(batch["language"], (src.language[rows] == "fr").astype(int))
    np.testing.assert_array_equal(batch["speaker"], [int(s[3:]) for s in src.speaker[rows]])
    assert not batch["audio"][~batch["valid"]].any()
  # Records shorter than the 400-sample receptive field are never drawn.
  assert (src.lengths[seen] >= 400).all() and (src.lengths < 400).any()
  assert len(set(seen)) == 80  # 80 draws of one epoch: no repeats.


@pytest.mark.parametrize("overrides", [
    dict(normalize=True),
    dict(sampling=dict(name="temperature", alpha=0.5)),
    dict(curriculum=dict(name="crop_length", start_samples=0, ramp_steps=2)),
    dict(dynamic_batch_sec=2.0),  # Batch sizes: multiples of dynamic_batch_multiple=8.
], ids=["uniform", "temperature", "curriculum", "dynamic"])
def test_global_batch_does_not_depend_on_process_count(overrides):
  src = sources.SyntheticSource(60, seed=0, min_samples=200, max_samples=12_000)
  cfg = _cfg(**overrides)
  single = _take(pipeline.make_train_loader(cfg, seed=3, source=src), 4)
  hosts = [_take(pipeline.make_train_loader(cfg, seed=3, process_index=i, process_count=2,
                                            source=src), 4) for i in range(2)]
  for t in range(4):
    for key in single[t]:
      np.testing.assert_array_equal(single[t][key],
                                    np.concatenate([hosts[0][t][key], hosts[1][t][key]]))
  other = _take(pipeline.make_train_loader(cfg, seed=4, source=src), 1)
  assert not np.array_equal(other[0]["audio"], single[0]["audio"])
  if cfg.normalize:
    for row, ok in zip(single[0]["audio"], single[0]["valid"]):
      assert abs(row[ok].mean()) < 1e-3 and abs(row[ok].std() - 1) < 1e-2


def test_state_resumes_the_same_stream():
  src = sources.SyntheticSource(60, seed=1, min_samples=200, max_samples=12_000)
  loader = pipeline.make_train_loader(_cfg(), seed=1, source=src)
  _take(loader, 5)
  state = json.loads(json.dumps(loader.get_state()))
  expected = _take(loader, 5)
  fresh = pipeline.make_train_loader(_cfg(), seed=1, source=src)
  fresh.set_state(state)
  assert fresh.step == 5
  for a, b in zip(expected, _take(fresh, 5)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_temperature_sampling_flattens_languages():
  src = IndexSource(300, languages=("en",) * 9 + ("fr",))  # fr: ~10% of the audio.
  loader = pipeline.make_train_loader(
      _cfg(batch_size=32, sampling=dict(name="temperature", alpha=0.0)), seed=0, source=src)
  langs = np.concatenate([b["language"] for b in _take(loader, 40)])
  assert abs(langs.mean() - 0.5) < 0.06  # alpha=0: uniform over languages (4.4 sigma).


def test_crop_length_curriculum_shapes():
  cfg = _cfg(curriculum=dict(name="crop_length", start_samples=1_000, ramp_steps=8))
  loader = pipeline.make_train_loader(cfg, seed=0, source=IndexSource())
  widths = [b["audio"].shape[1] for b in _take(loader, 10)]
  assert widths[0] == 1_000 and widths[4] == 3_000 and widths[8:] == [4_000, 4_000]
  assert set(widths) == {1_000, 2_000, 3_000, 4_000}
  assert loader.batch_shape(0) == (8, 1_000)


def test_max_duration_curriculum_draws_short_whole_utterances():
  src = IndexSource()
  cfg = _cfg(curriculum=dict(name="max_duration", start_samples=0, ramp_steps=100))
  loader = pipeline.make_train_loader(cfg, seed=0, source=src)
  for batch in _take(loader, 3):  # Steps 0-2: limit 1000 samples.
    rows = _rows(batch)
    assert batch["audio"].shape == (8, 1_000) and (src.lengths[rows] <= 1_000).all()
    np.testing.assert_array_equal(batch["valid"].sum(1), src.lengths[rows])


def test_dynamic_batching_fills_batches_without_padding():
  src = IndexSource(400, lo=500, hi=6_000)
  cfg = _cfg(dynamic_batch_sec=2.0, dynamic_batch_multiple=2)  # 32,000 samples per batch.
  hosts = [pipeline.make_train_loader(cfg, seed=0, process_index=i, process_count=2, source=src)
           for i in range(2)]
  shapes = set()
  for t in range(12):
    a, b = next(hosts[0]), next(hosts[1])
    global_batch, length = hosts[0].batch_shape(t)
    assert a["audio"].shape == b["audio"].shape == (global_batch // 2, length)
    assert a["valid"].all() and b["valid"].all()
    assert abs(global_batch * length - 32_000) <= 2 * length  # |error| <= (m / 2 + 1) L.
    shapes.add((global_batch, length))
  assert 1 < len(shapes) <= 4


def test_selection_keeps_top_scored_records(tmp_path):
  src = IndexSource(40)
  score_file = tmp_path / "scores.tsv"
  score_file.write_text("".join(f"utt{i}\t{i}\n" for i in range(40)))  # Higher index = better.
  cfg = _cfg(selection=dict(score_file=str(score_file), keep_fraction=0.25))
  rows = np.concatenate([_rows(b) for b in _take(
      pipeline.make_train_loader(cfg, seed=0, source=src), 5)])
  kept = [i for i in range(30, 40) if src.lengths[i] >= 400]
  assert set(rows) == set(kept)


def test_eval_loader_one_pass_in_buckets():
  src = IndexSource(45)
  single = pipeline.make_eval_loader(_cfg(), split="dev", seed=0, source=src)
  hosts = [pipeline.make_eval_loader(_cfg(), split="dev", seed=0, process_index=i,
                                     process_count=2, source=src) for i in range(2)]
  batches = list(single)
  assert len(batches) == len(single)
  assert len({b["audio"].shape[1] for b in batches}) <= 4
  index = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(np.sort(index[index >= 0]), np.arange(45))
  for batch, a, b in zip(batches, *hosts):
    real = batch["index"] >= 0
    np.testing.assert_array_equal(_rows(batch), batch["index"])  # Right audio in each row.
    np.testing.assert_array_equal(batch["valid"].sum(1)[real], src.lengths[batch["index"][real]])
    assert (batch["language"][~real] == -1).all() and not batch["valid"][~real].any()
    for key in batch:  # Hosts agree on the shape and split the rows.
      np.testing.assert_array_equal(batch[key], np.concatenate([a[key], b[key]]))


def test_eval_loader_uses_the_given_language_list():
  src = IndexSource(10)
  loader = pipeline.make_eval_loader(_cfg(), split="dev", seed=0, source=src,
                                     languages=["fr", "de", "en"])
  for batch in loader:
    rows = batch["index"]
    real = rows >= 0
    np.testing.assert_array_equal(batch["language"][real],
                                  np.where(src.language[rows[real]] == "fr", 0, 2))
  with pytest.raises(ValueError, match=r"languages \['fr'\] missing"):
    pipeline.make_eval_loader(_cfg(), split="dev", seed=0, source=src, languages=["en"])


@pytest.mark.parametrize("overrides, process_count, match", [
    (dict(batch_size=6), 4, "batch_size=6 must be a positive multiple of process_count=4"),
    (dict(sampling=dict(name="mixture", alpha=1.0)), 1, "data.sampling.name"),
    (dict(curriculum=dict(name="crop_length", start_samples=0, ramp_steps=0)), 1, "ramp_steps"),
    (dict(curriculum=dict(name="crop_length", start_samples=0, ramp_steps=5),
          dynamic_batch_sec=4.0), 1, "cannot be combined"),
    (dict(selection=dict(score_file="", keep_fraction=0.5)), 1, "needs data.selection.score"),
    (dict(min_samples=20_000), 1, "No record"),
    (dict(dynamic_batch_sec=1.0), 1, "fewer than 8"),
])
def test_config_errors_name_the_field(overrides, process_count, match):
  with pytest.raises(ValueError, match=match):
    pipeline.make_train_loader(_cfg(**overrides), seed=0, process_count=process_count,
                               source=IndexSource())


def test_loaders_read_a_built_array_record_dataset(tmp_path):
  rows = corpus_fixtures.demo_corpus(str(tmp_path / "demo"), n=4, bad=False)
  build.build("demo_corpus", source=str(tmp_path / "demo"), data_dir=str(tmp_path / "tfds"),
              show_progress=False)
  cfg = _cfg(name="demo_corpus", data_dir=str(tmp_path / "tfds"), crop_samples=2_000,
             batch_size=4, normalize=True)
  batch = next(pipeline.make_train_loader(cfg, seed=0))
  assert batch["audio"].shape == (4, 2_000) and np.isfinite(batch["audio"]).all()
  eval_loader = pipeline.make_eval_loader(cfg, split="dev", seed=0)
  src = sources.open_source("demo_corpus", data_dir=str(tmp_path / "tfds"), split="dev")
  for batch in eval_loader:
    for index, n in zip(batch["index"], batch["valid"].sum(1)):
      assert index < 0 or n == rows[src[int(index)]["id"]]["num_samples"]


def test_state_rejects_garbage():
  loader = pipeline.make_train_loader(_cfg(), seed=0, source=IndexSource())
  with pytest.raises(ValueError, match="Loader state"):
    loader.set_state({"next_index": 3})
