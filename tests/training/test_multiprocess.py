"""Two JAX processes on one machine (4 CPU devices each) train like one process with 8.

This is how the multi-host code paths (process-local batches -> global arrays, orbax saves of
global arrays from every process, the preemption all-gather) are tested without a pod.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker

from jaxssl.training import metrics as metrics_lib
from jaxssl.training import trainer
from tests.training import standin

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_two_processes(workdir, timeout=240):
  port = portpicker.pick_unused_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # No forced 8 devices.
  env["JAX_PLATFORMS"] = "cpu"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.training.multiprocess_worker", str(i), str(port), workdir],
      cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def test_two_processes_match_one(tmp_path):
  config = standin.config(total_steps=3, mesh=(2, 2, 2))
  single = str(tmp_path / "single")
  trainer.train_and_evaluate(config, single, objective=standin.StandInObjective(),
                             source=standin.source())
  multi = str(tmp_path / "multi")
  outputs = _run_two_processes(multi)
  assert "process 1 done at step 3" in outputs[1]

  rows_1 = metrics_lib.read_jsonl(os.path.join(single, "metrics.jsonl"))
  rows_2 = metrics_lib.read_jsonl(os.path.join(multi, "metrics.jsonl"))
  assert [r["step"] for r in rows_2] == [1, 2, 3]
  for a, b in zip(rows_1, rows_2):
    for k in ("train/loss", "train/grad_norm", "train/valid_frac"):
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=f"{k} at step {a['step']}")
  # Both processes wrote their shards of the global arrays into one checkpoint.
  (step_1, params_1), (step_2, params_2) = map(standin.latest_params, (single, multi))
  assert step_1 == step_2 == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               params_1, params_2)
