"""Compression on the demo corpus in one command: DistilHuBERT and LightHuBERT from the demo
HuBERT, probed next to the teacher and MFCC, with sizes and CPU speed (demo and real sizes).

  python experiments/distill_demo/run.py --workdir=workdir/distill_demo \
      --teacher=workdir/hubert_demo/iter2

Stages, each skipped when its output exists (re-run the command to resume):
  1. DistilHuBERT student: configs/distill/demo.py (2 layers, predicting teacher layers 1, 2, 3)
     -> WORKDIR/student;
  2. LightHuBERT supernet: configs/distill/lighthubert.py:space=demo -> WORKDIR/supernet, then
     its "default" (96-d, 3 heads of 32, FFN 288, 2 layers) and "smallest" (64-d, 2 heads, FFN
     128, 2 layers) subnets extracted -> WORKDIR/subnet_{default,smallest};
  3. phone and speaker probes of the teacher, the student, both subnets and MFCC, each trained
     for --probe_steps steps -> WORKDIR/probes/<task>_<model>;
  4. encoder parameters and CPU inference time on 10 s of audio, demo models ("speed_demo") and
     the reference sizes with random weights ("speed_real"), experiments/distill_demo/speed.py
     -> WORKDIR/speed.json;
  5. experiments/distill_demo/results.json and results.md.
"""
import json
import os
import subprocess
import sys

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
# pylint: disable=g-import-not-at-top,wrong-import-position
import speed
from jaxssl import pretrained

_WORKDIR = flags.DEFINE_string("workdir", "workdir/distill_demo", "Where the runs go.")
_TEACHER = flags.DEFINE_string("teacher", "workdir/hubert_demo/iter2", "The demo teacher.")
_RUNS = flags.DEFINE_integer("timing_runs", 5, "Timed runs per model (median).")
_PROBE_STEPS = flags.DEFINE_integer("probe_steps", 1000, "Probe training steps (every model "
                                    "alike; the probe configs' defaults are 3,000 / 2,000).")
_STAGES = flags.DEFINE_list("stages", ["train", "probes", "speed_demo", "speed_real", "table"],
                            "Stages to run.")
_ONLY = flags.DEFINE_list("probe_models", [], "Probe only these models (default: all).")
SUBNETS = ("default", "smallest")
TASKS = ("phone", "speaker")


def log(msg):
  print(f"[distill_demo] {msg}", flush=True)


def sh(*cmd):
  log(" ".join(cmd))
  subprocess.run(cmd, cwd=REPO, check=True)


def trained(workdir):
  """Whether a run reached its total_steps (metrics.jsonl's last step)."""
  path = os.path.join(REPO, workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return False
  with open(os.path.join(REPO, workdir, "config.json")) as f:
    total = json.load(f)["total_steps"]
  with open(path) as f:
    rows = [json.loads(l) for l in f if l.strip()]
  return bool(rows) and rows[-1]["step"] >= total


def upstream_paths(w, only=None):
  paths = {"teacher": _TEACHER.value, "student": f"{w}/student",
           **{f"lighthubert_{s}": f"{w}/subnet_{s}" for s in SUBNETS}, "mfcc": "mfcc"}
  return {k: v for k, v in paths.items() if not only or k in only}


def stage_train(w):
  teacher = f"--config.distill.teacher={_TEACHER.value}"
  if not trained(f"{w}/student"):
    sh(sys.executable, "-m", "jaxssl.main", "--config=configs/distill/demo.py",
       f"--workdir={w}/student", teacher)
  if not trained(f"{w}/supernet_stage1"):  # LightHuBERT stage 1: the full supernet.
    sh(sys.executable, "-m", "jaxssl.main",
       "--config=configs/distill/lighthubert.py:space=demo,stage=1",
       f"--workdir={w}/supernet_stage1", teacher)
  if not trained(f"{w}/supernet"):  # Stage 2: a fresh subnet every step, from stage 1.
    sh(sys.executable, "-m", "jaxssl.main",
       f"--config=configs/distill/lighthubert.py:space=demo,stage=2,stage1={w}/supernet_stage1",
       f"--workdir={w}/supernet", teacher)
  for s in SUBNETS:
    if not os.path.exists(os.path.join(REPO, w, f"subnet_{s}", "config.json")):
      sh(sys.executable, "-m", "jaxssl.distill.extract_subnet", f"--supernet={w}/supernet",
         f"--subnet={s}", f"--output={w}/subnet_{s}")


def stage_probes(w):
  for name, path in upstream_paths(w, _ONLY.value).items():
    for task in TASKS:
      out = f"{w}/probes/{task}_{name}"
      if not os.path.exists(os.path.join(REPO, out, "results.json")):
        sh(sys.executable, "-m", "jaxssl.evaluate", f"--config=configs/probes/{task}.py",
           f"--config.upstream={path}", f"--workdir={out}",
           f"--config.total_steps={_PROBE_STEPS.value}",
           f"--config.eval_every_steps={_PROBE_STEPS.value // 4}")


def stage_speed(w, which):
  """CPU timing of the demo models ("demo") or of the reference sizes ("real") -> speed.json."""
  path = os.path.join(REPO, w, "speed.json")
  out = {}
  if os.path.exists(path):
    with open(path) as f:
      out = json.load(f)
  if which == "demo":
    models = {name: pretrained.load_checkpoint(os.path.join(REPO, p))
              for name, p in upstream_paths(w).items() if name != "mfcc"}
    out["demo"] = speed.relative(speed.measure(models, runs=_RUNS.value), "teacher")
  else:
    out["real"] = speed.relative(speed.measure(speed.real_size_models(), runs=_RUNS.value),
                                 "HuBERT BASE (teacher)")
  out.update(seconds_of_audio=10.0, runs=_RUNS.value)
  with open(path, "w") as f:
    json.dump(out, f, indent=1)


def probe_result(w, task, name):
  path = os.path.join(REPO, w, "probes", f"{task}_{name}", "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    r = json.load(f)
  return dict(test=r["test"], dev=r["dev"], best_step=r["best_step"],
              layer_weights=r["layer_weights"])


def stage_table(w):
  with open(os.path.join(REPO, w, "speed.json")) as f:
    timing = json.load(f)
  out = dict(teacher=_TEACHER.value, timing=timing,
             probes={name: {t: probe_result(w, t, name) for t in TASKS}
                     for name in upstream_paths(w)})
  for name in ("student", "supernet"):
    with open(os.path.join(REPO, w, name, "metrics.jsonl")) as f:
      rows = [json.loads(l) for l in f if l.strip()]
    out[f"{name}_final"] = {k: v for k, v in rows[-1].items() if k.startswith("train/")}
  with open(os.path.join(HERE, "results.json"), "w") as f:
    json.dump(out, f, indent=1)
  with open(os.path.join(HERE, "results.md"), "w") as f:
    f.write(render(out))
  log(f"wrote {HERE}/results.md")


def _pct(x):
  """A change as +/-N%, 0 shown as a dash (the reference row)."""
  return "-" if abs(x) < 1e-12 else f"{x:+.0%}"


def _fmt(x, spec):
  return "-" if x is None else format(x, spec)


def render(out):
  """The markdown tables of results.json."""
  demo, real = out["timing"]["demo"], out["timing"]["real"]
  lines = ["# Compression on the demo corpus", "",
           f"Teacher: `{out['teacher']}` (demo HuBERT iteration 2: 3 pre-LN layers, 128-d). "
           "Probes: configs/probes/{phone,speaker}.py on the demo corpus, test split at the best "
           "dev step (PER: lower is better; speaker accuracy: higher is better). Parameters: the "
           "encoder only, no head. MMACs/s: multiply-adds of the forward per second of speech "
           "(XLA's count). CPU time: `represent` on one 10 s utterance, median of "
           f"{out['timing']['runs']} interleaved runs on this shared 2-core machine (loaded by "
           "other jobs: compare within a table, not across runs).", "",
           "| model | encoder params | vs teacher | MMACs/s | vs teacher | CPU ms / 10 s | "
           "vs teacher | speed-up | phone PER | speaker acc |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for name, probes in out["probes"].items():
    row = demo.get(name)
    phone = (probes["phone"] or {}).get("test", {})
    spk = (probes["speaker"] or {}).get("test", {})
    cells = ["-"] * 7 if row is None else [
        f"{row['params']:,}", _pct(-row["param_reduction"]),
        f"{row['macs_per_sec'] / 1e6:.1f}", _pct(-row["macs_reduction"]),
        f"{row['median_sec'] * 1e3:.1f}", _pct(-row["time_reduction"]),
        f"{row['speedup']:.2f}x"]
    lines.append(f"| {name} | " + " | ".join(cells) +
                 f" | {_fmt(phone.get('per'), '.3f')} | {_fmt(spk.get('accuracy'), '.3f')} |")
  lines += ["", "Reference sizes, random weights (the papers: DistilHuBERT -75% parameters and "
            "73% faster than HuBERT BASE; LightHuBERT Base default subnet -29% parameters):", "",
            "| model | encoder params | vs HuBERT BASE | GMACs/s | vs HuBERT BASE | "
            "CPU ms / 10 s | time vs HuBERT BASE | speed-up |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for name, row in real.items():
    lines.append(f"| {name} | {row['params']:,} | {-row['param_reduction']:+.1%} | "
                 f"{row['macs_per_sec'] / 1e9:.2f} | {-row['macs_reduction']:+.1%} | "
                 f"{row['median_sec'] * 1e3:.0f} | {-row['time_reduction']:+.1%} | "
                 f"{row['speedup']:.2f}x |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  w = _WORKDIR.value
  stages = set(_STAGES.value)
  if "train" in stages:
    stage_train(w)
  if "probes" in stages:
    stage_probes(w)
  for which in ("demo", "real"):
    if f"speed_{which}" in stages:
      stage_speed(w, which)
  if "table" in stages:
    stage_table(w)


if __name__ == "__main__":
  app.run(main)
