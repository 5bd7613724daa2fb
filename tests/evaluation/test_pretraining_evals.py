"""The pretraining `evals` hook: probes on the live model, logged against cumulative FLOPs."""
import json
import os

import pytest

from configs import probes as probe_configs
from configs.wav2vec2 import demo
from jaxssl.data import sources
from jaxssl.evaluation import pretraining_evals
from jaxssl.training import metrics as metrics_lib
from jaxssl import pretrain
from tests.evaluation import random_run


def test_demo_config_probes_phones_every_500_steps():
  c = demo.get_config()
  assert pretraining_evals.evals_due(c, 500) == ["phone"]
  assert pretraining_evals.evals_due(c, 499) == []
  assert c.evals.phone.task == "phone" and c.evals.phone.data.name == ""  # The run's data.
  assert pretraining_evals.evals_due(demo.get_config("runlocal"), 4) == []


class _Writer:
  """The MetricsWriter calls the hook makes."""
  flops_total = 0.0  # The trainer's sum of every step's FLOPs; the tests set it.

  def __init__(self):
    self.excluded, self.written = 0.0, []

  def exclude_time(self, seconds):
    self.excluded += seconds

  def write(self, step, scalars):
    self.written.append((step, scalars))


def _language_eval(every_steps):
  e = probe_configs.pretraining_eval("language", every_steps=every_steps, total_steps=4,
                                     eval_every_steps=2, max_train_utterances=0, batch_size=8)
  e.probe.projector_dim = 8
  return e


def test_hook_probes_the_given_params_and_logs_against_cumulative_flops(tmp_path):
  config = demo.get_config("runlocal")
  with config.unlocked():
    config.evals = {"language": _language_eval(every_steps=3)}
  params = random_run.params(config, seed=0)
  # Equal lengths: one eval bucket, so one compiled forward pass and probe step.
  source = sources.SyntheticSource(16, seed=0, min_samples=8_000, max_samples=8_000)
  writer = _Writer()
  assert pretraining_evals.run_pretraining_evals(  # Not due.
      config, params, step=4, workdir=str(tmp_path), writer=writer, source=source) == {}
  for step in (3, 6):
    writer.flops_total = 2e9 * step
    scalars = pretraining_evals.run_pretraining_evals(
        config, params, step=step, workdir=str(tmp_path), writer=writer, source=source)
  assert [s for s, _ in writer.written] == [3, 6] and writer.written[1][1] == scalars
  assert writer.excluded > 0  # The probes' time stays out of the throughput readout.
  # Overall, and per language of the data (the synthetic source speaks en and fr).
  assert set(scalars) == {f"eval/language/{split}_{m}" for split in ("dev", "test")
                          for m in ("accuracy", "loss", "per_language/en/accuracy",
                                    "per_language/fr/accuracy")}
  with open(tmp_path / "evals.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [(r["step"], r["cumulative_flops"]) for r in rows] == [(3, 6e9), (6, 1.2e10)]
  assert rows[1]["language"]["test"]["accuracy"] == scalars["eval/language/test_accuracy"]
  weights = rows[1]["language"]["layer_weights"]
  assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)  # tiny: 2 layers + input.
  # Same params at both steps: the same probe result (the step's compiled code is reused).
  assert rows[0]["language"]["test"] == rows[1]["language"]["test"]
  assert os.path.getsize(tmp_path / "evals.png") > 0
  assert os.path.exists(tmp_path / "evals" / "language" / "step_0000006" / "results.json")


@pytest.mark.slow  # ~35 s of CPU: a real (tiny) pretraining run on 8 devices with two evals.
def test_evals_run_during_pretraining_and_log_quality_against_compute(tmp_path):
  config = demo.get_config("runlocal")
  with config.unlocked():
    config.evals = {"language": _language_eval(every_steps=2)}
    config.log_every_steps = 1
  # Equal lengths: one eval bucket, so one compiled forward pass and probe step.
  source = sources.SyntheticSource(16, seed=0, min_samples=8_000, max_samples=8_000)
  final = pretrain.train_and_evaluate(config, str(tmp_path), source=source)
  assert final["step"] == 4
  with open(tmp_path / "evals.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [2, 4]
  # Cumulative compute: XLA's FLOPs of each train step (one shape here), summed.
  assert rows[0]["cumulative_flops"] > 0
  assert rows[1]["cumulative_flops"] == pytest.approx(2 * rows[0]["cumulative_flops"])
  weights = rows[1]["language"]["layer_weights"]
  assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)  # tiny: 2 layers + input.
  assert 0.0 <= rows[1]["language"]["test"]["accuracy"] <= 1.0
  logged = {r["step"]: r for r in metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
            if "eval/language/test_accuracy" in r}
  assert sorted(logged) == [2, 4]
  assert logged[4]["eval/language/test_accuracy"] == rows[1]["language"]["test"]["accuracy"]
  assert os.path.getsize(tmp_path / "evals.png") > 0
  assert os.path.exists(tmp_path / "evals" / "language" / "step_0000004" / "results.json")


def test_evals_without_their_labels_fail_before_the_first_step(tmp_path):
  """A phone eval on a corpus without phones (SyntheticSource, like LibriSpeech or a local_audio
  folder) is one line naming the entry and the fix, before anything trains."""
  config = demo.get_config("runlocal")
  with config.unlocked():
    config.evals = {"phone": probe_configs.pretraining_eval("phone", every_steps=2)}
  source = sources.SyntheticSource(16, seed=0, min_samples=8_000, max_samples=8_000)
  with pytest.raises(pretraining_evals.EvalsError) as e:
    pretrain.train_and_evaluate(config, str(tmp_path), source=source)
  message = str(e.value)
  assert "\n" not in message and message.startswith("evals.phone (phone on demo_corpus): ")
  assert "has an empty 'phones' field" in message
  assert message.endswith("drop it with --config.evals.phone.every_steps=0.")
  assert not (tmp_path / "ckpt").exists() or not os.listdir(tmp_path / "ckpt")
