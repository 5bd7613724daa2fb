"""Every engine job survives SIGTERM and kill -9: the resumed run ends where an uninterrupted one
does (same metrics at every logged step, same selection, same scores)."""
import os
import signal
import subprocess
import sys

import pytest

from jaxssl.training import metrics as metrics_lib
from tests import jobs
from tests.training import standin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One xdist worker runs them all (`--dist loadgroup`) and the fixtures live for the session,
# so the uninterrupted runs happen once even when other tests run in between.
pytestmark = pytest.mark.xdist_group("engine_jobs")


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("shared"))
  jobs.prepare(path)
  return path


@pytest.fixture(scope="session")
def straight(shared, tmp_path_factory):
  """Each job run once without interruption: {name: (results, workdir)}."""
  out = {}
  for name in jobs.JOBS:
    workdir = str(tmp_path_factory.mktemp(f"straight_{name}"))
    out[name] = (jobs.run(name, workdir, shared), workdir)
  return out


def _same(name, results, workdir, want, want_dir):
  train = lambda d: [{k: v for k, v in r.items() if k.startswith(("train/", "eval/"))}
                     for r in metrics_lib.read_jsonl(os.path.join(d, "metrics.jsonl"))]
  assert train(workdir) == train(want_dir)  # Every logged value, bitwise.
  if name != "distill":
    for key in ("best_step", "dev", "test", "dev_curve", "train_curve"):
      assert results[key] == want[key], key
  else:
    assert results["step"] == want["step"] == 6


@pytest.mark.parametrize("name", jobs.JOBS)
def test_sigterm_then_resume_matches_uninterrupted(name, shared, straight, tmp_path,
                                                   monkeypatch):
  workdir = str(tmp_path / name)
  standin.sigterm_after_logging(monkeypatch, at_step=3)
  first = jobs.run(name, workdir, shared)
  assert first["preempted"] and first["step"] == 3 and "test" not in first
  monkeypatch.undo()
  assert sorted(os.listdir(os.path.join(workdir, "ckpt")))[-1] == "3"  # Saved at the signal.
  results = jobs.run(name, workdir, shared)
  _same(name, results, workdir, *straight[name])


@pytest.mark.parametrize("name", jobs.JOBS)
def test_kill_9_then_resume_matches_uninterrupted(name, shared, straight, tmp_path):
  workdir = str(tmp_path / name)
  proc = subprocess.run([sys.executable, "-m", "tests.jobs", name, workdir, shared, "5"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  steps = [s for s in os.listdir(os.path.join(workdir, "ckpt")) if s.isdigit()]
  assert steps and max(map(int, steps)) <= 4  # Step 5 never reached a checkpoint.
  results = jobs.run(name, workdir, shared)
  _same(name, results, workdir, *straight[name])
