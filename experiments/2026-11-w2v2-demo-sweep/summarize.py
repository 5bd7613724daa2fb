"""Builds summary.md / summary.json of the demo wav2vec 2.0 recipe sweep from runs/*/.

  python experiments/2026-11-w2v2-demo-sweep/summarize.py
"""
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
MFCC = os.path.join(HERE, "..", "2026-11-probes-demo", "runs", "phone", "mfcc", "lr0.01",
                    "results.json")


def row(name, run_dir):
  probe = json.load(open(os.path.join(run_dir, "results.json")))
  last = {}
  if os.path.exists(os.path.join(run_dir, "pretrain_last.json")):
    last = json.load(open(os.path.join(run_dir, "pretrain_last.json")))
  return dict(run=name, dev_per=probe["dev"]["per"], test_per=probe["test"]["per"],
              layer_weights=probe["layer_weights"],
              accuracy=last.get("train/accuracy"), code_perplexity=last.get("train/code_perplexity"))


def main():
  rows = sorted((row(os.path.basename(d), d) for d in glob.glob(os.path.join(HERE, "runs", "*"))),
                key=lambda r: r["dev_per"])
  mfcc = row("mfcc (lr 1e-2, 2026-11-probes-demo)", os.path.dirname(MFCC))
  lines = ["| run | dev PER % | test PER % | layer weights (0 = CNN) | contrastive acc. | "
           "code perplexity |", "| --- | --- | --- | --- | --- | --- |"]
  for r in rows + [mfcc]:
    acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"
    ppl = "-" if r["code_perplexity"] is None else f"{r['code_perplexity']:.0f}"
    lines.append(f"| {r['run']} | {100 * r['dev_per']:.1f} | {100 * r['test_per']:.1f} | "
                 f"{' '.join(f'{w:.2f}' for w in r['layer_weights'])} | {acc} | {ppl} |")
  with open(os.path.join(HERE, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(HERE, "summary.json"), "w") as f:
    json.dump(dict(runs=rows, mfcc=mfcc), f, indent=1)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
