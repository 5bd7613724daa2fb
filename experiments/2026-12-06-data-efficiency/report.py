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


def seeds_of(results, row):
  """{seed: eval curve} of a row's runs."""
  return {int(key.rsplit("/seed", 1)[1]): curve for key, curve in results["runs"].items()
          if key.rsplit("/", 1)[0] == row}


def by_row(results):
  """{row: [final record per seed]} in run.py's row order, each task's latest probe merged in."""
  out = {}
  for row in results["rows"]:
    for _, curve in sorted(seeds_of(results, row).items()):
      last = dict(curve[-1])
      for r in curve:
        last.update({k: v for k, v in r.items() if isinstance(v, dict)})
      out.setdefault(row, []).append(last)
  return out


BASELINES = ("dirty/all", "clean/fixed")
PANELS = {"selection, keep 75%": lambda r: r in BASELINES or r.startswith("dirty/") and "_75" in r,
          "selection, keep 50%": lambda r: r in BASELINES or r.startswith("dirty/") and "_50" in r,
          "temperature (imbalanced build)": lambda r: r.startswith("imbalanced/"),
          "curriculum, length, batching": lambda r: r.startswith("clean/")}


def plot(results, rows, path):
  """Phone PER against cumulative FLOPs, one panel per part: the seed mean at each probe, the
  bars spanning the seeds."""
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey=True)
  for ax, (title, member) in zip(axes.flat, PANELS.items()):
    for i, row in enumerate(r for r in rows if member(r)):
      curves = [[p for p in c if "phone" in p] for c in seeds_of(results, row).values()]
      n = min(map(len, curves))
      flops = np.mean([[p["flops"] / 1e12 for p in c[:n]] for c in curves], 0)
      per = 100 * np.array([[p["phone"]["per"] for p in c[:n]] for c in curves])
      ax.errorbar(flops, per.mean(0), yerr=[per.mean(0) - per.min(0), per.max(0) - per.mean(0)],
                  marker="o", capsize=3, color=plt.get_cmap("tab10")(i % 10),
                  label=f"{row} ({len(curves)} seeds)")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("cumulative training TFLOPs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in axes[:, 0]:
    ax.set_ylabel("phone PER % (test, clean corpus)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def stat(values):
  """'m' for one seed, 'm ± half-range (n)' for several: the spread a difference must exceed."""
  v = 100 * np.asarray(values, np.float64)
  if len(v) == 1:
    return f"{v[0]:.1f}"
  return f"{v.mean():.1f} ± {(v.max() - v.min()) / 2:.1f} ({len(v)})"


def metric(finals, task, name):
  vals = [f[task][name] for f in finals if task in f]
  return stat(vals) if vals else "-"


def audio_per_sec(results, row):
  """Median training throughput (audio s / wall s) over each seed's logged windows, compile
  window excluded: {seed: value}. Run directories as run.py's train_row names them."""
  out = {}
  for seed in sorted(seeds_of(results, row)):
    path = os.path.join(_WORKDIR.value, "runs", f"{row.replace('/', '_')}_seed{seed}",
                        "metrics.jsonl")
    with open(path) as f:
      rates = [r["perf/audio_hours_per_sec"] * 3600 for r in map(json.loads, f)
               if "perf/audio_hours_per_sec" in r][1:]
    out[seed] = float(np.median(rates)) if rates else float("nan")
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
  lines += ["", f"| row | TFLOPs to phone PER <= {100 * _TARGET.value:.0f}%, per seed |",
            "| --- | --- |"]
  for row in rows:
    hits = []
    for _, curve in sorted(seeds_of(results, row).items()):
      hit = [r["flops"] for r in curve if "phone" in r and r["phone"]["per"] <= _TARGET.value]
      hits.append(f"{hit[0] / 1e12:.2f}" if hit else "not reached")
    lines.append(f"| {row} | {' / '.join(hits)} |")
  loaders = results.get("loaders")
  if loaders:
    lines += ["", "| loader | padding | audio s / update | training audio s / s, per seed "
              "| shapes |", "| --- | ---: | ---: | ---: | --- |"]
    for name, s in loaders.items():
      rate = " / ".join(f"{v:.0f}" for v in audio_per_sec(results, name).values())
      lines.append(f"| {name} | {100 * s['padding']:.1f}% | {s['audio_sec_per_update']:.2f} | "
                   f"{rate or '-'} | {', '.join('x'.join(map(str, x)) for x in s['shapes'])} |")
  with open(os.path.join(_WORKDIR.value, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
  plot(results, list(rows), os.path.join(_WORKDIR.value, "curves.png"))

if __name__ == "__main__":
  app.run(main)
