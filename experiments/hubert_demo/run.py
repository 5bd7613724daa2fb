"""The HuBERT recipe on the demo corpus in one command: MFCC units -> iteration 1 -> units of a
layer of iteration 1 -> iteration 2, with the cluster quality of each codebook.

  python experiments/hubert_demo/run.py --workdir=workdir/hubert_demo

Stages (HuBERT §3.3, https://arxiv.org/abs/2106.07447), each skipped when its output is complete,
so re-running the same command after an interruption (Ctrl-C, kill, preemption) resumes where it
stopped; the two trainings resume from their own checkpoints:
  0. the demo corpus and its TFDS build (if `--data_dir` has none);
  1. k-means (K = --num_clusters) on MFCC-39 at 100 Hz -> label set "km<K>_mfcc" beside the
     dataset (deterministic for a seed, so it is shared by every run of this recipe);
  2. iteration 1: configs/hubert/demo.py:iteration=1 on those labels -> WORKDIR/iter1;
  3. k-means on layer --layer of iteration 1 at 50 Hz -> WORKDIR/labels/km<K>_it1;
  4. iteration 2: configs/hubert/demo.py:iteration=2 on those labels -> WORKDIR/iter2;
  5. k-means on the same layer of iteration 2 -> WORKDIR/labels/km<K>_it2 (what an iteration 3
     would train on), to see whether the units keep improving;
  6. WORKDIR/results.json and results.md (PNMI and purities of the three codebooks on train and
     dev, final losses) and WORKDIR/curves.png (both trainings).
Extra arguments after `--` go to both trainings, e.g. `-- --config.total_steps=200`.
"""
import json
import os
import signal
import subprocess
import sys

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import kmeans
from jaxssl.data import labels as labels_lib
from jaxssl.training import plots

_WORKDIR = flags.DEFINE_string("workdir", "workdir/hubert_demo", "Where everything goes.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data_dir (built if missing).")
_CORPUS = flags.DEFINE_string("corpus_dir", "data/demo_corpus", "Demo corpus source folder.")
_K = flags.DEFINE_integer("num_clusters", 100, "K of both codebooks.")
_LAYER = flags.DEFINE_integer("layer", 2, "Layer of iteration 1 clustered for iteration 2.")
_FRACTION = flags.DEFINE_float("fraction", 0.5, "Share of train utterances k-means fits on.")
_SEED = flags.DEFINE_integer("seed", 0, "k-means seed.")


def log(msg):
  print(f"[hubert_demo] {msg}", flush=True)


def sh(*cmd):
  """Runs a stage; SIGTERM or Ctrl-C reach the child (a training saves a checkpoint) first."""
  log(" ".join(cmd))
  child = subprocess.Popen(cmd, cwd=REPO)
  try:
    code = child.wait()
  except BaseException:
    child.send_signal(signal.SIGTERM)
    child.wait()
    raise
  if code:
    raise subprocess.CalledProcessError(code, cmd)


def ensure_data(data_dir, corpus_dir):
  """Stage 0: synthesise and build the demo corpus unless the build exists."""
  if os.path.isdir(os.path.join(data_dir, "demo_corpus")):
    return
  if not os.path.exists(os.path.join(corpus_dir, "meta.json")):
    sh(sys.executable, "-m", "jaxssl.data.demo_corpus", f"--out={corpus_dir}")
  sh(sys.executable, "-m", "jaxssl.data.build", "--dataset=demo_corpus", f"--source={corpus_dir}",
     f"--data_dir={data_dir}")


def ensure_labels(name_or_dir, *, data_dir, expect, **kwargs):
  """Stages 1 and 3: a label set, made unless complete; returns its meta.json contents."""
  from jaxssl.data import sources  # pylint: disable=g-import-not-at-top
  path = sources.open_source("demo_corpus", data_dir=data_dir, split="train").path
  directory = labels_lib.resolve(name_or_dir, path)
  meta_path = os.path.join(directory, labels_lib.META)
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    if any(meta.get(k) != v for k, v in expect.items()):
      raise ValueError(f"{directory} holds another label set ({ {k: meta.get(k) for k in expect} }"
                       f" != {expect}); remove it or pick other flags.")
    log(f"labels {directory}: done (PNMI dev {meta['quality']['dev']['pnmi']:.3f})")
    return dict(meta, directory=directory)
  return kmeans.run(dataset="demo_corpus", data_dir=data_dir, out=directory,
                    splits=("train", "dev"), overwrite=True, log=log, **expect, **kwargs)


def ensure_trained(config_arg, workdir, labels_dir, extra):
  """Stages 2 and 4: the trainer resumes from its latest checkpoint by itself."""
  done = os.path.join(workdir, "DONE")
  if os.path.exists(done):
    log(f"{workdir}: done")
    return
  sh(sys.executable, "-m", "jaxssl.main", f"--config=configs/hubert/demo.py:{config_arg}",
     f"--workdir={workdir}", f"--config.data.data_dir={_DATA_DIR.value}",
     f"--config.data.labels={os.path.abspath(labels_dir)}", *extra)
  # A trainer stopped by SIGTERM saves and exits cleanly: only a finished run counts as done.
  with open(os.path.join(workdir, "config.json")) as f:
    total = json.load(f)["total_steps"]
  step = plots.read_metrics(workdir)[-1]["step"]
  if step < total:
    raise SystemExit(f"[hubert_demo] {workdir} stopped at step {step} of {total}; re-run the "
                     "command to resume.")
  with open(done, "w") as f:
    f.write("finished\n")


def last_metrics(workdir):
  rows = plots.read_metrics(workdir)
  keep = ("train/loss", "train/loss_masked", "train/accuracy_masked", "train/accuracy_unmasked")
  return dict(step=rows[-1]["step"], **{k.split("/")[1]: rows[-1][k] for k in keep})


def plot(workdir, runs):
  """Masked-frame loss and accuracy of both iterations against the step."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for name, run_dir in runs:
    rows = plots.read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, [r["train/loss_masked"] for r in rows], label=name)
    axes[1].plot(steps, [r["train/accuracy_masked"] for r in rows], label=name)
  for ax, title in zip(axes, ("Masked-frame loss (nats)", "Masked-frame accuracy")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  out = os.path.join(workdir, "curves.png")
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def _stop(signum, frame):
  del frame
  raise SystemExit(f"[hubert_demo] stopped by signal {signum}; re-run the command to resume.")


def main(argv):
  signal.signal(signal.SIGTERM, _stop)
  extra = argv[1:]
  workdir = os.path.abspath(_WORKDIR.value)
  data_dir, k = _DATA_DIR.value, _K.value
  os.makedirs(workdir, exist_ok=True)
  ensure_data(data_dir, _CORPUS.value)
  common = dict(num_clusters=k, seed=_SEED.value, fraction=_FRACTION.value)
  mfcc = ensure_labels(f"km{k}_mfcc", data_dir=data_dir, expect=dict(features="mfcc", **common))
  it1 = os.path.join(workdir, "iter1")
  ensure_trained("iteration=1", it1, mfcc["directory"],
                 [f"--config.objective.num_clusters={k}", *extra])
  layer = ensure_labels(os.path.join(workdir, "labels", f"km{k}_it1"), data_dir=data_dir,
                        checkpoint=it1, expect=dict(features="layer", layer=_LAYER.value, **common))
  it2 = os.path.join(workdir, "iter2")
  ensure_trained("iteration=2", it2, layer["directory"],
                 [f"--config.objective.num_clusters={k}", *extra])
  # The units iteration 2 learned, as an iteration 3 would use them: does PNMI keep rising?
  units2 = ensure_labels(os.path.join(workdir, "labels", f"km{k}_it2"), data_dir=data_dir,
                         checkpoint=it2, expect=dict(features="layer", layer=_LAYER.value,
                                                     **common))

  results = dict(
      codebooks={name: dict(features=m["features"], layer=m["layer"], label_rate=m["label_rate"],
                            directory=m["directory"], quality=m["quality"])
                 for name, m in (("mfcc", mfcc), ("iteration1_layer", layer),
                                 ("iteration2_layer", units2))},
      training={"iteration1": last_metrics(it1), "iteration2": last_metrics(it2)},
      curves=plot(workdir, (("iteration 1 (MFCC units)", it1),
                            (f"iteration 2 (layer-{_LAYER.value} units)", it2))))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  lines = ["| codebook | split | frames | phone purity | cluster purity | PNMI |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name, cb in results["codebooks"].items():
    for split, q in cb["quality"].items():
      lines.append(f"| {name} ({cb['label_rate']} Hz) | {split} | {q['num_frames']:,} | "
                   f"{q['phone_purity']:.3f} | {q['cluster_purity']:.3f} | {q['pnmi']:.3f} |")
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  log("\n" + "\n".join(lines))
  dev = {n: cb["quality"]["dev"]["pnmi"] for n, cb in results["codebooks"].items()}
  log(f"dev PNMI: MFCC {dev['mfcc']:.3f} -> iteration-1 layer {_LAYER.value} "
      f"{dev['iteration1_layer']:.3f} -> iteration-2 layer {_LAYER.value} "
      f"{dev['iteration2_layer']:.3f}; results in {workdir}")


if __name__ == "__main__":
  app.run(main)
