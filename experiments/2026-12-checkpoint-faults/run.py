"""Fault injection on real runs: what happens to a resume after each kind of checkpoint damage.

  python experiments/2026-12-checkpoint-faults/run.py                 # both parts (~10 min)
  python experiments/2026-12-checkpoint-faults/run.py --trials=40 --skip_demo  # keeps part 1

Part 1 (the demo table): `configs/wav2vec2/demo.py` trains 150 steps with checkpoints every 50;
for each damage in tests/training/faults.py, a copy of the workdir gets ckpt/150 damaged and the
same command resumes to step 200. Reported: what the run said, where it resumed, and whether its
metrics of steps 101-200 equal those of an undamaged resume from ckpt/100.

Part 2 (randomized): `--trials` runs of the tests' stand-in model (tests/training/standin.py):
each trains 6 steps (checkpoints 2, 4, 6), then a random damage hits a random checkpoint (one
random data file, or all of them), or a child process training the same run is killed with
SIGKILL 0-3 s after its first checkpoint (mid-step or mid-save: it saves every 2 steps). The run
is resumed and classified:
  resumed exactly   it resumed from an intact checkpoint and every later metric equals the
                    uninterrupted run's;
  stopped cleanly   it stopped with one CheckpointError line (every checkpoint damaged);
  silent corruption anything else (a resume whose metrics differ, a traceback): must be 0.
Writes results/results.json and results/results.md.
"""
import argparse
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from configs.wav2vec2 import demo  # pylint: disable=wrong-import-position
from jaxssl import pretrain  # pylint: disable=wrong-import-position
from jaxssl.training import checkpointing  # pylint: disable=wrong-import-position
from jaxssl.training import metrics as metrics_lib  # pylint: disable=wrong-import-position
from tests.training import faults  # pylint: disable=wrong-import-position
from tests.training import standin  # pylint: disable=wrong-import-position

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


class _Warnings(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def _rows(workdir, first):
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  out = {}
  for r in rows:  # The last write of each step wins (a resumed run rewrites its steps).
    if r["step"] >= first and "train/loss" in r:
      out[r["step"]] = {k: v for k, v in r.items() if k.startswith("train/")}
  return out


def _same(a, b):
  return sorted(a) == sorted(b) and all(
      np.allclose([a[s][k] for k in a[s]], [b[s][k] for k in a[s]], rtol=1e-6, equal_nan=True)
      for s in a)


def _resume(train, workdir):
  """Runs `train(workdir)`; (outcome line, resumed-from step or None, warnings)."""
  handler = _Warnings()
  logging.getLogger().addHandler(handler)
  try:
    train(workdir)
    resumed = [ln for ln in handler.lines if "is damaged" in ln]
    return "resumed", resumed
  except checkpointing.CheckpointError as e:
    return f"stopped: {e}", handler.lines
  finally:
    logging.getLogger().removeHandler(handler)


def demo_table(base):
  config = demo.get_config()
  with config.unlocked():
    config.total_steps, config.ckpt.every_steps, config.ckpt.keep = 150, 50, 3
    config.evals = {}
  ref = str(base / "demo")
  pretrain.train_and_evaluate(config, ref)
  longer = config.copy_and_resolve_references()
  with longer.unlocked():
    longer.total_steps = 200
  undamaged = str(base / "demo_from100")
  shutil.copytree(ref, undamaged)
  shutil.rmtree(os.path.join(undamaged, "ckpt", "150"))
  pretrain.train_and_evaluate(longer, undamaged)
  want = _rows(undamaged, 101)
  rows = []
  for name, damage in faults.DAMAGES.items():
    workdir = str(base / f"demo_{len(rows)}")
    shutil.copytree(ref, workdir)
    damage(os.path.join(workdir, "ckpt", "150"), np.random.default_rng(0))
    outcome, lines = _resume(lambda w: pretrain.train_and_evaluate(longer, w), workdir)
    said = lines[0] if lines else "(nothing: never listed)"
    kept = sorted(n for n in os.listdir(os.path.join(workdir, "ckpt")) if "150" in n)
    rows.append(dict(damage=name, said=said, outcome=outcome, ckpt_150_now=kept,
                     metrics_equal_undamaged_resume_from_100=_same(_rows(workdir, 101), want)))
    print(rows[-1], flush=True)
  return rows


def _standin_train(total):
  return lambda w: pretrain.train_and_evaluate(standin.config(total_steps=total), w,
                                              source=standin.source(),
                                              objective=standin.StandInObjective())


KILLED_STEPS = 300  # Checkpoints every 2 steps: a SIGKILL often lands inside a save.


def _killed_child(workdir):
  """Trains in a child process; the parent SIGKILLs it at a random moment."""
  _standin_train(KILLED_STEPS)(workdir)


def randomized(base, trials, seed):
  rng = np.random.default_rng(seed)
  ref = str(base / "six")
  _standin_train(6)(ref)
  counts = dict(trials=0, resumed_exactly=0, stopped_cleanly=0, silent_corruptions=0)
  kinds = sorted(faults.DAMAGES) + ["SIGKILL"]
  log = []
  for t in range(trials):
    kind = kinds[rng.integers(len(kinds))]
    workdir = str(base / f"trial_{t}")
    if kind == "SIGKILL":
      # A fresh run killed at a random moment, resumed to the end, against an uninterrupted run.
      child = subprocess.Popen([sys.executable, __file__, f"--child_workdir={workdir}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
      # Once the first checkpoint exists the run is saving every 2 steps: kill it 0-3 s later.
      deadline = time.time() + 300
      while time.time() < deadline and child.poll() is None and not _steps(workdir):
        time.sleep(0.2)
      time.sleep(float(rng.uniform(0.0, 3.0)))
      alive = child.poll() is None
      child.send_signal(signal.SIGKILL)
      child.wait()
      listed = _steps(workdir)
      outcome, _ = _resume(_standin_train(KILLED_STEPS), workdir)
      reference = str(base / "uninterrupted")
      if not os.path.exists(reference):
        _standin_train(KILLED_STEPS)(reference)
      ok = outcome == "resumed" and _same(_rows(workdir, 1), _rows(reference, 1))
      target = f"killed {'after' if alive else 'AFTER THE END, at'} ckpt {max(listed or [0])}"
    else:
      shutil.copytree(ref, workdir)
      target = int(rng.choice([2, 4, 6]))
      every = bool(rng.integers(2))
      damage = faults.DAMAGES[kind]
      args = {"every": every} if "every" in damage.__code__.co_varnames else {}
      damage(os.path.join(workdir, "ckpt", str(target)), rng, **args)
      listed = _steps(workdir)
      outcome, _ = _resume(_standin_train(8), workdir)
      ok = outcome == "resumed" and _resume_is_exact(base, workdir, listed)
    counts["trials"] += 1
    if ok:
      counts["resumed_exactly"] += 1
    elif outcome.startswith("stopped") and "\n" not in outcome:
      counts["stopped_cleanly"] += 1
    else:
      counts["silent_corruptions"] += 1
    log.append(dict(trial=t, damage=kind, checkpoint=target, outcome=outcome.split(":")[0],
                    exact=ok))
    print(log[-1], flush=True)
  return counts, log


def _steps(workdir):
  """Finished checkpoints' steps (orbax's temporary directories are not)."""
  ckpt = os.path.join(workdir, "ckpt")
  return sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) if os.path.isdir(ckpt) else []


def _resume_is_exact(base, workdir, listed):
  """The damaged run's steps after its resume point R equal an undamaged resume from R, where R
  is the newest checkpoint that was listed and not set aside as damaged."""
  aside = {int(n.split("-")[1]) for n in os.listdir(os.path.join(workdir, "ckpt"))
           if n.startswith("damaged-")}
  start = max(set(listed) - aside)
  reference = str(base / f"from{start}")
  if not os.path.exists(reference):
    shutil.copytree(str(base / "six"), reference)
    for s in (2, 4, 6):
      if s > start:
        shutil.rmtree(os.path.join(reference, "ckpt", str(s)))
    _standin_train(8)(reference)
  return _same(_rows(workdir, start + 1), _rows(reference, start + 1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=40)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--skip_demo", action="store_true")
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("--child_workdir", default="", help="(internal) train, to be SIGKILLed.")
  args = parser.parse_args()
  if args.child_workdir:
    _killed_child(args.child_workdir)
    return
  logging.basicConfig(level=logging.ERROR)
  base = pathlib.Path(tempfile.mkdtemp(prefix="ckpt_faults_"))
  start = time.time()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.skip_demo:  # Keep the last run's table.
    table = json.loads((out / "results.json").read_text())["demo_table"]
  else:
    table = demo_table(base)
    (out / "results.json").write_text(json.dumps(dict(demo_table=table), indent=1) + "\n")
  counts, log = randomized(base, args.trials, args.seed)
  result = dict(demo_table=table, randomized=counts, trials=log, seed=args.seed,
                wall_sec=time.time() - start, machine=f"{os.cpu_count()} cores")
  (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
  md = ["| damage to ckpt/150 | what the run said | resumed | steps 101-200 equal an undamaged "
        "resume from 100 |", "| --- | --- | --- | --- |"]
  md += [f"| {r['damage']} | {r['said']} | {r['outcome'].split(':')[0]} | "
         f"{r['metrics_equal_undamaged_resume_from_100']} |" for r in table]
  md += ["", f"Randomized ({args.trials} trials, seed {args.seed}): " + ", ".join(
      f"{k.replace('_', ' ')} {v}" for k, v in counts.items()) + "."]
  (out / "results.md").write_text("\n".join(md) + "\n")
  print("\n".join(md))
  shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
  main()
