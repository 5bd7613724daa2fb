"""Fault injection: a damaged newest checkpoint is set aside and the run resumes exactly from the
newest intact one, or stops with one line; never a silent wrong resume.

One uninterrupted 6-step run (checkpoints at 2, 4, 6) is the reference. Each test copies its
workdir, damages ckpt/6 (faults.py) and reruns with total_steps=8: the run must set ckpt/6 aside
as damaged-6, resume from 4, and log steps 5..8 exactly as a run resumed from an undamaged 4.
"""
import importlib.util
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from jaxssl.training import checkpointing
from jaxssl.training import integrity
from jaxssl.training import metrics as metrics_lib
from jaxssl import pretrain
from tests.training import faults
from tests.training import standin


def _train(config, workdir, objective=None):
  return pretrain.train_and_evaluate(config, workdir, source=standin.source(),
                                    objective=objective or standin.StandInObjective())


def _rows(workdir, steps):
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  keep = [r for r in rows if r["step"] in steps]
  return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in keep[-len(steps):]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(six-step workdir, metrics of steps 5..8 when resumed from an intact ckpt/4)."""
  base = tmp_path_factory.mktemp("faults")
  six = str(base / "six")
  _train(standin.config(total_steps=6), six)
  reference = str(base / "from4")
  shutil.copytree(six, reference)
  shutil.rmtree(os.path.join(reference, "ckpt", "6"))
  _train(standin.config(total_steps=8), reference)
  return six, _rows(reference, {5, 6, 7, 8})


def _damaged_copy(runs, tmp_path, damage, seed=0):
  six, _ = runs
  workdir = str(tmp_path / "run")
  shutil.copytree(six, workdir)
  faults.DAMAGES[damage](os.path.join(workdir, "ckpt", "6"), np.random.default_rng(seed))
  return workdir


@pytest.mark.parametrize("damage", sorted(faults.DAMAGES))
def test_damaged_newest_checkpoint_falls_back_to_the_newest_intact(runs, tmp_path, damage,
                                                                   caplog):
  workdir = _damaged_copy(runs, tmp_path, damage)
  with caplog.at_level(logging.WARNING):
    out = _train(standin.config(total_steps=8), workdir)
  assert out["step"] == 8 and not out["preempted"]
  for got, want in zip(_rows(workdir, {5, 6, 7, 8}), runs[1], strict=True):
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=f"{k} at {want['step']}")
  names = sorted(os.listdir(os.path.join(workdir, "ckpt")))
  if damage == "save killed before commit":  # Never listed: nothing to set aside or warn.
    assert any(n.startswith("6.orbax-checkpoint-tmp") for n in names)
  else:
    assert "damaged-6" in names  # Kept for inspection, not deleted.
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("Checkpoint step 6 is damaged: ")
    assert "\n" not in warnings[0]


def test_every_checkpoint_damaged_stops_with_one_line_listing_them(runs, tmp_path):
  workdir = _damaged_copy(runs, tmp_path, "400 bytes flipped")
  for step in (2, 4):
    faults.flip_bytes(os.path.join(workdir, "ckpt", str(step)), np.random.default_rng(step))
  with pytest.raises(checkpointing.CheckpointError) as e:
    _train(standin.config(total_steps=8), workdir)
  message = str(e.value)
  assert "\n" not in message and message.startswith("No intact checkpoint in ")
  for step in (6, 4, 2):
    assert f"step {step}: " in message
  assert sorted(os.listdir(os.path.join(workdir, "ckpt"))) == ["damaged-2", "damaged-4",
                                                               "damaged-6"]


def test_a_checkpoint_of_another_config_stops_with_one_line_and_is_kept(runs, tmp_path):
  workdir = _damaged_copy(runs, tmp_path, "save killed before commit")
  with pytest.raises(checkpointing.CheckpointError, match=r"written by a different config "
                     r"\(\d+ arrays differ, e\.g\. params/conv/bias: saved float32\[16\], "
                     r"this config float32\[32\]"):
    _train(standin.config(total_steps=8), workdir,
           objective=standin.StandInObjective(hidden=32))
  assert "4" in os.listdir(os.path.join(workdir, "ckpt"))  # Not set aside: it is not damaged.


def test_a_failed_save_stops_the_run_and_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
  """A full disk while writing: the run stops with the write's error, the save never commits,
  and the next run resumes from the checkpoint before it."""
  workdir = str(tmp_path / "run")
  _train(standin.config(total_steps=4), workdir)
  save = checkpointing.ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 6:
      raise OSError(28, "No space left on device")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(checkpointing.CheckpointError) as e:
    _train(standin.config(total_steps=8), workdir)
  assert "\n" not in str(e.value)
  assert str(e.value).startswith("Saving the checkpoint of step 6 failed (OSError: ")
  assert "No space left on device" in str(e.value) and "ckpt/4 is intact" in str(e.value)
  monkeypatch.undo()
  assert checkpointing.Checkpointer(workdir, standin.config().ckpt).steps() == [4, 2]
  assert _train(standin.config(total_steps=8), workdir)["step"] == 8


def test_fingerprints_change_with_any_single_element_and_not_otherwise():
  x = {"a": np.arange(1000, dtype=np.float32), "b": np.ones((3, 4), np.int32),
       "c": np.array([True, False]), "k": jax.random.key_data(jax.random.key(0))}
  base = integrity.fingerprints(x)
  assert base == integrity.fingerprints({k: v.copy() for k, v in x.items()})
  for name, index in (("a", 0), ("a", 999), ("b", (2, 3)), ("c", 1)):
    y = {k: v.copy() for k, v in x.items()}
    y[name][index] = np.logical_not(y[name][index]) if name == "c" else y[name][index] + 1
    changed = integrity.fingerprints(y)
    assert changed[name] != base[name] and all(changed[k] == base[k] for k in x if k != name)
  swapped = dict(x, a=x["a"][::-1].copy())  # Same elements, another order.
  assert integrity.fingerprints(swapped)["a"] != base["a"]


def test_keep_below_two_is_refused():
  config = standin.config()
  config.ckpt.keep = 1
  with pytest.raises(ValueError, match=r"ckpt.keep \(1\) >= 2"):
    checkpointing.Checkpointer("unused", config.ckpt)


@pytest.mark.slow
def test_randomized_fault_injection_never_resumes_silently_wrong(tmp_path):
  """experiments/2026-12-checkpoint-faults/run.py's randomized part, 12 trials: random damage
  to a random checkpoint (or SIGKILL at a random moment), then resume."""
  path = os.path.join(os.path.dirname(__file__), "..", "..", "experiments",
                      "2026-12-checkpoint-faults", "run.py")
  spec = importlib.util.spec_from_file_location("checkpoint_faults_run", path)
  run = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(run)
  counts, log = run.randomized(tmp_path, trials=12, seed=1)
  assert counts["trials"] == 12 and counts["silent_corruptions"] == 0, log
  assert counts["resumed_exactly"] + counts["stopped_cleanly"] == 12
