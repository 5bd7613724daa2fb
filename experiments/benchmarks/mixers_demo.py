"""Every token mixer pretrained with the same budget on the demo corpus, side by side.

Runs `configs/mixers/wav2vec2.py:mixer=<name>` (the demo wav2vec 2.0 recipe, only the mixer
swapped) for the same number of steps on the same data and seed, one mixer after the other, and
reports its cost (parameters, FLOPs/step from --dry_run, wall and CPU time of the run, steps/s
without compilation) and its outcome (contrastive loss and accuracy, averaged over the last
`--tail` logged steps; optionally a frozen-upstream probe via jaxssl.evaluate).

  python -m jaxssl.data.demo_corpus --out=/tmp/mx/raw
  python -m jaxssl.data.build --dataset=demo_corpus --source=/tmp/mx/raw --data_dir=/tmp/mx/tfds
  python -m experiments.benchmarks.mixers_demo --data_dir=/tmp/mx/tfds --runs=/tmp/mx/runs
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

flags.DEFINE_list("mixers", ["mha", "summary_mixing", "fnet", "hyena"], "Mixers to train.")
flags.DEFINE_string("recipe", "demo", "Recipe of configs/mixers/wav2vec2.py.")
flags.DEFINE_integer("total_steps", 600, "Training steps per mixer (the shared budget).")
flags.DEFINE_integer("log_every_steps", 25, "Metrics logging interval.")
flags.DEFINE_integer("tail", 4, "Final metrics = mean of the last this many logged steps.")
flags.DEFINE_string("data_dir", "/tmp/mx/tfds", "TFDS data_dir with the built demo corpus.")
flags.DEFINE_string("runs", "/tmp/mx/runs", "Parent of the per-mixer workdirs (replaced).")
flags.DEFINE_string("probe", "", "Optional probe config (e.g. configs/probes/phone.py) run on "
                    "each pretrained encoder with jaxssl.evaluate.")
flags.DEFINE_list("overrides", [], "Extra --config.* overrides for every run (e.g. "
                  "schedule.warmup_steps=1 for a smoke run).")
flags.DEFINE_string("out", "experiments/benchmarks/results/mixers_demo",
                    "Output stem for .json and .md; empty: print only.")
FLAGS = flags.FLAGS

METRICS = ("train/loss_contrastive", "train/accuracy", "train/code_perplexity")


def _run(cmd):
  """Runs cmd; returns (stdout, wall seconds, CPU seconds of the child)."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return proc.stdout, wall, cpu


def train_one(name):
  config = f"--config=configs/mixers/wav2vec2.py:mixer={name},recipe={FLAGS.recipe}"
  overrides = [f"--config.total_steps={FLAGS.total_steps}",
               f"--config.log_every_steps={FLAGS.log_every_steps}",
               f"--config.data.data_dir={FLAGS.data_dir}"]
  overrides += [f"--config.{o}" for o in FLAGS.overrides]
  dry, _, _ = _run([sys.executable, "-m", "jaxssl.main", config, *overrides, "--dry_run"])
  row = dict(mixer=name, **json.loads(dry.strip().splitlines()[-1]))
  workdir = os.path.join(FLAGS.runs, name)
  shutil.rmtree(workdir, ignore_errors=True)  # Same budget from scratch, never a resume.
  _, row["wall_s"], row["cpu_s"] = _run(
      [sys.executable, "-m", "jaxssl.main", config, *overrides, f"--workdir={workdir}"])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logs = [json.loads(line) for line in f if line.strip()]
  logs = [m for m in logs if "train/loss_contrastive" in m]
  tail = logs[-FLAGS.tail:]
  for key in METRICS:
    row[key.split("/")[1]] = float(np.mean([m[key] for m in tail]))
  row["first_loss_contrastive"] = logs[0]["train/loss_contrastive"]
  row["steps_per_sec"] = float(np.median([m["perf/steps_per_sec"] for m in logs[1:]]))
  row["curve"] = [(m["step"], m["train/loss_contrastive"], m["train/accuracy"]) for m in logs]
  if FLAGS.probe:
    probe_dir = os.path.join(FLAGS.runs, f"probe_{name}")
    shutil.rmtree(probe_dir, ignore_errors=True)
    _, row["probe_wall_s"], _ = _run(
        [sys.executable, "-m", "jaxssl.evaluate", f"--config={FLAGS.probe}",
         f"--config.upstream={workdir}", f"--workdir={probe_dir}",
         f"--config.data.data_dir={FLAGS.data_dir}"])
    with open(os.path.join(probe_dir, "results.json")) as f:
      row["probe"] = json.load(f)
  print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
  return row


def markdown(rows, meta):
  lines = [f"# Token mixers on the demo corpus, same budget ({meta['date']})", "",
           f"Machine: {meta['cpu']}, {meta['cores']} cores, shared with other jobs (1-min load "
           f"average {meta['load_start']:.1f} at start, {meta['load_end']:.1f} at the end), so "
           "wall times and steps/s are inflated and noisy; CPU time is the steadier cost.", "",
           f"Recipe: `configs/mixers/wav2vec2.py:mixer=<name>,recipe={meta['recipe']}` "
           f"(demo wav2vec 2.0: 3 x 128-d pre-LN blocks, batch 8 x 2 s, seed 0), "
           f"{meta['total_steps']} steps each, data `{meta['data_dir']}`. Loss and accuracy: "
           f"contrastive (21-way; chance accuracy 4.8%, log(21) = 3.04), mean of the last "
           f"{meta['tail']} logged steps (every {meta['log_every_steps']}), on training batches "
           "with fresh masks. FLOPs/step: XLA cost analysis of the compiled step (--dry_run).",
           "", "| mixer | params | GFLOPs/step | wall s | CPU s | steps/s | loss first -> last "
           "| accuracy | code ppl |" + (" probe |" if any("probe" in r for r in rows) else ""),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + (
               "---|" if any("probe" in r for r in rows) else "")]
  for r in rows:
    cells = [r["mixer"], f"{r['num_params']:,}", f"{r['flops_per_step'] / 1e9:.1f}",
             f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}", f"{r['steps_per_sec']:.2f}",
             f"{r['first_loss_contrastive']:.2f} -> {r['loss_contrastive']:.2f}",
             f"{100 * r['accuracy']:.1f}%", f"{r['code_perplexity']:.0f}"]
    if "probe" in r:
      cells.append(json.dumps(r["probe"].get("metrics", r["probe"]))[:80])
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  meta = dict(date=time.strftime("%Y-%m-%d"), cores=os.cpu_count(),
              load_start=os.getloadavg()[0], recipe=FLAGS.recipe, total_steps=FLAGS.total_steps,
              data_dir=FLAGS.data_dir, tail=FLAGS.tail, log_every_steps=FLAGS.log_every_steps,
              cpu=subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True,
                                 capture_output=True, text=True).stdout.strip() or "unknown")
  rows = [train_one(name) for name in FLAGS.mixers]
  meta["load_end"] = os.getloadavg()[0]
  md = markdown(rows, meta)
  print(md)
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
    with open(FLAGS.out + ".json", "w") as f:
      json.dump(dict(meta=meta, rows=rows), f, indent=1)
    with open(FLAGS.out + ".md", "w") as f:
      f.write(md)


if __name__ == "__main__":
  app.run(main)
