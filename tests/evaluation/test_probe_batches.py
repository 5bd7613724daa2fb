"""Probe training batches as s3prl's: a new utterance-level shuffle every epoch (cached features
included), and random 8 s training crops for speaker ID (voxceleb1 `max_timestep`)."""
import numpy as np
import pytest

from configs.probes import speaker as speaker_config
from jaxssl.data import batching
from jaxssl.evaluation import probing
from jaxssl.evaluation import tasks
from jaxssl.evaluation import upstreams
from tests.evaluation import test_evaluate
from tests.evaluation import tone_corpus


def _varied_source(n, *, seed=0, short_every=3, short=3200):
  """A tone corpus whose every `short_every`-th utterance is cut to `short` samples."""
  src = tone_corpus.ToneSource(n, seed=seed)
  for i, r in enumerate(src.records):
    if i % short_every == 0:
      r["audio"], r["num_samples"] = r["audio"][:short], short
  return src


def _members(plans):
  return sorted(tuple(sorted(i for i in p["indices"].tolist() if i >= 0)) for p in plans)


def test_epoch_batches_hold_every_utterance_once_in_new_batches_each_epoch():
  lengths = np.random.default_rng(0).integers(4_000, 200_000, 203)
  edges = batching.eval_bucket_edges(lengths, 4)

  def plan(seed, e):
    return probing.epoch_batches(lengths, edges, 16, seed=seed, epoch=e)

  for e in range(3):
    got = np.concatenate([p["indices"] for p in plan(0, e)])
    assert sorted(got[got >= 0].tolist()) == list(range(203))  # Exactly once per epoch.
    for p in plan(0, e):  # Each batch is one bucket: its records fit, none fits the one below.
      real = lengths[p["indices"][p["indices"] >= 0]]
      k = list(edges).index(p["length"])
      assert real.max() <= p["length"] and (k == 0 or real.min() > edges[k - 1])
  # Membership changes between epochs: no batch of one epoch is a batch of the next.
  assert not set(_members(plan(0, 0))) & set(_members(plan(0, 1)))
  assert not set(_members(plan(0, 1))) & set(_members(plan(0, 2)))
  again = plan(0, 1)
  assert all((a["indices"] == b["indices"]).all() for a, b in zip(plan(0, 1), again))
  assert _members(plan(1, 1)) != _members(again)  # Another seed, other batches.


def _phone_stream(src, *, cache, crop=0, upstream=None, name="train"):
  task = tasks.get("phone")
  tokens = tasks.read_tokens(task, src)
  targets = tasks.make_targets(task, tokens, tasks.build_vocab(task, tokens), split=name)
  c = test_evaluate._config("phone")  # pylint: disable=protected-access
  return probing.FeatureStream(name, src, targets, upstream or upstreams.load("mfcc"), c.data,
                               task, label_len=8, pool=False, cache=cache, seed=0, crop=crop)


def test_eval_streams_take_their_own_batch_size():
  src = _varied_source(20)
  one = probing.FeatureStream("dev", src, None, None, _phone_stream(src, cache=False).data_cfg,
                              tasks.get("phone"), label_len=8, pool=False, cache=False, seed=0,
                              batch_size=1)
  plans = one.batches(0)
  assert all(len(p["indices"]) == 1 for p in plans) and len(plans) == 20
  assert {len(p["indices"]) for p in _phone_stream(src, cache=False).batches(0)} != {1}


def test_cached_frame_features_give_the_uncached_batches_every_epoch_and_after_a_skip():
  src = _varied_source(20)
  cached, fresh = _phone_stream(src, cache=True), _phone_stream(src, cache=False)
  assert len(cached.edges) == 2  # Two buckets: 3,200 and 9,600 samples.
  for e, skip in ((0, 0), (1, 0), (2, 3)):
    a, b = list(cached.epoch(e, skip)), list(fresh.epoch(e, skip))
    assert len(a) == len(b) == len(cached.batches(e)) - skip
    for (x, i), (y, j) in zip(a, b):
      np.testing.assert_array_equal(i, j)
      assert set(x) == set(y)
      for k in x:
        np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)
  # A resumed run (a skip into an epoch > 0, nothing cached yet) reads only what it needs.
  resumed = _phone_stream(src, cache=True)
  tail = [i.tolist() for _, i in resumed.epoch(1, 2)]
  assert tail == [p["indices"].tolist() for p in resumed.batches(1)[2:]]
  skipped = sum((p["indices"] >= 0).sum() for p in resumed.batches(1)[:2])
  assert len(resumed._rows) == 20 - skipped  # pylint: disable=protected-access


class _Recorder:
  """An upstream that records the real samples of every row it encodes."""

  def __init__(self):
    self.inner = upstreams.load("mfcc_no_cmvn")
    self.rows = []  # (padded length, valid samples, first 8 samples) per real row.
    self.batches = []  # Padded length of every batch.

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def __call__(self, batch):
    self.batches.append(batch["audio"].shape[1])
    for audio, valid, index in zip(batch["audio"], batch["valid"], batch["index"]):
      if index >= 0:
        self.rows.append((audio.shape[0], int(valid.sum()), tuple(audio[:8].tolist())))
    return self.inner(batch)


def test_training_crops_are_new_every_epoch_and_short_utterances_stay_whole():
  src = _varied_source(12)  # 9,600 samples, every third 3,200.
  up = _Recorder()
  stream = _phone_stream(src, cache=False, crop=4_800, upstream=up)
  list(stream.epoch(0))
  first = up.rows
  assert sorted(n for _, n, _ in first) == [3_200] * 4 + [4_800] * 8  # 4,800 or whole.
  assert max(length for length, _, _ in first) == 4_800
  up.rows = []
  list(stream.epoch(1))
  assert sorted(n for _, n, _ in up.rows) == sorted(n for _, n, _ in first)
  def crops(rows):
    return {s for _, n, s in rows if n == 4_800}

  assert len(crops(up.rows) & crops(first)) <= 1  # Other windows (a start may repeat by chance).
  with pytest.raises(ValueError, match="cannot be cached"):
    _phone_stream(src, cache=True, crop=4_800)


def test_speaker_probe_trains_on_crops_and_scores_whole_utterances(tmp_path):
  c = test_evaluate._config(  # pylint: disable=protected-access
      "speaker", total_steps=4, eval_every_steps=2)
  c.data.train_crop_samples = 4_800  # Of 9,600-sample utterances; cache_features stays True.
  up = _Recorder()
  results = probing.run(c, str(tmp_path), upstream=up, source_fn=tone_corpus.source_fn(32, 8),
                        plot=False)
  train = [r for r in up.rows if r[0] == 4_800]
  whole = [r for r in up.rows if r[0] != 4_800]
  assert {n for _, n, _ in train} == {4_800} and len(train) >= 4 * 4
  # Not cached: a batch encoded per step, plus the first one that the engine peeks at.
  assert up.batches.count(4_800) == 4 + 1
  assert {n for _, n, _ in whole} == {9_600}  # Dev and test: whole, and cached (once each).
  assert len(whole) == results["utterances"]["dev"] + results["utterances"]["test"]
  c.data.train_crop_samples = -1
  with pytest.raises(ValueError, match="data.train_crop_samples=-1"):
    probing.run(c, str(tmp_path / "bad"), upstream=up, source_fn=tone_corpus.source_fn(32, 8))


def test_voxceleb1_speaker_config_is_s3prls():
  c = speaker_config.get_config("dataset=voxceleb1")
  assert (c.data.name, c.splits.train, c.splits.dev, c.splits.test) == (
      "voxceleb1", "train", "dev", "test")
  assert not c.splits.by_utterance  # VoxCeleb1's own identification split.
  assert c.data.train_crop_samples == 128_000  # max_timestep.
  assert (c.optim.lr, c.optim.clip_norm, c.total_steps, c.eval_every_steps) == (
      1e-4, 1.0, 200_000, 5_000)
  assert c.data.batch_size == 32 and c.probe.projector_dim == 256  # 8 x 4 accumulated.
  assert c.data.eval_batch_size == 1  # s3prl scores whole dev / test utterances one at a time.
  assert speaker_config.get_config(None).data.train_crop_samples == 0
