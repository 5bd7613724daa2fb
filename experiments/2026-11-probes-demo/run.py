"""SUPERB-style probes on the demo corpus: MFCC / fbank baselines, random_init, a checkpoint.

  python experiments/2026-11-probes-demo/run.py --data_dir=data/tfds \
      --checkpoint=workdir/w2v2_demo --out=experiments/2026-11-probes-demo

Each (task, upstream) pair is trained at every learning rate of its grid (SUPERB tunes only the
probe's learning rate per upstream) and the rate with the best dev score is reported on test.
One process per upstream, so its features are computed once and shared by every task and rate
(each single run is what `python -m jaxssl.evaluate --config=configs/probes/<task>.py
--config.upstream=<upstream> --config.optim.lr=<lr>` does). Writes runs/<task>/<upstream>/
lr<lr>/ (results.json, results.md, layer_weights.png) and summary.json / summary.md.
"""
import glob
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from jaxssl import pretrained
from jaxssl.evaluation import probing  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.evaluation import upstreams  # pylint: disable=g-import-not-at-top,wrong-import-position

_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data_dir with demo_corpus.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "workdir/w2v2_demo", "Pretrained run dir.")
_LABEL = flags.DEFINE_string("label", "w2v2_demo", "The checkpoint's name in runs/ and the table.")
_OUT = flags.DEFINE_string("out", os.path.dirname(os.path.abspath(__file__)), "Output dir.")
_UPSTREAMS = flags.DEFINE_list("upstreams", ["mfcc", "mfcc_no_cmvn", "random_init",
                                             "checkpoint"], "Upstreams to probe.")
_TASKS = flags.DEFINE_list("tasks", ["phone", "speaker", "language"], "Probe tasks.")
_SUMMARY_ONLY = flags.DEFINE_bool("summary_only", False, "Only rebuild summary.*.")

LR_GRID = {"phone": (1e-2, 1e-3), "speaker": (1e-2, 1e-3), "language": (1e-2, 1e-3),
           "asr": (1e-3,)}
SKIP = {("phone", "mfcc_no_cmvn"), ("asr", "mfcc_no_cmvn"), ("asr", "random_init")}


class MemoUpstream:
  """An upstream whose features are kept per batch (same loader seed: same batches per run)."""

  def __init__(self, upstream):
    self.upstream, self.memo = upstream, {}
    for k in ("name", "num_hidden", "dim", "frame_rate", "normalize", "config"):
      setattr(self, k, getattr(upstream, k))

  def __call__(self, batch):
    key = (batch["audio"].shape, tuple(int(i) for i in batch["index"]))
    if key not in self.memo:
      self.memo[key] = self.upstream(batch)
    return self.memo[key]


def _config(task, upstream, lr):
  config = pretrained.load_config(f"configs/probes/{task}.py")
  with config.unlocked():
    config.upstream = upstream
    config.data.data_dir = _DATA_DIR.value
    config.optim.lr = lr
  return config


def summarize(out):
  """summary.json / summary.md: per (task, upstream) the best-dev learning rate's scores."""
  rows = {}
  for path in sorted(glob.glob(os.path.join(out, "runs", "*", "*", "lr*", "results.json"))):
    with open(path) as f:
      r = json.load(f)
    task, name = path.split(os.sep)[-4:-2]
    metric = {"phone": "per", "asr": "wer"}.get(task, "accuracy")
    better = (lambda a, b: a < b) if metric in ("per", "wer") else (lambda a, b: a > b)
    r["lr"], r["upstream_name"] = r["config"]["optim"]["lr"], name
    best = rows.get((task, name))
    if best is None or better(r["dev"][metric], best["dev"][metric]):
      rows[(task, name)] = r
  table = ["| task | upstream | lr | dev | test | chance | layer weights (0 = CNN/input) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  summary = []
  for (task, name), r in sorted(rows.items()):
    metric = {"phone": "per", "asr": "wer"}.get(task, "accuracy")
    chance = f"{100 * r['chance_accuracy']:.1f}" if r["chance_accuracy"] else "100 (empty)"
    weights = " ".join(f"{w:.2f}" for w in r["layer_weights"])
    extra = f" (CER {100 * r['test']['cer']:.1f})" if task == "asr" else ""
    table.append(f"| {task} | {name} | {r['lr']:g} | {metric.upper()} "
                 f"{100 * r['dev'][metric]:.1f} | {metric.upper()} {100 * r['test'][metric]:.1f}"
                 f"{extra} | {chance} | {weights} |")
    summary.append(dict(task=task, upstream=name, lr=r["lr"], dev=r["dev"], test=r["test"],
                        chance_accuracy=r["chance_accuracy"], layer_weights=r["layer_weights"],
                        best_step=r["best_step"], utterances=r["utterances"],
                        seconds=r["seconds"]))
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(table) + "\n")
  print("\n".join(table))


def main(argv):
  del argv
  out = _OUT.value
  if not _SUMMARY_ONLY.value:
    for name in _UPSTREAMS.value:
      spec = _CHECKPOINT.value if name == "checkpoint" else name
      # random_init: the checkpoint's architecture, untrained.
      up = MemoUpstream(upstreams.load(spec, arch=_CHECKPOINT.value, seed=0))
      label = _LABEL.value if name == "checkpoint" else name
      for task in _TASKS.value:
        if (task, name) in SKIP:
          continue
        for lr in LR_GRID[task]:
          workdir = os.path.join(out, "runs", task, label, f"lr{lr:g}")
          if os.path.exists(os.path.join(workdir, "results.json")):
            continue  # Finished earlier: rerunning the script resumes the grid.
          r = probing.run(_config(task, spec, lr), workdir, upstream=up)
          print(json.dumps({k: r[k] for k in ("task", "upstream", "dev", "test")}), flush=True)
  summarize(out)


if __name__ == "__main__":
  app.run(main)
