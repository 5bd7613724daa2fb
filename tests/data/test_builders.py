"""Builders: build each from a tiny fixture, read back through open_source, check skips."""
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


def _build(name, source, data_dir, **kwargs):
  return build.build(name, source=str(source), data_dir=str(data_dir), num_workers=2,
                     show_progress=False, **kwargs)


def _by_id(src):
  return {r["id"]: r for r in (src[i] for i in range(len(src)))}


def _skipped_json(summary):
  with open(os.path.join(summary["path"], skips_lib.SKIPPED_FILE)) as f:
    return json.load(f)


def test_demo_corpus_round_trip_and_skips(tmp_path):
  rows = fx.demo_corpus(str(tmp_path / "demo"))
  summary = _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds")
  assert summary["skipped"] == {"too_short": 1, "unreadable": 1, "bad_label": 2}
  train = summary["splits"]["train"]
  assert train["num_written"] == 3 and train["num_candidates"] == 6
  assert train["examples"]["too_short"][0]["path"].endswith("short.wav")
  assert _skipped_json(summary) == {k: v for k, v in summary.items() if k != "path"}

  for split in ("train", "dev"):
    src = sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split=split)
    got = _by_id(src)
    assert sorted(got) == sorted(k for k in rows if k.startswith(split))
    assert [src[i]["id"] for i in range(len(src))] == sorted(got)  # Source order is kept.
    for uid, r in got.items():
      want = rows[uid]
      np.testing.assert_array_equal(r["audio"], audio.load_audio(tmp_path / "demo" / want["path"]))
      assert r["audio"].dtype == np.int16 and r["num_samples"] == want["num_samples"]
      assert isinstance(r["text"], str) and r["text"] == want["text"]
      assert r["phones"] == " ".join(want["phones"]) == "h ə l oʊ"
      np.testing.assert_array_equal(r["phone_starts"], want["phone_starts"])
      np.testing.assert_array_equal(r["phone_ends"], want["phone_ends"])
      assert r["phone_ends"].dtype == np.int32
      assert (r["speaker"], r["language"]) == (want["speaker"], want["language"])
  assert "tensorflow" not in sys.modules


def test_big_splits_stream_into_shards_without_tensorflow(tmp_path, monkeypatch):
  # TFDS's own writer spills splits over 1 GB to disk via tf.io.gfile; shrink
  # that limit so the test would hit it if the builders still used TFDS's writer.
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
  rows = fx.demo_corpus(str(tmp_path / "demo"), n=5, bad=False)
  summary = _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds", max_shard_bytes=6000)
  shards = sorted(f for f in os.listdir(summary["path"]) if "train.array_record" in f)
  assert len(shards) >= 3 and shards[-1].endswith(f"-of-{len(shards):05d}")
  src = sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="train")
  assert [src[i]["id"] for i in range(len(src))] == [f"train_{i}" for i in range(5)]
  np.testing.assert_array_equal(src[4]["audio"],
                                audio.load_audio(tmp_path / "demo" / rows["train_4"]["path"]))
  assert "tensorflow" not in sys.modules


def test_metadata_is_cached_beside_the_dataset(tmp_path, monkeypatch):
  rows = fx.demo_corpus(str(tmp_path / "demo"), bad=False)
  _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds")
  src = sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="train")
  meta = src.metadata()
  ids = [src[i]["id"] for i in range(len(src))]
  assert list(meta["id"]) == ids
  assert list(meta["num_samples"]) == [rows[i]["num_samples"] for i in ids]
  assert list(meta["language"]) == [rows[i]["language"] for i in ids]
  assert list(meta["speaker"]) == [rows[i]["speaker"] for i in ids]
  assert os.path.exists(os.path.join(src.path, "train.metadata.npz"))

  def fail(self):
    raise AssertionError("metadata recomputed despite the cache")
  monkeypatch.setattr(sources.Source, "_scan_metadata", fail)
  again = sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="train")
  np.testing.assert_array_equal(again.metadata()["num_samples"], meta["num_samples"])


def test_open_source_errors_name_the_path_and_build_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="jaxssl.data.build --dataset=demo_corpus"):
    sources.open_source("demo_corpus", data_dir=tmp_path / "none", split="train")
  os.makedirs(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "tfds" / "librispeech")):
    sources.open_source("librispeech", data_dir=tmp_path / "tfds", split="dev_clean")
  fx.demo_corpus(str(tmp_path / "demo"), bad=False)
  _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds")
  with pytest.raises(ValueError, match=r"available: \['dev', 'train'\]"):
    sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="test")


def test_local_audio_folder_with_split_subfolders(tmp_path):
  root = tmp_path / "corpus"
  a = fx.write(str(root / "train" / "spk1" / "a.wav"), fx.tone(3000))
  stereo = np.stack([fx.tone(4410, rate=44100), fx.tone(4410, rate=44100, seed=3)], axis=1)
  fx.write(str(root / "train" / "spk2" / "b.flac"), stereo, rate=44100)
  fx.write(str(root / "test" / "c.wav"), fx.tone(2000))
  fx.write_truncated(str(root / "test" / "cut.wav"))
  summary = _build("local_audio", root, tmp_path / "tfds", config="mine")
  assert summary["path"].endswith(os.path.join("local_audio", "mine", "1.0.0"))
  assert summary["skipped"] == {"unreadable": 1}
  train = _by_id(sources.open_source("local_audio/mine", data_dir=tmp_path / "tfds",
                                     split="train"))
  assert sorted(train) == ["spk1/a", "spk2/b"]
  np.testing.assert_array_equal(train["spk1/a"]["audio"], audio.load_audio(a))
  assert train["spk2/b"]["num_samples"] == 1600  # 44.1 kHz stereo -> 16 kHz mono.
  assert train["spk1/a"]["phones"] == "" and train["spk1/a"]["phone_starts"].shape == (0,)
  test = sources.open_source("local_audio", config="mine", data_dir=tmp_path / "tfds",
                             split="test")
  assert [test[i]["id"] for i in range(len(test))] == ["c"]


@pytest.mark.parametrize("kind", ["tsv", "jsonl", "json"])
def test_local_audio_manifest(tmp_path, kind):
  d = tmp_path / "m"
  fx.write(str(d / "clips" / "x.wav"), fx.tone(2000))
  fx.write(str(d / "clips" / "y.wav"), fx.tone(2400))
  rows = [{"path": "clips/x.wav", "text": "hi there", "phones": "h aɪ", "speaker": "s1",
           "language": "en"},
          {"path": "clips/y.wav", "text": "yo", "speaker": "s2", "language": "es",
           "split": "dev"},
          {"path": "clips/missing.wav", "text": "gone"}]
  manifest = d / f"manifest.{kind}"
  if kind == "tsv":
    cols = ["path", "text", "phones", "speaker", "language", "split"]
    lines = ["\t".join(cols)] + ["\t".join(r.get(c, "") for c in cols) for r in rows]
    manifest.write_text("\n".join(lines) + "\n")
  elif kind == "jsonl":
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  else:
    manifest.write_text(json.dumps(rows))
  summary = _build("local_audio", manifest, tmp_path / "tfds", config=kind)
  assert summary["skipped"] == {"unreadable": 1}
  train = sources.open_source("local_audio", config=kind, data_dir=tmp_path / "tfds",
                              split="train")
  r = train[0]
  assert (r["id"], r["text"], r["phones"], r["speaker"], r["language"]) == (
      "clips/x", "hi there", "h aɪ", "s1", "en")
  dev = sources.open_source("local_audio", config=kind, data_dir=tmp_path / "tfds", split="dev")
  assert dev[0]["language"] == "es" and dev[0]["num_samples"] == 2400


def test_librispeech(tmp_path):
  want = fx.librispeech(str(tmp_path / "src"))
  summary = _build("librispeech", tmp_path / "src", tmp_path / "tfds")
  assert summary["splits"]["dev_clean"]["skipped"] == {"bad_label": 1, "empty": 1}
  assert summary["splits"]["train_clean_100"]["skipped"] == {}
  for split in ("dev_clean", "train_clean_100"):
    got = _by_id(sources.open_source("librispeech", data_dir=tmp_path / "tfds", split=split))
    assert sorted(got) == sorted(k for k, v in want.items() if v[0] == split)
    for uid, r in got.items():
      np.testing.assert_array_equal(r["audio"], want[uid][2])
      assert r["text"] == want[uid][1]
      assert r["speaker"] == uid.split("-")[0] and r["language"] == "en"
  assert "tensorflow" not in sys.modules


def test_multilingual_librispeech(tmp_path):
  want = fx.mls(str(tmp_path / "src"), "german")
  summary = _build("multilingual_librispeech", tmp_path / "src", tmp_path / "tfds")
  assert summary["config"] == "german"  # Inferred from the single mls_german folder.
  assert summary["splits"]["train"]["skipped"] == {"unreadable": 1, "bad_label": 1}
  got = _by_id(sources.open_source("multilingual_librispeech/german",
                                   data_dir=tmp_path / "tfds", split="train"))
  assert sorted(got) == sorted(k for k, v in want.items() if v[0] == "train")
  for uid, r in got.items():
    np.testing.assert_array_equal(r["audio"], want[uid][2])
    assert (r["text"], r["language"], r["speaker"]) == (want[uid][1], "de", "1234")


def test_mls_all_merges_languages_with_namespaced_ids(tmp_path):
  fx.mls(str(tmp_path / "src"), "german", bad=False)
  fx.mls(str(tmp_path / "src"), "french", bad=False)  # Same speaker/utt numbers.
  with pytest.raises(ValueError, match="needs a config"):
    _build("multilingual_librispeech", tmp_path / "src", tmp_path / "tfds")
  _build("multilingual_librispeech", tmp_path / "src", tmp_path / "tfds", config="all")
  meta = sources.open_source("multilingual_librispeech/all", data_dir=tmp_path / "tfds",
                             split="train").metadata()
  assert sorted(meta["id"]) == ["de_1234_560_000000", "de_1234_560_000001",
                                "fr_1234_560_000000", "fr_1234_560_000001"]
  assert sorted(set(meta["speaker"])) == ["de_1234", "fr_1234"]


def test_unknown_config_is_a_clear_error(tmp_path):
  fx.demo_corpus(str(tmp_path / "demo"), bad=False)
  with pytest.raises(ValueError, match="demo_corpus: unknown config 'x'; it takes no config"):
    _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds", config="x")


def test_common_voice_mp3(tmp_path):
  want = fx.common_voice(str(tmp_path / "cv"), "fr", ext="mp3")
  summary = _build("common_voice", tmp_path / "cv", tmp_path / "tfds")
  assert summary["config"] == "fr"
  assert summary["skipped"] == {"unreadable": 1}
  assert summary["splits"]["train"]["examples"]["unreadable"][0]["path"].endswith(
      "missing_clip.mp3")
  for split in ("train", "dev", "test"):
    got = _by_id(sources.open_source("common_voice/fr", data_dir=tmp_path / "tfds", split=split))
    assert sorted(got) == sorted(k for k, v in want.items() if v[0] == split)
    for uid, r in got.items():
      clip = tmp_path / "cv" / "fr" / "clips" / f"{uid}.mp3"
      np.testing.assert_array_equal(r["audio"], audio.load_audio(clip))
      assert (r["text"], r["speaker"], r["language"]) == (want[uid][1], want[uid][2], "fr")


def test_split_with_only_bad_files_fails_clearly(tmp_path):
  root = tmp_path / "corpus"
  fx.write(str(root / "train" / "ok.wav"), fx.tone(1000))
  fx.write_garbage(str(root / "test" / "bad.wav"))
  with pytest.raises(Exception, match=r"every one of the 1 files in split 'test' was skipped"):
    _build("local_audio", root, tmp_path / "tfds")


def test_rebuild_needs_overwrite_and_a_failed_overwrite_keeps_the_old_build(tmp_path):
  fx.demo_corpus(str(tmp_path / "demo"), bad=False)
  _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds")
  again = _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds", splits=["dev"])
  assert again["already_built"] and sorted(again["splits"]) == ["dev", "train"]
  _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds", splits=["dev"], overwrite=True)
  with pytest.raises(ValueError, match="Split 'train' not in"):
    sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="train")
  with pytest.raises(ValueError, match=r"split\(s\) \['test'\] not found"):
    _build("demo_corpus", tmp_path / "demo", tmp_path / "tfds", splits=["test"], overwrite=True)
  assert len(sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="dev")) == 3
  assert os.listdir(tmp_path / "tfds" / "demo_corpus") == ["1.0.0"]


def test_cli_builds_and_prints_the_skip_summary(tmp_path):
  fx.demo_corpus(str(tmp_path / "demo"))
  cmd = [sys.executable, "-m", "jaxssl.data.build", "--dataset=demo_corpus",
         f"--source={tmp_path / 'demo'}", f"--data_dir={tmp_path / 'tfds'}", "--num_workers=1"]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "Skipped 4 file(s)." in out.stdout and "too_short: 1" in out.stdout
  assert "utt/s" in out.stderr  # The tqdm bar with throughput.
  bad = subprocess.run(cmd[:4] + [f"--source={tmp_path / 'nowhere'}", cmd[5]], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0
  assert "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_build_command_takes_a_builder_config(tmp_path):
  """`python -m jaxssl.data.build --config=all`: --config is the builder's config here, not a
  config file (the CLI's config-file check applies only to programs with a config file flag)."""
  fx.mls(str(tmp_path / "src"), "german", bad=False)
  fx.mls(str(tmp_path / "src"), "french", bad=False)
  out = subprocess.run(
      [sys.executable, "-m", "jaxssl.data.build", "--dataset=multilingual_librispeech",
       "--config=all", f"--source={tmp_path / 'src'}", f"--data_dir={tmp_path / 'tfds'}",
       "--num_workers=1"], capture_output=True, text=True, check=False,
      cwd=REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  assert sorted(sources.open_source("multilingual_librispeech/all", data_dir=tmp_path / "tfds",
                                    split="train").metadata()["language"].tolist()) == [
                                        "de", "de", "fr", "fr"]
