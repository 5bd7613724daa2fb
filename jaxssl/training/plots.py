"""Training curves from a run's metrics.jsonl, as one PNG.

  python -m jaxssl.training.plots --workdir=workdir/w2v2_demo [--out=curves.png]

Plots the loss, the contrastive accuracy (with chance level 1/(K+1) when the config is saved beside
the run) and the two codebook perplexities against the step.
"""
import json
import os

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxssl import cli

PANELS = (
    ("Loss (nats)", ("train/loss", "train/loss_contrastive")),
    ("Contrastive accuracy", ("train/accuracy",)),
    ("Codebook perplexity", ("train/code_perplexity", "train/prob_perplexity")),
)


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


def plot_curves(workdir, out=None, title=None):
  """Writes the PNG (default workdir/curves.png) and returns its path."""
  rows = read_metrics(workdir)
  out = out or os.path.join(workdir, "curves.png")
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
  for ax, (label, keys) in zip(axes, PANELS):
    for key in keys:
      pts = [(r["step"], r[key]) for r in rows if key in r]
      if pts:
        ax.plot(*zip(*pts), label=key.split("/", 1)[1])
    if label.startswith("Contrastive") and (chance := _chance(workdir)):
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
