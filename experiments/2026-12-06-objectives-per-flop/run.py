"""Quality per training FLOP, every objective, one command (issue: the cheapest pretraining
recipes).

  python experiments/2026-12-06-objectives-per-flop/run.py --workdir=workdir/per_flop
  python experiments/2026-12-06-objectives-per-flop/run.py --workdir=workdir/per_flop \
      --seeds=1 --only=wav2vec2,data2vec2,best_rq_conformer      # a second seed

Every objective's demo recipe (the same `demo` encoder size: 3 blocks of 128, 4 heads) trains on
the demo corpus for the same budget of training FLOPs (--budget_tflops; XLA's count of one
train step times the steps), with recipe.py's probes: phone PER at a third, two thirds and all
of the budget; speaker ID on seen and unseen voices and language ID at the end. HuBERT trains two
iterations of half the budget each, less the FLOPs of its k-means stages (MFCC units for
iteration 1; units of iteration 1's layer 2 for iteration 2: that layer's forward pass over the
fitted utterances and k-means' distance computations are counted). Baselines under the same
probe: MFCC (s3prl's) and `random_init` of each architecture. Each stage is skipped when its
output is complete, so re-running the command resumes.

Writes WORKDIR/results.json, results.md and curves.png (phone PER against cumulative training
FLOPs and against training device-hours).
"""
import json
import os
import signal
import sys

from absl import app
from absl import flags
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
# pylint: disable=g-import-not-at-top,wrong-import-position
import stages
from jaxssl import feature_stats
from jaxssl import kmeans
from jaxssl.data import labels as labels_lib
from jaxssl.data import sources

_WORKDIR = flags.DEFINE_string("workdir", "workdir/per_flop", "Where everything goes.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data_dir (built if missing).")
_CORPUS = flags.DEFINE_string("corpus_dir", "data/demo_corpus", "Demo corpus source folder.")
_BUDGET = flags.DEFINE_float("budget_tflops", 12.0, "Training TFLOPs (1e12) per objective.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds.")
_ONLY = flags.DEFINE_list("only", [], "Objectives to run (default: all).")
_BASELINES = flags.DEFINE_bool("baselines", True, "Probe MFCC and random_init too.")
_TRAIN = flags.DEFINE_bool("train", True, "Train (False: report the finished runs, and run "
                           "the baselines, beside a training invocation).")

RECIPE = os.path.join(HERE, "recipe.py")
PROBE = os.path.join(HERE, "probe.py")
OBJECTIVES = ("wav2vec2", "hubert", "melhubert", "best_rq_conformer", "data2vec2",
              "best_rq_transformer")
FINAL = ("speaker", "speaker_unseen", "language")
PROBES = {"phone": "task=phone", "speaker": "task=speaker",
          "speaker_unseen": "task=speaker,speakers=unseen", "language": "task=language"}
K = 100  # Clusters of every k-means codebook.
# Test phone PER of the 20,000-step wav2vec 2.0 demo model (164 TFLOPs of training), measured
# with the full 2,000-step probe (experiments/2026-11-w2v2-demo-long): the second
# target. This table's probes are shorter (500 steps), so the comparison is approximate.
W2V2_20K_PER = 0.366


def log(msg):
  print(f"[per_flop] {msg}", flush=True)


def sh(*cmd, capture=False):
  return stages.sh(*cmd, capture=capture, prefix="per_flop")


def recipe_spec(recipe, **args):
  return f"{RECIPE}:recipe={recipe}," + ",".join(f"{k}={v}" for k, v in args.items())


def flops_per_step(workdir, recipe):
  """XLA's FLOPs of one train step (the trainer's own `--dry_run`), cached in flops.json."""
  path = os.path.join(workdir, "flops.json")
  cache = json.load(open(path)) if os.path.exists(path) else {}
  if recipe not in cache:
    spec = recipe_spec(recipe, steps=1000, phone_every=1000)
    out = sh(sys.executable, "-m", "jaxssl.main", f"--config={spec}",
             f"--workdir={os.path.join(workdir, 'dry_run')}", "--dry_run",
             f"--config.data.data_dir={_DATA_DIR.value}", capture=True)
    report = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    cache[recipe] = dict(flops_per_step=report["flops_per_step"],
                         num_params=report["num_params"])
    with open(path, "w") as f:
      json.dump(cache, f, indent=2)
  return cache[recipe]


def ensure_data():
  """The demo corpus and its TFDS build, unless present."""
  if os.path.isdir(os.path.join(_DATA_DIR.value, "demo_corpus")):
    return
  if not os.path.exists(os.path.join(_CORPUS.value, "meta.json")):
    sh(sys.executable, "-m", "jaxssl.data.demo_corpus", f"--out={_CORPUS.value}")
  sh(sys.executable, "-m", "jaxssl.data.build", "--dataset=demo_corpus",
     f"--source={_CORPUS.value}", f"--data_dir={_DATA_DIR.value}")


def ensure_labels(name_or_dir, **kwargs):
  """A k-means label set over train and dev (fit on half of train), made unless complete."""
  path = sources.open_source("demo_corpus", data_dir=_DATA_DIR.value, split="train").path
  directory = labels_lib.resolve(name_or_dir, path)
  meta_path = os.path.join(directory, labels_lib.META)
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      return dict(json.load(f), directory=directory)
  return kmeans.run(dataset="demo_corpus", data_dir=_DATA_DIR.value, out=directory,
                    splits=("train", "dev"), num_clusters=K, seed=0, fraction=0.5,
                    overwrite=True, log=log, **kwargs)


def kmeans_flops(meta, forward_flops_per_frame=0.0):
  """FLOPs of a k-means stage (an estimate): the features of the fitted frames (a model's
  forward pass; MFCC / fbank extraction is left out, < 1e9), ~5 K D per point of each
  k-means++ start's sample (seeding and its validation inertia), 3 K D per point and step of
  the mini-batch fit (distances and assignment) and 2 K D per labelled frame."""
  fit = meta["fit"]
  labelled = sum(q["num_frames"] for q in meta["quality"].values())
  dim = np.load(os.path.join(meta["directory"], "codebook.npy")).shape[1]
  return (fit["num_points"] * forward_flops_per_frame
          + 5 * K * dim * fit["num_init"] * min(fit["num_points"], 3 * fit["batch_size"])
          + 3 * K * dim * fit["num_steps"] * fit["batch_size"]
          + 2 * K * dim * labelled)


def train(workdir, recipe, steps, phone_every, seed, final=True, extra=()):
  """A training run with recipe.py's probes; resumes from its checkpoint, skipped when done."""
  spec = recipe_spec(recipe, steps=steps, phone_every=phone_every, seed=seed, final=final)
  stages.train_once(workdir, spec, steps, f"--config.data.data_dir={_DATA_DIR.value}", *extra,
                    prefix="per_flop")
  return stages.read_evals(workdir)


def finished(name, seed):
  """Whether an objective's training (HuBERT: its second iteration) is complete."""
  out = os.path.join(_WORKDIR.value, f"{name}_seed{seed}", *(["iter2"] if name == "hubert" else []))
  return os.path.exists(os.path.join(out, "DONE"))


def run_objective(name, seed, budget):
  """Trains one objective for `budget` FLOPs; returns its curve [{flops, device_hours, ...}]."""
  out = os.path.join(_WORKDIR.value, f"{name}_seed{seed}")
  if name != "hubert":
    fps = flops_per_step(_WORKDIR.value, name)["flops_per_step"]
    steps = max(3, round(budget / fps))
    extra = []
    if name == "melhubert":
      stats = feature_stats.resolve("fbank40", sources.open_source(
          "demo_corpus", data_dir=_DATA_DIR.value, split="train").path)
      if not os.path.exists(stats):
        sh(sys.executable, "-m", "jaxssl.feature_stats", "--dataset=demo_corpus",
           f"--data_dir={_DATA_DIR.value}", "--split=train", "--features=fbank",
           "--num_mels=40")
      meta = ensure_labels(f"km{K}_fbank", features="fbank", stats="fbank40")
      extra = [f"--config.data.labels={meta['directory']}"]
      offset = kmeans_flops(meta)
      steps = max(3, round((budget - offset) / fps))
    else:
      offset = 0.0
    curve = train(out, name, steps, max(1, steps // 3), seed, extra=extra)
    for r in curve:
      r["flops"] += offset
    return curve
  # HuBERT: MFCC k-means, iteration 1, k-means of its layer 2, iteration 2 (half each).
  fps = flops_per_step(_WORKDIR.value, "hubert_it2")["flops_per_step"]
  mfcc = ensure_labels(f"km{K}_mfcc", features="mfcc")
  steps1 = max(3, round((budget / 2 - kmeans_flops(mfcc)) / fps))
  it1 = os.path.join(out, "iter1")
  curve1 = train(it1, "hubert_it1", steps1, steps1, seed, final=False,
                 extra=[f"--config.data.labels={mfcc['directory']}"])
  layer = ensure_labels(os.path.join(out, "labels", f"km{K}_it1"), features="layer",
                        checkpoint=it1, layer=2)
  # Layer-2 features: a forward pass, ~1/3 of a train step's FLOPs per frame (8 x 100 frames).
  spent = kmeans_flops(mfcc) + steps1 * fps + kmeans_flops(layer, fps / 3 / 800)
  steps2 = max(3, round((budget - spent) / fps))
  curve2 = train(os.path.join(out, "iter2"), "hubert_it2", steps2, max(1, steps2 // 2), seed,
                 extra=[f"--config.data.labels={layer['directory']}"])
  hours1 = curve1[-1]["device_hours"]
  for r in curve1:
    r["flops"] += kmeans_flops(mfcc)
  for r in curve2:
    r["flops"] += spent
    r["device_hours"] += hours1
  return curve1 + curve2


def baseline(name, upstream, arch="", tasks=tuple(PROBES)):
  """One probe of a baseline upstream (MFCC, random_init of `arch`) per task; test metrics."""
  out = {}
  for task in tasks:
    wd = os.path.join(_WORKDIR.value, "baselines", name, task)
    path = os.path.join(wd, "results.json")
    if not os.path.exists(path):
      sh(sys.executable, "-m", "jaxssl.evaluate", f"--config={PROBE}:{PROBES[task]}",
         f"--workdir={wd}", f"--config.data.data_dir={_DATA_DIR.value}",
         f"--config.upstream={upstream}", *([f"--config.upstream_arch={arch}"] if arch else []))
    with open(path) as f:
      out[task] = json.load(f)["test"]
  return out


def crossing(curve, per):
  """The first eval point (flops, device-hours) whose phone PER is at or below `per`."""
  for r in curve:
    if "phone" in r and r["phone"]["per"] <= per:
      return r["flops"], r["device_hours"]
  return None, None


def main(argv):
  del argv
  signal.signal(signal.SIGTERM, lambda s, f: sys.exit(f"[per_flop] stopped by signal {s}"))
  os.makedirs(_WORKDIR.value, exist_ok=True)
  ensure_data()
  budget = _BUDGET.value * 1e12
  names = [n for n in OBJECTIVES if not _ONLY.value or n in _ONLY.value]
  results_path = os.path.join(_WORKDIR.value, "results.json")
  results = json.load(open(results_path)) if os.path.exists(results_path) else {}
  results.setdefault("runs", {})
  results["budget_flops"] = budget
  for name in names:
    for seed in map(int, _SEEDS.value):
      if _TRAIN.value:
        results["runs"][f"{name}/seed{seed}"] = run_objective(name, seed, budget)
      elif finished(name, seed):  # Every stage done: run_objective only reads it back.
        results["runs"][f"{name}/seed{seed}"] = run_objective(name, seed, budget)
      with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
  if _BASELINES.value:
    results["baselines"] = {"mfcc": baseline("mfcc", "mfcc")}
    # A random encoder of each architecture (HuBERT's is wav2vec 2.0's): does training keep
    # what random features already carry? Language ID left out (it costs a probe per row).
    for name in dict.fromkeys("wav2vec2" if n == "hubert" else n for n in names):
      results["baselines"][f"random_init/{name}"] = baseline(
          f"random_init_{name}", "random_init", recipe_spec(name, steps=1000, phone_every=1000),
          tasks=("phone", "speaker", "speaker_unseen"))
  results["flops"] = json.load(open(os.path.join(_WORKDIR.value, "flops.json")))
  with open(results_path, "w") as f:
    json.dump(results, f, indent=2)
  write_report(results)


def write_report(results):
  """results.md (one row per run) and curves.png."""
  mfcc = results.get("baselines", {}).get("mfcc", {})
  mfcc_per = mfcc.get("phone", {}).get("per")
  lines = ["| objective | seed | params | TFLOPs | CPU-h | phone PER | speaker (seen) | "
           "speaker (unseen) | language | TFLOPs / CPU-h to MFCC's PER | TFLOPs / CPU-h to "
           "36.6% (w2v2 20k) |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
  reach = lambda f_h: "not reached" if f_h[0] is None else f"{f_h[0] / 1e12:.1f} / {f_h[1]:.3f}"
  for key, curve in results["runs"].items():
    name, seed = key.split("/")
    last = dict(curve[-1])  # Each task's latest probe (phone's last may be a step earlier).
    for r in curve:
      last.update({k: v for k, v in r.items() if isinstance(v, dict)})
    info = results["flops"].get("hubert_it2" if name == "hubert" else name, {})
    cross = reach(crossing(curve, mfcc_per) if mfcc_per is not None else (None, None))
    cross += " | " + reach(crossing(curve, W2V2_20K_PER))
    pct = lambda task, m: f"{100 * last[task][m]:.1f}" if task in last else "-"
    lines.append(f"| {name} | {seed[4:]} | {info.get('num_params', 0):,} | "
                 f"{last['flops'] / 1e12:.1f} | {last['device_hours']:.3f} | "
                 f"{pct('phone', 'per')} | {pct('speaker', 'accuracy')} | "
                 f"{pct('speaker_unseen', 'accuracy')} | {pct('language', 'accuracy')} | "
                 f"{cross} |")
  for name, b in results.get("baselines", {}).items():
    acc = lambda task: f"{100 * b[task]['accuracy']:.1f}" if task in b else "-"
    lines.append(f"| {name} | - | - | 0 | 0 | {100 * b['phone']['per']:.1f} | "
                 f"{acc('speaker')} | {acc('speaker_unseen')} | {acc('language')} | - | - |")
  with open(os.path.join(_WORKDIR.value, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  log("\n" + "\n".join(lines))
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for key, curve in results["runs"].items():
    pts = [r for r in curve if "phone" in r]
    for ax, x in zip(axes, ("flops", "device_hours")):
      scale = 1e12 if x == "flops" else 1.0
      ax.plot([r[x] / scale for r in pts], [100 * r["phone"]["per"] for r in pts],
              marker="o", label=key)
  for ax, label in zip(axes, ("cumulative training TFLOPs", "training CPU-hours (2 cores)")):
    if mfcc_per is not None:
      ax.axhline(100 * mfcc_per, color="gray", ls="--", label="MFCC")
    ax.set_xlabel(label)
    ax.set_ylabel("phone PER % (test)")
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(_WORKDIR.value, "curves.png"), dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  app.run(main)
