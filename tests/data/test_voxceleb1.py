"""The voxceleb1 builder on a tiny VoxCeleb1-shaped folder: splits from iden_split.txt, speakers,
s3prl's folder layout, a separate split file, and the errors (missing split file, missing wavs,
malformed lines)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxssl.data import audio
from jaxssl.data import build
from jaxssl.data import sources
from jaxssl.data.builders import skips as skips_lib
from tests.data import corpus_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# (split code, speaker, video, file): two videos of three speakers, every speaker in every split.
LINES = [("1", "id10001", "1zcIwhmdeo4", "00001"), ("1", "id10001", "1zcIwhmdeo4", "00002"),
         ("2", "id10001", "7gWzIy6yIIk", "00001"), ("3", "id10001", "7gWzIy6yIIk", "00002"),
         ("1", "id10002", "C7k7C-PDvAA", "00001"), ("2", "id10002", "C7k7C-PDvAA", "00002"),
         ("3", "id10002", "xTV-jFAUKcw", "00001"), ("1", "id10270", "5r0dWxy17C8", "00001"),
         ("2", "id10270", "5r0dWxy17C8", "00002"), ("3", "id10270", "x6uYqmx31kE", "00001")]
SPLIT_NAMES = {"1": "train", "2": "dev", "3": "test"}


def _uid(spk, video, name):
  return f"{spk}-{video}-{name}"


def voxceleb1(root, *, s3prl_layout=False, split_file="iden_split.txt", extra_lines=()):
  """Writes wavs and a split file; returns {id: (split, speaker, int16 audio)}."""
  want = {}
  for i, (code, spk, video, name) in enumerate(LINES):
    # s3prl's layout: the 40 test speakers (id10270..) come from vox1_test_wav.zip.
    part = ("test" if spk >= "id10270" else "dev") if s3prl_layout else ""
    x = fx.tone(1600 + 160 * i, seed=i, freq=200.0 + 50 * i)
    fx.write(os.path.join(root, part, "wav", spk, video, f"{name}.wav"), x, subtype="PCM_16")
    want[_uid(spk, video, name)] = (SPLIT_NAMES[code], spk, x)
  with open(os.path.join(root, split_file), "w") as f:
    # Reversed: the builder sorts each split by id whatever the file's order.
    f.write("\n".join([f"{c} {s}/{v}/{n}.wav" for c, s, v, n in reversed(LINES)]
                      + list(extra_lines))
            + "\n")
  return want


def _build(source, data_dir, **kwargs):
  return build.build("voxceleb1", source=str(source), data_dir=str(data_dir), num_workers=2,
                     show_progress=False, **kwargs)


def _read(data_dir, split):
  src = sources.open_source("voxceleb1", data_dir=data_dir, split=split)
  return [src[i] for i in range(len(src))]


def test_splits_speakers_and_audio_round_trip(tmp_path):
  want = voxceleb1(str(tmp_path / "vox1"))
  summary = _build(tmp_path / "vox1", tmp_path / "tfds")
  assert summary["num_skipped"] == 0
  for split in ("train", "dev", "test"):
    rows = _read(tmp_path / "tfds", split)
    ids = [r["id"] for r in rows]
    assert ids == sorted(k for k, v in want.items() if v[0] == split)
    assert {r["speaker"] for r in rows} == {"id10001", "id10002", "id10270"}
    for r in rows:
      np.testing.assert_array_equal(r["audio"], want[r["id"]][2])
      assert r["speaker"] == want[r["id"]][1] == r["id"].split("-")[0]
      assert (r["text"], r["phones"], r["language"]) == ("", "", "")
      assert r["num_samples"] == len(want[r["id"]][2])
  assert len(_read(tmp_path / "tfds", "train")) == 4
  assert "tensorflow" not in sys.modules


def test_s3prl_layout_separate_split_file_and_a_resampled_wav(tmp_path):
  want = voxceleb1(str(tmp_path / "vox1"), s3prl_layout=True, split_file="../my_split.txt")
  assert not os.path.exists(tmp_path / "vox1" / "iden_split.txt")
  # One wav at 8 kHz: resampled to 16 kHz as in every jaxssl corpus.
  spk, video, name = LINES[0][1:]
  path = tmp_path / "vox1" / "dev" / "wav" / spk / video / f"{name}.wav"
  fx.write(str(path), fx.tone(800, rate=8000), rate=8000, subtype="PCM_16")
  summary = _build(tmp_path / "vox1", tmp_path / "tfds", split_file=tmp_path / "my_split.txt",
                   splits=["train", "test"])
  assert sorted(summary["splits"]) == ["test", "train"] and summary["num_skipped"] == 0
  train = {r["id"]: r for r in _read(tmp_path / "tfds", "train")}
  assert sorted(train) == sorted(k for k, v in want.items() if v[0] == "train")
  assert train[_uid(spk, video, name)]["num_samples"] == 1600
  np.testing.assert_array_equal(train[_uid(spk, video, name)]["audio"], audio.load_audio(path))
  test = _read(tmp_path / "tfds", "test")
  assert [r["speaker"] for r in test] == ["id10001", "id10002", "id10270"]


def test_missing_wavs_are_reported_not_dropped(tmp_path):
  want = voxceleb1(str(tmp_path / "vox1"))
  gone = tmp_path / "vox1" / "wav" / "id10002" / "C7k7C-PDvAA" / "00002.wav"  # A dev line.
  os.remove(gone)
  summary = _build(tmp_path / "vox1", tmp_path / "tfds")
  dev = summary["splits"]["dev"]
  assert dev["skipped"] == {"unreadable": 1}
  assert (dev["num_candidates"], dev["num_written"]) == (3, 2)
  assert dev["examples"]["unreadable"] == [{"path": str(gone), "detail": "no such file"}]
  with open(os.path.join(summary["path"], skips_lib.SKIPPED_FILE)) as f:
    assert json.load(f)["skipped"] == {"unreadable": 1}
  dev_ids = sorted(k for k, v in want.items() if v[0] == "dev" and k != "id10002-C7k7C-PDvAA-00002")
  assert [r["id"] for r in _read(tmp_path / "tfds", "dev")] == dev_ids
  # A split whose every wav is missing fails instead of vanishing.
  for code, spk, video, name in LINES:
    if code == "3":
      os.remove(tmp_path / "vox1" / "wav" / spk / video / f"{name}.wav")
  with pytest.raises(ValueError, match=r"every one of the 3 files in split 'test' was skipped"):
    _build(tmp_path / "vox1", tmp_path / "tfds2")


def test_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    _build(tmp_path / "nowhere", tmp_path / "tfds")
  voxceleb1(str(tmp_path / "vox1"))
  os.remove(tmp_path / "vox1" / "iden_split.txt")
  with pytest.raises(FileNotFoundError, match=r"split file '.*vox1/iden_split.txt' does not "
                     r"exist \(the default: iden_split.txt in the source; pass another with "
                     r"--split_file\)"):
    _build(tmp_path / "vox1", tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match=r"split file '.*other.txt' does not exist\. It is"):
    _build(tmp_path / "vox1", tmp_path / "tfds", split_file=tmp_path / "other.txt")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "iden_split.txt").write_text("1 id10001/a/00001.wav\n")
  with pytest.raises(FileNotFoundError, match="no wav/ folder in"):
    _build(tmp_path / "empty", tmp_path / "tfds")
  for bad, message in [("4 id10001/1zcIwhmdeo4/00001.wav", r"expected '<1\|2\|3> "),
                       ("1 id10001/00001.wav", r"is not '<speaker>/<video>/<file>.wav'"),
                       ("3 id10001/1zcIwhmdeo4/00001.wav", r"listed again \(first at line 10\)")]:
    voxceleb1(str(tmp_path / "vox1"), extra_lines=[bad])
    with pytest.raises(ValueError, match=r"iden_split.txt:11: .*" + message):
      _build(tmp_path / "vox1", tmp_path / "tfds")
  assert os.listdir(tmp_path / "tfds" / "voxceleb1") == []  # No half-built version folder.


def test_cli_takes_the_split_file_and_refuses_it_for_other_datasets(tmp_path):
  voxceleb1(str(tmp_path / "vox1"), split_file="../split.txt")
  cmd = [sys.executable, "-m", "jaxssl.data.build", "--dataset=voxceleb1",
         f"--source={tmp_path / 'vox1'}", f"--data_dir={tmp_path / 'tfds'}", "--num_workers=1",
         f"--split_file={tmp_path / 'split.txt'}"]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "Skipped 0 file(s)." in out.stdout and "test: wrote 3 of 3" in out.stdout
  bad = subprocess.run([cmd[0], cmd[1], cmd[2], "--dataset=librispeech"] + cmd[4:], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  assert "--split_file is not an option of --dataset=librispeech" in bad.stderr
