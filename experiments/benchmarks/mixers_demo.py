"""Every token mixer pretrained with the same budget on the demo corpus, side by side.

Runs `configs/mixers/wav2vec2.py:mixer=<name>` (the demo wav2vec 2.0 recipe, only the mixer
swapped) for the same number of steps on the same data and seed, one mixer after the other, and
reports its cost (parameters, FLOPs/step from --dry_run, wall and CPU time of the run, steps/s
without compilation) and its outcome (contrastive loss and accuracy, averaged over the last
`--tail` logged steps; frozen-upstream probes via jaxssl.evaluate, e.g. phone PER and speaker
accuracy on test at the best dev step).

  python -m jaxssl.data.demo_corpus --out=/tmp/mx/raw
  python -m jaxssl.data.build --dataset=demo_corpus --source=/tmp/mx/raw --data_dir=/tmp/mx/tfds
  python -m experiments.benchmarks.mixers_demo --data_dir=/tmp/mx/tfds --runs=/tmp/mx/runs \
      --probes=configs/probes/phone.py,configs/probes/speaker.py

Training and probing can be separate steps: `--notrain` rebuilds the rows from the run
directories (`<runs>/<mixer>/metrics.jsonl`) and takes the costs only a training run measures
(dry-run FLOPs, parameters, wall and CPU seconds) from the earlier `--out`.json; `--norun_probes`
reads `<probe_root>/probe_<task>_<mixer>/results.json` instead of running the probes. So the
committed table is this script's output, never edited by hand:

  python -m experiments.benchmarks.mixers_demo --notrain --norun_probes \
      --probes=configs/probes/phone.py,configs/probes/speaker.py --probe_root=/tmp/mxe
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

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_list("mixers", ["mha", "summary_mixing", "fnet", "hyena"], "Mixers to train.")
  flags.DEFINE_string("recipe", "demo", "Recipe of configs/mixers/wav2vec2.py.")
  flags.DEFINE_integer("total_steps", 600, "Training steps per mixer (the shared budget).")
  flags.DEFINE_integer("log_every_steps", 25, "Metrics logging interval.")
  flags.DEFINE_integer("tail", 4, "Final metrics = mean of the last this many logged steps.")
  flags.DEFINE_string("data_dir", "/tmp/mx/tfds", "TFDS data_dir with the built demo corpus.")
  flags.DEFINE_string("runs", "/tmp/mx/runs", "Parent of the per-mixer workdirs (replaced).")
  flags.DEFINE_bool("train", True, "Train every mixer; --notrain reads the run directories and "
                    "the costs of the earlier --out.json instead.")
  flags.DEFINE_list("probes", [], "Probe configs (e.g. configs/probes/phone.py) scored on each "
                    "pretrained encoder with jaxssl.evaluate.")
  flags.DEFINE_bool("run_probes", True, "Run the probes; --norun_probes reads their results.json.")
  flags.DEFINE_string("probe_root", "", "Parent of the probe workdirs probe_<task>_<mixer> "
                      "(default: --runs).")
  flags.DEFINE_string("probe_data_dir", "", "TFDS data_dir of the probes (default: --data_dir).")
  flags.DEFINE_list("overrides", [], "Extra --config.* overrides for every run (e.g. "
                    "schedule.warmup_steps=1 for a smoke run).")
  flags.DEFINE_string("out", "experiments/benchmarks/results/mixers_demo",
                      "Output stem for .json and .md; empty: print only.")


METRICS = ("train/loss_contrastive", "train/accuracy", "train/code_perplexity")
# Costs that only the training run measures (kept from the earlier JSON under --notrain).
RUN_COSTS = ("num_params", "flops_per_step", "flops_per_step_per_device", "compile_sec",
             "state_bytes", "temp_bytes_per_device", "mesh", "batch_shape", "wall_s", "cpu_s")
# The headline probe metric per task: (key of results.json "test", column label).
PROBE_METRIC = {"phone": ("per", "PER"), "speaker": ("accuracy", "speaker acc")}


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


def read_run(row, workdir, tail):
  """Adds the training outcome of `workdir`/metrics.jsonl to `row` (a dict); returns it.

  Raises:
    ValueError: the run logged no contrastive loss (not a finished wav2vec 2.0 run).
  """
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    logs = [json.loads(line) for line in f if line.strip()]
  logs = [m for m in logs if "train/loss_contrastive" in m]
  if not logs:
    raise ValueError(f"{path} has no train/loss_contrastive entries.")
  last = logs[-tail:]
  for key in METRICS:
    row[key.split("/")[1]] = float(np.mean([m[key] for m in last]))
  row["steps"] = logs[-1]["step"]
  row["first_loss_contrastive"] = logs[0]["train/loss_contrastive"]
  row["steps_per_sec"] = float(np.median([m["perf/steps_per_sec"] for m in logs[1:] or logs]))
  row["curve"] = [(m["step"], m["train/loss_contrastive"], m["train/accuracy"]) for m in logs]
  return row


def probe_task(config_path):
  """'configs/probes/phone.py' -> 'phone'."""
  return os.path.splitext(os.path.basename(config_path))[0]


def read_probe(probe_dir):
  """The summary of one probe run: task, test and dev metrics, best step, seconds."""
  path = os.path.join(probe_dir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"No probe results at {path}: run the probe (or --run_probes).")
  with open(path) as f:
    r = json.load(f)
  out = {k: r.get(k) for k in ("task", "upstream", "test", "dev", "best_step", "seconds",
                               "chance_accuracy", "num_outputs")}
  out["data_dir"] = r.get("config", {}).get("data", {}).get("data_dir")
  return out


def probe_one(name, workdir, config_path):
  """Runs (or, with --norun_probes, reads) one probe on the encoder in `workdir`."""
  probe_dir = os.path.join(FLAGS.probe_root or FLAGS.runs,
                           f"probe_{probe_task(config_path)}_{name}")
  if FLAGS.run_probes:
    shutil.rmtree(probe_dir, ignore_errors=True)
    _run([sys.executable, "-m", "jaxssl.evaluate", f"--config={config_path}",
          f"--config.upstream={workdir}", f"--workdir={probe_dir}",
          f"--config.data.data_dir={FLAGS.probe_data_dir or FLAGS.data_dir}"])
  return read_probe(probe_dir)


def train_one(name, previous):
  """One mixer's row: trained here, or (--notrain) read back with `previous` row's costs."""
  workdir = os.path.join(FLAGS.runs, name)
  if FLAGS.train:
    config = f"--config=configs/mixers/wav2vec2.py:mixer={name},recipe={FLAGS.recipe}"
    overrides = [f"--config.total_steps={FLAGS.total_steps}",
                 f"--config.log_every_steps={FLAGS.log_every_steps}",
                 f"--config.data.data_dir={FLAGS.data_dir}"]
    overrides += [f"--config.{o}" for o in FLAGS.overrides]
    dry, _, _ = _run([sys.executable, "-m", "jaxssl.main", config, *overrides, "--dry_run"])
    row = dict(mixer=name, **json.loads(dry.strip().splitlines()[-1]))
    shutil.rmtree(workdir, ignore_errors=True)  # Same budget from scratch, never a resume.
    _, row["wall_s"], row["cpu_s"] = _run(
        [sys.executable, "-m", "jaxssl.main", config, *overrides, f"--workdir={workdir}"])
  else:
    if previous is None:
      raise ValueError(f"--notrain needs the costs of mixer {name!r} from {FLAGS.out}.json.")
    row = dict(mixer=name, **{k: previous[k] for k in RUN_COSTS if k in previous})
  read_run(row, workdir, FLAGS.tail)
  if FLAGS.probes:
    row["probes"] = {probe_task(p): probe_one(name, workdir, p) for p in FLAGS.probes}
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
           ""]
  tasks = sorted({t for r in rows for t in r.get("probes", {})})
  if tasks:
    lines += ["Probes (jaxssl.evaluate, frozen upstream: weighted layer sum of the pretrained "
              "encoder; test split, scored at the best dev step): " + "; ".join(
                  f"`configs/probes/{t}.py`" for t in tasks) + _probe_data(rows) + ". "
              + _probe_note(rows, tasks),
              ""]
  heads = [f"{PROBE_METRIC.get(t, ('', t))[1]} (test)" for t in tasks]
  lines += ["| mixer | params | GFLOPs/step | wall s | CPU s | steps/s | loss first -> last "
            "| accuracy | code ppl |" + "".join(f" {h} |" for h in heads),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(tasks)]
  for r in rows:
    cells = [r["mixer"], f"{r['num_params']:,}", f"{r['flops_per_step'] / 1e9:.1f}",
             f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}", f"{r['steps_per_sec']:.2f}",
             f"{r['first_loss_contrastive']:.2f} -> {r['loss_contrastive']:.2f}",
             f"{100 * r['accuracy']:.1f}%", f"{r['code_perplexity']:.0f}"]
    for t in tasks:
      p = r.get("probes", {}).get(t)
      key = PROBE_METRIC.get(t, ("accuracy",))[0]
      cells.append("-" if p is None or key not in p["test"] else f"{100 * p['test'][key]:.1f}%")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _probe_data(rows):
  dirs = sorted({p["data_dir"] for r in rows for p in r.get("probes", {}).values()
                 if p.get("data_dir")})
  return f", data {', '.join(f'`{d}`' for d in dirs)}" if dirs else ""


def _probe_note(rows, tasks):
  """Chance levels and class counts of utterance-level probes, from the first row having them."""
  notes = []
  for t in tasks:
    p = next((r["probes"][t] for r in rows if t in r.get("probes", {})), None)
    if p and p.get("chance_accuracy"):
      notes.append(f"{t}: {p['num_outputs']} classes, chance {100 * p['chance_accuracy']:.1f}%")
    elif p:
      notes.append(f"{t}: {p['num_outputs']} output tokens")
  return ("(" + "; ".join(notes) + ".)") if notes else ""


def main(argv):
  del argv
  meta = dict(date=time.strftime("%Y-%m-%d"), cores=os.cpu_count(),
              load_start=os.getloadavg()[0], recipe=FLAGS.recipe, total_steps=FLAGS.total_steps,
              data_dir=FLAGS.data_dir, tail=FLAGS.tail, log_every_steps=FLAGS.log_every_steps,
              cpu=subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True,
                                 capture_output=True, text=True).stdout.strip() or "unknown")
  previous = {}
  if not FLAGS.train:
    if not FLAGS.out or not os.path.exists(FLAGS.out + ".json"):
      raise ValueError("--notrain needs an earlier --out.json (its training costs are kept).")
    with open(FLAGS.out + ".json") as f:
      earlier = json.load(f)
    meta = dict(earlier["meta"], table_rebuilt=time.strftime("%Y-%m-%d %H:%M"))
    previous = {r["mixer"]: r for r in earlier["rows"]}
  rows = [train_one(name, previous.get(name)) for name in FLAGS.mixers]
  if FLAGS.train:
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
  define_flags()
  app.run(main)
