"""Shared plumbing of the experiment scripts: run a stage as a child process, finish a
training run once (resumable), and read back its in-training probes.
"""
import json
import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.training import plots


def sh(*cmd, capture=False, prefix="stage"):
  """Runs a stage; SIGTERM or Ctrl-C reach the child (a training saves a checkpoint) first.
  Returns its stdout when `capture`."""
  print(f"[{prefix}] {' '.join(cmd)}", flush=True)
  child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE if capture else None, text=True)
  try:
    out, _ = child.communicate()
  except BaseException:
    child.send_signal(signal.SIGTERM)
    child.wait()
    raise
  if child.returncode:
    raise subprocess.CalledProcessError(child.returncode, cmd)
  return out


def train_once(workdir, config, steps, *overrides, prefix="stage"):
  """`python -m jaxssl.main` until `steps`, resuming a stopped run; a DONE file marks it
  finished, so a re-run of the experiment skips it."""
  done = os.path.join(workdir, "DONE")
  if not os.path.exists(done):
    sh(sys.executable, "-m", "jaxssl.main", f"--config={config}", f"--workdir={workdir}",
       *overrides, prefix=prefix)
    if plots.read_metrics(workdir)[-1]["step"] < steps:
      raise SystemExit(f"[{prefix}] {workdir} stopped early; re-run the command to resume.")
    with open(done, "w") as f:
      f.write("finished\n")


def read_evals(workdir, split="test"):
  """A run's evals.jsonl rows (one per eval step: step, flops, each probe's `split` results)
  with the training device-hours at that step."""
  hours = {r["step"]: r.get("perf/device_hours", 0.0) for r in plots.read_metrics(workdir)
           if "perf/device_hours" in r}
  rows = {}
  with open(os.path.join(workdir, "evals.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      rows.setdefault(r["step"], {"step": r["step"], "flops": r["cumulative_flops"]})
      rows[r["step"]].update({k: v[split] for k, v in r.items() if isinstance(v, dict)})
  for step, r in rows.items():
    r["device_hours"] = hours.get(step, max([h for s, h in hours.items() if s <= step],
                                            default=0.0))
  return [rows[s] for s in sorted(rows)]
