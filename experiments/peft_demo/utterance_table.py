"""Collects the utterance-level runs of run_utterance.sh into results_<task>.json / .md.

  python experiments/peft_demo/utterance_table.py --runs=workdir/peft_demo/speaker \
      --out=experiments/peft_demo
"""
import argparse
import json
import os

METHODS = ("full", "lora", "adalora", "ladder")
NAMES = {"full": "full fine-tuning", "lora": "LoRA (r 8, q/v)",
         "adalora": "AdaLoRA (12 -> 8, q/v)", "ladder": "ladder side-tuning (r 8)"}


def collect(runs):
  """{method: summary} of the finished runs under `runs` (results.json of each method)."""
  out = {}
  for m in METHODS:
    path = os.path.join(runs, m, "results.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    out[m] = dict(
        task=r["labels"], test_accuracy=r["test"]["accuracy"], dev_accuracy=r["dev"]["accuracy"],
        chance_accuracy=r["chance_accuracy"], best_step=r["best_step"],
        total_steps=r["config"]["total_steps"], lr=r["config"]["optim"]["lr"],
        utterances=r["utterances"], seconds=r["seconds"], peft=r["peft"],
        train_curve=r["train_curve"], dev_curve=r["dev_curve"])
  return out


def markdown(res):
  """A markdown table: accuracy, trainable parameters, optimizer state, run time per method."""
  lines = ["| method | test acc. | dev acc. (best step) | trainable params | optimizer state "
           "| peak lr | run time |", "|---|---:|---:|---:|---:|---:|---:|"]
  for m, r in res.items():
    p = r["peft"]
    lines.append(
        f"| {NAMES[m]} | {100 * r['test_accuracy']:.1f}% | {100 * r['dev_accuracy']:.1f}% "
        f"({r['best_step']} / {r['total_steps']}) | {p['trainable_params']:,} "
        f"({100 * p['trainable_fraction']:.1f}%) | {p['opt_state_bytes'] / 2**20:.2f} MB "
        f"| {r['lr']:g} | {r['seconds'] / 60:.1f} min |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runs", required=True, help="run_utterance.sh's OUT directory.")
  parser.add_argument("--out", default="experiments/peft_demo")
  args = parser.parse_args()
  res = collect(args.runs)
  if not res:
    raise SystemExit(f"error: no <method>/results.json under {args.runs}")
  task = next(iter(res.values()))["task"]
  with open(os.path.join(args.out, f"results_{task}.json"), "w") as f:
    json.dump(res, f, indent=1)
  with open(os.path.join(args.out, f"results_{task}.md"), "w") as f:
    f.write(f"# {task} ID fine-tuning on the demo corpus (run_utterance.sh; see README.md)\n\n")
    f.write(markdown(res))
  print(markdown(res))


if __name__ == "__main__":
  main()
