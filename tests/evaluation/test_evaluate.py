"""Probe runs end to end on a tiny tone corpus: every task learns, results files, the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import probes as probe_configs
from jaxssl.evaluation import probing
from jaxssl.evaluation import results as results_lib
from jaxssl.evaluation import tasks
from jaxssl.evaluation import upstreams
from tests.evaluation import tone_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(task, **overrides):
  by_utterance = task == "speaker"
  c = probe_configs.probe_config(
      task, lr=1e-2 if task in ("phone", "asr") else 3e-3, total_steps=30, eval_every_steps=15,
      batch_size=8, projector_dim=32, hidden_dim=16, num_layers=1, by_utterance=by_utterance,
      head="blstm" if task == "asr" else "linear")
  c.upstream = "mfcc"
  c.log_every_steps = 5
  c.probe.dropout_rate = 0.0
  if by_utterance:
    c.splits.dev_fraction, c.splits.test_fraction = 0.125, 0.25
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope="module")
def mfcc():
  return upstreams.load("mfcc")


@pytest.mark.parametrize("task", ["phone", "asr", "speaker", "language"])
def test_each_probe_learns_and_writes_results(task, mfcc, tmp_path):
  # Mean-pooled CMVN features are all zero (see the next test): utterance tasks use raw MFCCs.
  up = mfcc if tasks.get(task).kind == "ctc" else upstreams.load("mfcc_no_cmvn")
  results = probing.run(_config(task), str(tmp_path), upstream=up,
                         source_fn=tone_corpus.source_fn())
  losses = [loss for _, loss in results["train_curve"]]
  assert losses[-1] < 0.7 * losses[0], losses
  assert results["layer_weights"] == [1.0]  # One "layer": the softmax of one weight.
  for name in ("results.json", "results.md", "layer_weights.png"):
    assert os.path.getsize(tmp_path / name) > 0
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert saved["test"] == results["test"] and saved["upstream"] == up.name
  assert 0 < results["best_step"] <= 30
  if task == "speaker":  # 4 speakers: 32 utterances split 20 / 4 / 8 within the speakers.
    assert results["utterances"] == {"train": 20, "dev": 4, "test": 8}
    assert results["chance_accuracy"] == 0.25
  if task in ("speaker", "language"):
    assert results["test"]["accuracy"] > 0.6  # Tones at speaker pitch / language inventories.
  if task == "phone":
    assert results["test"]["per"] < 0.9
  if task == "asr":
    assert set(results["test"]) == {"wer", "cer", "loss", "per_language"}
    # The tone corpus has several languages: each gets its own WER and CER.
    per_language = results["test"]["per_language"]
    assert len(per_language) > 1 and all(set(m) == {"wer", "cer"} for m in per_language.values())
  table = open(tmp_path / "results.md").read()
  assert table.startswith("| task | upstream |") and f"| {task} | {up.name} |" in table


def test_feature_cache_reshuffles_utterances_every_epoch(mfcc):
  src = tone_corpus.ToneSource(24)
  task = tasks.get("language")
  tokens = tasks.read_tokens(task, src)
  targets = tasks.make_targets(task, tokens, tasks.build_vocab(task, tokens), split="train")
  c = _config("language")

  def stream(cache):
    return probing.FeatureStream("train", src, targets, mfcc, c.data, task, label_len=8,
                                  pool=True, cache=cache, seed=0)

  cached, fresh = stream(True), stream(False)
  first = [index.tolist() for _, index in cached.epoch(0)]
  assert first == [index.tolist() for _, index in fresh.epoch(0)]
  again = [index.tolist() for _, index in cached.epoch(1)]
  # New batches from the cached utterances, the same as the uncached stream's.
  assert sorted(map(sorted, again)) != sorted(map(sorted, first))
  assert sorted(sum(again, [])) == sorted(sum(first, [])) == list(range(24))
  assert [i.tolist() for _, i in fresh.epoch(1)] == again
  inputs, index = next(cached.epoch(0))
  # Pre-pooled utterance inputs: one frame per row, labels are the rows' language ids.
  assert inputs["hidden"].shape == (8, 1, 1, 39)
  np.testing.assert_array_equal(inputs["labels"], np.asarray(targets.ids)[index])
  # CMVN zeroes every utterance's mean: SUPERB's FBANK is at chance on speaker ID for this.
  np.testing.assert_allclose(inputs["hidden"], 0.0, atol=1e-4)


def test_markdown_table_reports_percentages():
  row = dict(task="phone", upstream="/runs/w2v2_demo/", dev={"per": 0.25, "loss": 1.0},
             test={"per": 0.3125, "loss": 1.1}, best_step=500, seconds=12.3,
             utterances={"train": 10, "dev": 2, "test": 3})
  lines = results_lib.markdown_table([row]).splitlines()
  assert lines[0] == ("| task | upstream | dev per % | test per % | best step | "
                      "train / dev / test utts | seconds |")
  assert lines[2] == "| phone | w2v2_demo | 25.00 | 31.25 | 500 | 10 / 2 / 3 | 12 |"


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "jaxssl.evaluate", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_errors_are_one_line(tmp_path):
  out = _cli("--config=configs/probes/phone.py", "--config.upstrem=mfcc")
  assert out.returncode == 2
  assert "unknown config field 'upstrem'" in out.stderr and "Did you mean 'upstream'" in out.stderr
  out = _cli("--config=configs/probes/speaker.py", f"--workdir={tmp_path}",
             f"--config.data.data_dir={tmp_path}/none")
  assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
      "error: upstream is empty: pass --config.upstream=<checkpoint dir> or one of "
      "['mfcc', 'fbank', 'mfcc_no_cmvn', 'fbank_no_cmvn', 'mfcc_librosa', "
      "'mfcc_librosa_no_cmvn', 'random_init'].")


@pytest.mark.slow  # ~20 s of CPU: builds a dataset, then a subprocess runs a probe on it.
def test_cli_runs_a_probe_on_a_built_local_audio_dataset(tmp_path):
  from jaxssl.data import build  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  rows = []
  for split, (n, seed) in {"train": (24, 0), "dev": (8, 1), "test": (8, 2)}.items():
    for r in tone_corpus.ToneSource(n, seed=seed).records:
      path = tmp_path / "wavs" / f"{r['id']}.wav"
      path.parent.mkdir(exist_ok=True)
      sf.write(path, r["audio"], 16000, subtype="PCM_16")
      rows.append({k: r[k] for k in ("id", "text", "phones", "speaker", "language")} |
                  {"path": f"wavs/{r['id']}.wav", "split": split})
  with open(tmp_path / "manifest.jsonl", "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows) + "\n")
  build.build("local_audio", source=str(tmp_path / "manifest.jsonl"),
              data_dir=str(tmp_path / "tfds"), config="tones", num_workers=1,
              show_progress=False)
  out = _cli("--config=configs/probes/phone.py:dataset=local_audio,runlocal",
             "--config.data.name=local_audio/tones", f"--config.data.data_dir={tmp_path}/tfds",
             "--config.upstream=mfcc", f"--workdir={tmp_path}/probe")
  assert out.returncode == 0, out.stderr[-2000:]
  printed = json.loads(out.stdout.strip().splitlines()[-1])
  assert printed["task"] == "phone" and printed["workdir"] == f"{tmp_path}/probe"
  with open(tmp_path / "probe" / "results.json") as f:
    results = json.load(f)
  assert results["utterances"] == {"train": 24, "dev": 8, "test": 8}
  assert results["test"] == printed["test"] and 0 <= results["test"]["per"] <= 1.5
