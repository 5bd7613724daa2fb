"""The training loop end to end on the stand-in objective and synthetic data.

Covers: preemption (SIGTERM) + resume reproducing an uninterrupted run, the non-finite stop,
no recompilation after the first step, metrics files and the dry run.
"""
import os
import signal

import jax
import numpy as np
import pytest

from jaxssl.training import checkpointing
from jaxssl.training import metrics as metrics_lib
from jaxssl import pretrain
from tests.training import standin


def _train(config, workdir, objective=None):
  return pretrain.train_and_evaluate(config, workdir, source=standin.source(),
                                    objective=objective or standin.StandInObjective())


def _train_metrics(workdir):
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def test_sigterm_saves_and_resume_matches_uninterrupted(tmp_path, monkeypatch):
  config = standin.config(total_steps=6)
  straight = str(tmp_path / "straight")
  final = _train(config, straight)
  assert final["step"] == 6 and np.isfinite(final["train/loss"])

  # Preempted run: SIGTERM arrives while step 3 is being logged (mid-run, off the ckpt grid).
  standin.sigterm_after_logging(monkeypatch, 3)
  resumed = str(tmp_path / "resumed")
  stopped = _train(config, resumed)
  assert stopped["step"] == 3 and stopped["preempted"]
  assert checkpointing.Checkpointer(resumed, config.ckpt).latest_step() == 3
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # The handler was restored.
  monkeypatch.undo()
  again = _train(config, resumed)
  assert again["step"] == 6 and not again["preempted"]

  a, b = _train_metrics(straight), _train_metrics(resumed)
  assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
  for ra, rb in zip(a, b):
    for k in ra:
      np.testing.assert_allclose(ra[k], rb[k], rtol=1e-6, err_msg=f"{k} at step {ra['step']}")
  (sa, pa), (sb, pb) = standin.latest_params(straight), standin.latest_params(resumed)
  assert sa == sb == 6
  jax.tree.map(np.testing.assert_array_equal, pa, pb)


def test_nonfinite_run_stops_without_saving_and_last_checkpoint_resumes(tmp_path):
  config = standin.config(total_steps=8)
  config.max_consecutive_nonfinite = 2
  workdir = str(tmp_path)
  # The loss is NaN from the 5th step on: steps 5 and 6 are skipped, then the run stops at 6,
  # which is on the checkpoint grid but must not be saved.
  with pytest.raises(pretrain.NonFiniteError, match=r"at step 6.*2 consecutive.*steps 5\.\.6.*"
                     r"the last checkpoint \(step 4\) holds the last good state"):
    _train(config, workdir, standin.StandInObjective(nan_steps=tuple(range(4, 8))))
  assert checkpointing.Checkpointer(workdir, config.ckpt).latest_step() == 4
  rows = _train_metrics(workdir)
  assert [r["train/skipped_steps"] for r in rows] == [0, 0, 0, 0, 1, 2]
  assert np.isnan(rows[-1]["train/loss"])
  # The last good checkpoint restores: a healthy objective resumes from step 4 and finishes.
  final = _train(config, workdir)
  assert final["step"] == 8 and final["train/skipped_steps"] == 0
  assert [r["step"] for r in _train_metrics(workdir)] == list(range(1, 9))


def test_divergence_right_after_a_resume_names_the_checkpoint_before_it(tmp_path):
  """The resumed checkpoint itself may be what broke the run: the message says so, and which
  earlier checkpoint to resume from instead."""
  config = standin.config(total_steps=4)
  workdir = str(tmp_path)
  _train(config, workdir)  # Checkpoints at 2 and 4.
  config = standin.config(total_steps=8)
  config.max_consecutive_nonfinite = 2
  with pytest.raises(pretrain.NonFiniteError) as e:
    _train(config, workdir, standin.StandInObjective(nan_steps=(4, 5)))
  assert "the run diverged 1 steps after resuming from step 4, so that checkpoint may be bad: " \
         "move ckpt/4 aside to resume from step 2." in str(e.value)


def test_no_compilation_after_the_first_step(tmp_path, monkeypatch):
  compiles = []
  at_step_end = []

  def on_event(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  step_done = metrics_lib.MetricsWriter.step_done

  def record(self, audio_seconds):
    at_step_end.append(len(compiles))
    step_done(self, audio_seconds)

  monkeypatch.setattr(metrics_lib.MetricsWriter, "step_done", record)
  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    config = standin.config(total_steps=5, mesh=(2, 2, 2))
    config.ckpt.every_steps = 100  # Only the final save, after the last step.
    _train(config, str(tmp_path))
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)
  assert len(at_step_end) == 5 and at_step_end[0] > 0
  # Steps 2..5 (global batch, the step, metric fetches every step) compiled nothing.
  assert at_step_end[1:] == [at_step_end[0]] * 4, at_step_end


def test_metrics_files(tmp_path):
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=10, flops_per_step=2e12)
  for step in (1, 2, 3):
    writer.step_done(3600.0)
    writer.write(step, {"train/loss": float(step)})
  writer.close()
  rows = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["train/loss"] for r in rows] == [1.0, 2.0, 3.0]
  assert rows[1]["perf/audio_hours_per_sec"] == pytest.approx(
      rows[1]["perf/steps_per_sec"], rel=1e-6)  # One audio hour per step.
  assert rows[1]["perf/tflops_per_sec"] == pytest.approx(2 * rows[1]["perf/steps_per_sec"])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
  # A run resumed from step 2 drops what was logged after it.
  metrics_lib.MetricsWriter(str(tmp_path), total_steps=10, start_step=2).close()
  assert [r["step"] for r in metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


def test_dry_run_reports_size_and_cost():
  config = standin.config(mesh=(2, 2, 2))
  out = pretrain.dry_run(config, objective=standin.StandInObjective())
  # conv 3*8*16+16, fc1 16*32+32, fc2 32*8+8.
  assert out["num_params"] == 400 + 544 + 264
  assert out["flops_per_step"] == pytest.approx(8 * out["flops_per_step_per_device"])
  assert out["flops_per_step_per_device"] > 0 and out["mesh"]["tensor"] == 2


def test_real_wav2vec2_objective_trains_on_a_sharded_mesh(tmp_path):
  """The demo config's real objective: its logical names all have rules and divide the mesh."""
  from configs.wav2vec2 import demo  # pylint: disable=g-import-not-at-top
  from jaxssl.data import sources  # pylint: disable=g-import-not-at-top
  config = demo.get_config("runlocal")
  config.total_steps = 2
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  source = sources.SyntheticSource(32, seed=0, min_samples=8000, max_samples=12000)
  final = pretrain.train_and_evaluate(config, str(tmp_path), source=source)
  assert final["step"] == 2 and final["train/skipped_steps"] == 0
  assert np.isfinite(final["train/loss"]) and final["train/learning_rate"] > 0
  assert standin.latest_params(str(tmp_path))[0] == 2
