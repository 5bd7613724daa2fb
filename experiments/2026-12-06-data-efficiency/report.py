"""results.md and curves.png of the data-efficiency experiment, from run.py's results.json.

  python experiments/2026-12-06-data-efficiency/report.py --workdir=workdir/data_eff

Tables: every row's final probes (test split; mean and spread over the seeds that ran), the
scorers' precision / recall of corrupted utterances, per-language phone PER of the temperature
rows, FLOPs to reach a fixed PER, and the loaders' padding and audio per update beside each
batching run's training throughput (audio seconds per wall second, median of its logged windows).
"""
import json
import os

from absl import app
from absl import flags
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", "workdir/data_eff", "run.py's workdir.")
_TARGET = flags.DEFINE_float("target_per", 0.40, "Phone PER whose FLOPs the curriculum table "
                             "reports (first probe at or below it).")
LOW_RESOURCE = ("fr", "pl")  # The imbalanced build's 0.04 h languages.


def by_row(results):
  """{row: [final record per seed]} with each task's latest probe merged in."""
  out = {}
  for key, curve in results["runs"].items():
    row = key.rsplit("/", 1)[0]
    last = dict(curve[-1])
    for r in curve:
      last.update({k: v for k, v in r.items() if isinstance(v, dict)})
    out.setdefault(row, []).append(last)
  return out


def stat(values):
  """'m' for one seed, 'm ± half-range (n)' for several: the spread a difference must exceed."""
  v = 100 * np.asarray(values, np.float64)
  if len(v) == 1:
    return f"{v[0]:.1f}"
  return f"{v.mean():.1f} ± {(v.max() - v.min()) / 2:.1f} ({len(v)})"


def metric(finals, task, name):
  vals = [f[task][name] for f in finals if task in f]
  return stat(vals) if vals else "-"


def audio_per_sec(row):
  """Median training throughput (audio s / wall s) over each seed's logged windows, compile
  window excluded: {seed: value}."""
  out = {}
  runs = os.path.join(_WORKDIR.value, "runs")
  for name in sorted(os.listdir(runs)):
    prefix = row.replace("/", "_") + "_seed"
    path = os.path.join(runs, name, "metrics.jsonl")
    if name.startswith(prefix) and name[len(prefix):].isdigit() and os.path.exists(path):
      with open(path) as f:
        rates = [r["perf/audio_hours_per_sec"] * 3600 for r in map(json.loads, f)
                 if "perf/audio_hours_per_sec" in r][1:]
      out[int(name[len(prefix):])] = float(np.median(rates)) if rates else float("nan")
  return out


def main(argv):
  del argv
  with open(os.path.join(_WORKDIR.value, "results.json")) as f:
    results = json.load(f)
  rows = by_row(results)
  lines = ["| row | build | kept | TFLOPs | phone PER | speaker | language |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  for row, finals in rows.items():
    build, _, selection = results["rows"][row]
    kept = f"{round(100 * selection[1])}% by {selection[0]}" if selection else "all"
    lines.append(f"| {row} | {build} | {kept} | {finals[0]['flops'] / 1e12:.2f} | "
                 f"{metric(finals, 'phone', 'per')} | {metric(finals, 'speaker', 'accuracy')} | "
                 f"{metric(finals, 'language', 'accuracy')} |")
  recall = results.get("corruption_recall")
  if recall:
    kinds = sorted(next(iter(recall.values()))["kept_by_kind"])
    lines += ["", "| scorer, kept | precision | recall | " + " | ".join(
        f"kept {k}" for k in kinds) + " |", "| --- | ---: | ---: |" + " ---: |" * len(kinds)]
    for name, r in recall.items():
      lines.append(f"| {name} | {r['precision']:.2f} | {r['recall']:.2f} | " + " | ".join(
          f"{r['kept_by_kind'][k]:.2f}" for k in kinds) + " |")
  temp = {r: f for r, f in rows.items() if r.startswith("imbalanced/")}
  if temp:
    langs = sorted(next(iter(temp.values()))[0]["phone"]["per_language"])
    lid = [f"LID {l}" for l in LOW_RESOURCE]
    lines += ["", "| row | " + " | ".join(langs) + " | PER low-resource mean | "
              + " | ".join(lid) + " | LID all |", "| --- |" + " ---: |" * (len(langs) + 4)]
    for row, finals in temp.items():
      per = lambda l: [f["phone"]["per_language"][l]["per"] for f in finals]
      low = [np.mean([f["phone"]["per_language"][l]["per"] for l in LOW_RESOURCE])
             for f in finals]
      acc = lambda l: [f["language"]["per_language"][l]["accuracy"] for f in finals]
      lines.append(f"| {row} | " + " | ".join(stat(per(l)) for l in langs)
                   + f" | {stat(low)} | " + " | ".join(stat(acc(l)) for l in LOW_RESOURCE)
                   + f" | {metric(finals, 'language', 'accuracy')} |")
  lines += ["", f"| row | TFLOPs to phone PER <= {100 * _TARGET.value:.0f}% |", "| --- | --- |"]
  for key, curve in results["runs"].items():
    hit = [r["flops"] for r in curve if "phone" in r and r["phone"]["per"] <= _TARGET.value]
    lines.append(f"| {key} | {hit[0] / 1e12:.2f} |" if hit else f"| {key} | not reached |")
  loaders = results.get("loaders")
  if loaders:
    lines += ["", "| loader | padding | audio s / update | training audio s / s, per seed "
              "| shapes |", "| --- | ---: | ---: | ---: | --- |"]
    for name, s in loaders.items():
      rate = " / ".join(f"{v:.0f}" for _, v in sorted(audio_per_sec(name).items()))
      lines.append(f"| {name} | {100 * s['padding']:.1f}% | {s['audio_sec_per_update']:.2f} | "
                   f"{rate or '-'} | {', '.join('x'.join(map(str, x)) for x in s['shapes'])} |")
  with open(os.path.join(_WORKDIR.value, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
  fig, ax = plt.subplots(figsize=(8, 4.5))
  colors = {row: plt.get_cmap("tab20")(i % 20) for i, row in enumerate(rows)}
  for key, curve in results["runs"].items():
    row, seed = key.rsplit("/", 1)
    pts = [r for r in curve if "phone" in r]
    ax.plot([r["flops"] / 1e12 for r in pts], [100 * r["phone"]["per"] for r in pts],
            marker="o", color=colors[row], ls="-" if seed == "seed0" else "--", label=key)
  ax.set_xlabel("cumulative training TFLOPs")
  ax.set_ylabel("phone PER % (test, clean corpus)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(os.path.join(_WORKDIR.value, "curves.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
