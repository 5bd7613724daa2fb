"""Two JAX processes on one machine (4 CPU devices each) train like one process with 8.

This is how the multi-host code paths (process-local batches -> global arrays, orbax saves of
global arrays from every process, the preemption all-gather) are tested without a pod.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker
import pytest

from configs.best_rq import demo as best_rq_demo
from jaxssl.training import metrics as metrics_lib
from jaxssl import pretrain
from jaxssl.objectives import best_rq
from tests.training import standin

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_two_processes(workdir, *args, timeout=300, worker="multiprocess_worker"):
  port = portpicker.pick_unused_port()
  # No forced 8 devices; otherwise compiled as this process is (tests/conftest.py).
  flags = os.environ["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
  procs = [subprocess.Popen(
      [sys.executable, "-m", f"tests.training.{worker}", str(i), str(port), workdir, *args],
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


# After the first update the real model's runs differ by float rounding: gloo's cross-process
# all-reduce sums in another order than the in-process one, and Adam turns tiny differences in
# near-zero gradients into full-size steps (measured: 2.6e-4 relative in the step-3 loss).
@pytest.mark.parametrize("kind,keys,rtol", [
    ("standin", ("train/loss", "train/grad_norm", "train/valid_frac"), 1e-5),
    pytest.param("wav2vec2", ("train/loss", "train/accuracy", "train/code_perplexity"), 2e-3,
                 marks=pytest.mark.slow),  # ~1.5 min idle: three compiles of the real step.
])
def test_two_processes_match_one(tmp_path, kind, keys, rtol):
  config, objective, source = standin.setup(kind)
  single = str(tmp_path / "single")
  pretrain.train_and_evaluate(config, single, objective=objective, source=source)
  multi = str(tmp_path / "multi")
  outputs = _run_two_processes(multi, kind)
  assert "process 1 done at step 3" in outputs[1]

  rows_1 = metrics_lib.read_jsonl(os.path.join(single, "metrics.jsonl"))
  rows_2 = metrics_lib.read_jsonl(os.path.join(multi, "metrics.jsonl"))
  assert [r["step"] for r in rows_2] == [1, 2, 3]
  for a, b in zip(rows_1, rows_2):
    for k in keys:
      tol = 1e-5 if a["step"] == 1 else rtol  # Step 1's metrics come before any update.
      np.testing.assert_allclose(a[k], b[k], rtol=tol, err_msg=f"{k} at step {a['step']}")
  # Both processes wrote their shards of the global arrays into one checkpoint.
  (step_1, params_1), (step_2, params_2) = map(standin.latest_params, (single, multi))
  assert step_1 == step_2 == 3
  # Adam moves a parameter by at most ~lr per step, whatever the gradient's rounding: 3 steps.
  atol = 1e-7 if kind == "standin" else 3 * config.optim.lr
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
               params_1, params_2)


def test_a_two_process_checkpoint_resumes_in_one_process_exactly(tmp_path):
  """A checkpoint written by 2 processes (checksums of the global arrays included) verifies and
  resumes in 1 process with the metrics of a run that was single-process throughout."""
  config, objective, source = standin.setup("standin")
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  pretrain.train_and_evaluate(config, single, objective=objective, source=source)
  _run_two_processes(multi, "standin")
  with config.unlocked():
    config.total_steps = 5
  for workdir in (single, multi):
    out = pretrain.train_and_evaluate(config, workdir, objective=objective, source=source)
    assert out["step"] == 5 and not any(n.startswith("damaged") for n in os.listdir(
        os.path.join(workdir, "ckpt")))
  rows = [metrics_lib.read_jsonl(os.path.join(w, "metrics.jsonl"))[-2:] for w in (single, multi)]
  assert [r["step"] for r in rows[1]] == [4, 5]
  for a, b in zip(*rows):
    for k in ("train/loss", "train/grad_norm"):
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=f"{k} at step {a['step']}")


def test_best_rq_quantizer_is_bit_identical_on_two_processes(tmp_path):
  """Every host builds BEST-RQ's frozen quantizer itself (nothing is broadcast): from the same
  objective.quantizer_seed the two processes' replicas are bitwise equal, and another seed gives
  another quantizer (tests/training/multiprocess_quantizer_worker.py)."""
  outputs = _run_two_processes(str(tmp_path), worker="multiprocess_quantizer_worker")
  assert "process 1 wrote 4 digests" in outputs[1]
  digests = [json.loads((tmp_path / f"digests_{i}.json").read_text()) for i in range(2)]
  seed = best_rq_demo.get_config("runlocal").objective.quantizer_seed
  names = [f"{s}/{k}" for s in (seed, seed + 1) for k in ("projection", "codebook")]
  assert sorted(digests[0]) == sorted(digests[1]) == sorted(names)
  assert digests[0] == digests[1]  # Bit-identical across the processes, for both seeds.
  for k in ("projection", "codebook"):
    assert digests[0][f"{seed}/{k}"] != digests[0][f"{seed + 1}/{k}"]
  with np.load(tmp_path / "quantizers.npz") as saved:
    for s in (seed, seed + 1):
      want = best_rq.make_quantizer(s)
      for k in ("projection", "codebook"):  # The seed's quantizer (up to the jitted last bit).
        np.testing.assert_allclose(saved[f"{s}/{k}"], want[k], rtol=1e-6, atol=1e-7)
    assert not np.allclose(saved[f"{seed}/codebook"], saved[f"{seed + 1}/codebook"])
