"""Training curves from a run's metrics.jsonl, as one PNG.

  python -m jaxssl.training.plots --workdir=workdir/w2v2_demo [--out=curves.png]

Plots, against the step, each panel the run logged: the losses, the accuracies (a contrastive
run's with chance level 1/(K+1) when the config is saved beside the run), wav2vec 2.0's two
codebook perplexities, and the in-training probes of `evals.jsonl` (test split), so a HuBERT,
MelHuBERT, BEST-RQ or data2vec 2.0 run gets the panels it has.
"""
import json
import os

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxssl import cli

PANELS = (
    ("Loss (nats)", ("train/loss", "train/loss_contrastive", "train/loss_unmasked")),
    ("Accuracy", ("train/accuracy", "train/accuracy_masked", "train/accuracy_unmasked")),
    ("Codebook perplexity", ("train/code_perplexity", "train/prob_perplexity")),
)
PROBE_METRICS = ("per", "accuracy")  # The first an eval's test results hold is plotted.


def read_metrics(workdir):
  """The rows of workdir/metrics.jsonl, in step order (a resumed run may repeat steps)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"No metrics at {path}: has the run logged a step yet?")
  rows = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows[row["step"]] = row  # The latest write of a step wins.
  return [rows[s] for s in sorted(rows)]


def _chance(workdir):
  """1 / (K + 1) for the run's number of negatives, if its config was saved."""
  for name in ("config.json",):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      with open(path) as f:
        obj = json.load(f).get("objective", {})
      k = obj.get("num_negatives", 0) + obj.get("cross_sample_negatives", 0)
      return 1.0 / (k + 1) if k else None
  return None


def read_evals(workdir):
  """{probe name: [(step, metric name, test value)]} from workdir/evals.jsonl ({} if none)."""
  path = os.path.join(workdir, "evals.jsonl")
  out = {}
  if os.path.exists(path):
    with open(path) as f:
      for row in map(json.loads, filter(str.strip, f)):
        for name, res in row.items():
          if isinstance(res, dict) and "test" in res:
            metric = next((m for m in PROBE_METRICS if m in res["test"]), None)
            if metric is not None:
              out.setdefault(name, []).append((row["step"], metric, res["test"][metric]))
  return out


def panels(workdir):
  """[(title, {line name: [(step, value)]})]: the panels of PANELS the run logged, then its
  probes."""
  rows = read_metrics(workdir)
  out = [(label, {k.split("/", 1)[1]: [(r["step"], r[k]) for r in rows if k in r]
                  for k in keys if any(k in r for r in rows)}) for label, keys in PANELS]
  out = [(label, lines) for label, lines in out if lines]
  probes = read_evals(workdir)
  if probes:
    out.append(("Probes (test)", {f"{name} {pts[0][1]}": [(s, v) for s, _, v in pts]
                                  for name, pts in probes.items()}))
  return out


def plot_curves(workdir, out=None, title=None):
  """Writes the PNG (default workdir/curves.png) and returns its path."""
  out = out or os.path.join(workdir, "curves.png")
  shown = panels(workdir)
  fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4), squeeze=False)
  for ax, (label, lines) in zip(axes[0], shown):
    for name, pts in lines.items():
      ax.plot(*zip(*pts), label=name, marker="o" if label.startswith("Probes") else None)
    if label == "Accuracy" and "accuracy" in lines and (chance := _chance(workdir)):
      ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
    ax.set_title(label)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title or os.path.basename(os.path.normpath(workdir)))
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main(argv):
  del argv
  print(plot_curves(flags.FLAGS.workdir, flags.FLAGS.out or None))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.", required=True)
  flags.DEFINE_string("out", "", "Output PNG (default: workdir/curves.png).")
  cli.run(main)
