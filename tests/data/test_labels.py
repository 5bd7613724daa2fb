"""Tests for jaxssl/data/labels.py and its hook in the grain pipeline.

Labels must be cropped in step with the audio: the test source's audio encodes, in every sample,
the label frame it belongs to, so any misalignment between the two shows up exactly.
"""
import os
import pickle

import numpy as np
import pytest

from configs import common
from jaxssl.data import labels as labels_lib
from jaxssl.data import pipeline


class RampSource:
  """In-memory source: sample s of every record holds (s // 160) + 1, so after scaling to float
  a batch row tells which 10 ms label frame each of its samples came from."""

  def __init__(self, lengths):
    self.lengths = np.asarray(lengths, np.int64)

  def __len__(self):
    return len(self.lengths)

  def __getitem__(self, i):
    n = int(self.lengths[i])
    return dict(audio=(np.arange(n) // 160 + 1).astype(np.int16), id=f"utt{i}", text="",
                phones="", speaker="s", language="en", phone_starts=np.zeros(0, np.int32),
                phone_ends=np.zeros(0, np.int32), num_samples=n)

  def metadata(self):
    n = len(self)
    return dict(num_samples=self.lengths, id=np.array([f"utt{i}" for i in range(n)]),
                language=np.array(["en"] * n), speaker=np.array(["s"] * n))


def _write(directory, lengths, *, rate=100, split="train", count=None, ids=None):
  """Label i of every utterance = i (the frame index), ids utt0, utt1, ..."""
  hop = 16000 // rate
  count = count or (lambda n: 1 + n // hop)
  ids = ids or [f"utt{i}" for i in range(len(lengths))]
  labels_lib.write_split(directory, split, ids, [np.arange(count(n)) for n in lengths])
  labels_lib.write_meta(directory, label_rate=rate, num_clusters=1000)
  return directory


def _cfg(directory, rate=100, **overrides):
  cfg = common.data("ramp", crop_samples=4_000, batch_size=8)
  cfg.labels = str(directory)
  cfg.label_rate = rate
  cfg.update(overrides)
  return cfg


def _audio_frames(batch, hop):
  """Label frame of every label position, read off the audio: [B, T_lab] (-1 past the end)."""
  frames = np.round(batch["audio"] * 32768).astype(int) - 1  # Sample s -> s // 160 of its record.
  t = batch["labels"].shape[1]
  pos = np.arange(t) * hop
  out = np.full(batch["labels"].shape, -1)
  inside = pos < frames.shape[1]
  out[:, inside] = np.where(batch["valid"][:, pos[inside]], frames[:, pos[inside]] * 160 // hop,
                            -1)
  return out


@pytest.mark.parametrize("rate", [100, 50])
def test_train_crops_keep_labels_in_step_with_audio(tmp_path, rate):
  rng = np.random.default_rng(0)
  lengths = rng.integers(2_000, 12_000, 40)
  src = RampSource(lengths)
  cfg = _cfg(_write(str(tmp_path / "km"), lengths, rate=rate), rate=rate)
  loader = pipeline.make_train_loader(cfg, seed=0, source=src)
  hop = 16000 // rate
  for _ in range(6):
    batch = next(loader)
    assert batch["labels"].shape == (8, 4000 // hop + 1) and batch["labels"].dtype == np.int32
    frames = _audio_frames(batch, hop)
    ok = batch["labels_valid"] & (frames >= 0)
    assert ok.sum() > 0.8 * (frames >= 0).sum()
    # Each label is the one of the audio frame it sits on: the crop moved both by whole frames.
    np.testing.assert_array_equal(batch["labels"][ok], frames[ok])
    # Labels run out where the utterance's labels do: 1 + n // hop of them from its start.
    v = batch["valid"].sum(1)
    off = (np.round(batch["audio"][:, 0] * 32768).astype(int) - 1) * 160
    want = np.minimum(1 + (off + v) // hop - off // hop, batch["labels"].shape[1])
    np.testing.assert_array_equal(batch["labels_valid"].sum(1), want)


def test_eval_loader_gets_whole_utterance_labels_and_padding_rows_have_none(tmp_path):
  lengths = [3_000, 5_000, 7_000]
  src = RampSource(lengths)
  directory = _write(str(tmp_path / "km"), lengths, split="dev")  # Read as "dev.labels.npy".
  loader = pipeline.make_eval_loader(_cfg(directory), split="dev", seed=0, source=src)
  seen = set()
  for batch in loader:
    for row, index in enumerate(batch["index"]):
      if index < 0:
        assert not batch["labels_valid"][row].any()
        continue
      seen.add(int(index))
      n = 1 + lengths[index] // 160
      assert batch["labels_valid"][row].sum() == min(n, batch["labels"].shape[1])
      t = min(n, batch["labels"].shape[1])
      np.testing.assert_array_equal(batch["labels"][row, :t], np.arange(t))
  assert seen == {0, 1, 2}


def test_durations_that_differ_by_more_than_one_frame_name_the_utterance(tmp_path):
  lengths = [4_000, 6_400, 8_000]
  # utt1 gets 3 labels fewer than its 6,400 samples at 100 Hz need (38 whole 25 ms windows to
  # 41 centred frames).
  directory = _write(str(tmp_path / "km"), lengths,
                     count=lambda n: n // 160 - (3 if n == 6_400 else 0))
  with pytest.raises(labels_lib.LabelError) as e:
    pipeline.make_train_loader(_cfg(directory), seed=0, source=RampSource(lengths))
  msg = str(e.value)
  assert "'utt1'" in msg and "37 labels" in msg and "6400 audio samples" in msg
  assert "38 to 41 labels expected" in msg and "label_rate" in msg
  # Every framing convention fits: one frame off either way, and Kaldi fbank's whole 25 ms
  # windows (snip_edges: 1 + (S - 400) // 160, MelHuBERT's stage-1 units), 2 short of S / 160.
  counts = {"m1": lambda n: n // 160 - 1, "p1": lambda n: n // 160 + 1,
            "kaldi": lambda n: 1 + (n - 400) // 160}
  for name, count in counts.items():
    ok = _write(str(tmp_path / name), lengths, count=count)
    pipeline.make_train_loader(_cfg(ok), seed=0, source=RampSource(lengths))
  one_more = _write(str(tmp_path / "over"), lengths, count=lambda n: n // 160 + 2)
  with pytest.raises(labels_lib.LabelError, match="'utt0' has 27 labels"):
    pipeline.make_train_loader(_cfg(one_more), seed=0, source=RampSource(lengths))


def test_wrong_label_rate_missing_set_and_missing_utterances_are_clear_errors(tmp_path):
  lengths = [4_000, 6_000]
  src = RampSource(lengths)
  directory = _write(str(tmp_path / "km"), lengths, rate=50)
  with pytest.raises(labels_lib.LabelError, match="data.label_rate=100 but the labels in .* "
                     "are at 50 Hz"):
    pipeline.make_train_loader(_cfg(directory, rate=100), seed=0, source=src)
  with pytest.raises(labels_lib.LabelError, match="(?s)No label set at .*nothing.*jaxssl.kmeans"):
    pipeline.make_train_loader(_cfg(str(tmp_path / "nothing")), seed=0, source=src)
  other = _write(str(tmp_path / "other"), lengths, ids=["a", "b"])
  with pytest.raises(labels_lib.LabelError, match="no labels for 2 of 2 utterances .*'utt0'"):
    pipeline.make_train_loader(_cfg(other), seed=0, source=src)
  with pytest.raises(labels_lib.LabelError, match="has no split 'dev'; it has \\['train'\\]"):
    labels_lib.LabelSet(directory, "dev")


def test_label_set_round_trip_by_name_beside_the_dataset_and_pickling(tmp_path):
  dataset = str(tmp_path / "demo_corpus" / "1.0.0")
  directory = labels_lib.resolve("km7", dataset)
  assert directory == os.path.join(dataset, "labels", "km7")
  rows = [np.array([3, 1, 4]), np.array([], np.int64), np.array([1, 5, 9, 2, 6])]
  labels_lib.write_split(directory, "train", ["x", "y", "z"], rows)
  labels_lib.write_meta(directory, label_rate=50, num_clusters=10, features="mfcc")
  s = labels_lib.LabelSet(directory, "train[:2]")  # A sliced split reads its base split.
  assert (s.split, s.label_rate, s.num_clusters, len(s)) == ("train", 50, 10, 3)
  assert s.meta["features"] == "mfcc" and list(s.lengths) == [3, 0, 5]
  again = pickle.loads(pickle.dumps(s))  # What a grain worker process receives.
  for i, want in enumerate(rows):
    np.testing.assert_array_equal(s[i], want)
    np.testing.assert_array_equal(again[i], want)
    assert s[i].dtype == np.int32
  assert np.load(os.path.join(directory, "train.labels.npy")).dtype == np.int16
  # The utterances can be matched in any order, by id.
  np.testing.assert_array_equal(s.check(["z", "x"], [1_600, 960]), [2, 0])
  with pytest.raises(ValueError, match="'label_rate' is required"):
    labels_lib.write_meta(directory, num_clusters=3)


def test_crop_and_snap_arithmetic():
  np.testing.assert_array_equal(labels_lib.snap_offsets([0, 159, 160, 655], 100),
                                [0, 0, 160, 640])
  np.testing.assert_array_equal(labels_lib.snap_offsets([0, 319, 655], 50), [0, 0, 640])
  assert labels_lib.labels_per_crop(32_000, 100) == 201
  assert labels_lib.labels_per_crop(32_000, 50) == 101
  labels, valid = labels_lib.crop([np.arange(10), None], [320, 0], 1_000, 100)
  np.testing.assert_array_equal(labels[0], np.arange(2, 9))  # 1000 // 160 + 1 = 7 labels.
  assert valid[0].all() and not valid[1].any()
  labels, valid = labels_lib.crop([np.arange(10)], [320], 2_000, 100)  # Runs out after 8.
  np.testing.assert_array_equal(labels[0], np.r_[np.arange(2, 10), np.zeros(5)])
  np.testing.assert_array_equal(valid[0], np.arange(13) < 8)
  with pytest.raises(labels_lib.LabelError, match="not a multiple of the label hop 160"):
    labels_lib.crop([np.arange(10)], [100], 1_000, 100)
  with pytest.raises(labels_lib.LabelError, match="data.label_rate=7 must divide"):
    labels_lib.hop_for(7)


def test_joined_splits_read_their_label_files_in_order(tmp_path):
  """LibriSpeech 960 h is "train_clean_100+train_clean_360+train_other_500": its labels are the
  parts' files, read in the order the source joins them (kmeans writes them part by part)."""
  rs = np.random.default_rng(0)
  parts = {"a": (["a0", "a1"], [5, 3]), "b": (["b0", "b1", "b2"], [2, 4, 6])}
  want = {}
  for split, (ids, lengths) in parts.items():
    labels = [rs.integers(0, 50, n) for n in lengths]
    labels_lib.write_split(str(tmp_path), split, ids, labels)
    want.update(zip(ids, labels))
  labels_lib.write_meta(str(tmp_path), label_rate=50, num_clusters=50)
  joined = labels_lib.LabelSet(str(tmp_path), "a+b[:50%]")
  assert list(joined.ids) == ["a0", "a1", "b0", "b1", "b2"]
  np.testing.assert_array_equal(joined.lengths, [5, 3, 2, 4, 6])
  for i, uid in enumerate(joined.ids):
    np.testing.assert_array_equal(joined[i], want[str(uid)])
  restored = pickle.loads(pickle.dumps(joined))
  np.testing.assert_array_equal(restored[4], want["b2"])
  with pytest.raises(labels_lib.LabelError, match="has no split 'c'"):
    labels_lib.LabelSet(str(tmp_path), "a+c")
