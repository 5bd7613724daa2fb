"""Every shipped config opens the data it names, when that data is built: its training split
(what `--dry_run` describes) and, for probes and fine-tuning, every split it evaluates on. The
corpora are tiny folders shaped like the real ones, built with the project's own builders."""
import glob
import json
import os

import pytest

from jaxssl import cli
from jaxssl import pretrain
from jaxssl.data import build
from jaxssl.data import pipeline
from jaxssl.data import sources
from tests.data import corpus_fixtures as fx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRISPEECH_SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean",
                      "dev-other", "test-clean", "test-other")


def _librispeech(root):
  for k, split in enumerate(LIBRISPEECH_SPLITS):
    d = os.path.join(root, "LibriSpeech", split, "19", str(198 + k))
    uid = f"19-{198 + k}-0000"
    fx.write(os.path.join(d, f"{uid}.flac"), fx.tone(4_000, seed=k))
    with open(os.path.join(d, f"19-{198 + k}.trans.txt"), "w") as f:
      f.write(f"{uid} HELLO WORLD\n")


def _demo_corpus(root):
  fx.demo_corpus(root, bad=False)
  with open(os.path.join(root, "dev.jsonl")) as f:  # The fixture has no test split.
    rows = [json.loads(line) for line in f if line.strip()]
  with open(os.path.join(root, "test.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(dict(r, id="test_" + r["id"]), ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("shipped")
  out = str(tmp / "tfds")
  _demo_corpus(str(tmp / "demo"))
  _librispeech(str(tmp / "ls"))
  fx.mls(str(tmp / "mls"), "german", bad=False)
  fx.mls(str(tmp / "mls"), "french", bad=False)
  os.makedirs(tmp / "audio")
  fx.write(str(tmp / "audio" / "a.wav"), fx.tone(8_000))
  for name, source, config in (("demo_corpus", tmp / "demo", None),
                               ("librispeech", tmp / "ls", None),
                               ("multilingual_librispeech", tmp / "mls", "all"),
                               ("local_audio", tmp / "audio", None)):
    build.build(name, source=str(source), data_dir=out, config=config, num_workers=1,
                show_progress=False)
  return out


def _shipped():
  paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.py")))
  out = []
  for path in paths:
    with open(path) as f:
      if "def get_config" in f.read():
        out.append(os.path.relpath(path, ROOT))
  return out


@pytest.mark.parametrize("path", _shipped())
def test_shipped_config_opens_its_data(path, data_dir):
  c = cli.load_config_file(os.path.join(ROOT, path))
  if "data" not in c:
    pytest.skip(f"{path} reads no dataset")
  with c.unlocked():
    c.data.data_dir = data_dir
    if "splits" in c:  # Probes and fine-tuning train on splits.train (data.split is unused).
      c.data.split = c.splits.train
  described = pipeline.describe(c.data)
  assert described["records"] > 0 and described["hours"] > 0, described
  for key in ("train", "dev", "test"):
    if "splits" in c:
      split = c.splits[key]
      assert len(sources.open_source(c.data.name, data_dir=data_dir, split=split)) > 0
  for split in c.get("splits", {}).get("extra_tests", ()):
    assert len(sources.open_source(c.data.name, data_dir=data_dir, split=split)) > 0


def test_dry_run_reports_the_data_or_why_it_did_not_open(data_dir):
  c = cli.load_config_file(os.path.join(ROOT, "configs/wav2vec2/demo.py:runlocal"))
  with c.unlocked():
    c.data.data_dir = data_dir
  report = pretrain.dry_run(c)
  assert report["data"]["dataset"] == "demo_corpus" and report["data"]["languages"] == [
      "en", "fr"]
  with c.unlocked():
    c.data.data_dir = os.path.join(data_dir, "nowhere")
  assert pretrain.dry_run(c)["data"].startswith("not opened: data_dir")
