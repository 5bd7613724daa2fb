"""MelHuBERT's MACs per second of speech next to HuBERT BASE's (arXiv 2211.09944: -33.5%).

  python experiments/hubert_demo/macs.py [--seconds=1]

Counts, not timings: XLA's cost analysis of each encoder's forward pass (`represent`, without
the pretraining heads) on one utterance, from abstract shapes (jaxssl/objectives/melhubert.py
`compare`). Writes experiments/hubert_demo/results/macs.{json,md}.
"""
import json
import os
import sys

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl import cli
from jaxssl import feature_stats
from jaxssl import objectives
from jaxssl.objectives import melhubert

_SECONDS = flags.DEFINE_float("seconds", 1.0, "Utterance length the MACs are counted on.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(__file__), "results"),
                           "Output folder.")


def main(argv):
  del argv
  mel_cfg, base_cfg = "configs/hubert/melhubert.py", "configs/hubert/base.py:iteration=2"
  rows = []
  for seconds in sorted({1.0, _SECONDS.value}):
    mel = feature_stats.fill_config(cli.load_config_file(os.path.join(REPO, mel_cfg)),
                                    required=False)  # MACs do not depend on the statistics.
    out = melhubert.compare(objectives.build(mel),
                            objectives.build(cli.load_config_file(os.path.join(REPO, base_cfg))),
                            seconds)
    rows.append(out)
    print(json.dumps(out))
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "macs.json"), "w") as f:
    json.dump(dict(config=mel_cfg, baseline=base_cfg, rows=rows), f, indent=2)
  lines = ["| utterance | HuBERT BASE GMACs/s | MelHuBERT GMACs/s | saving | params (HuBERT / Mel) |",
           "| --- | --- | --- | --- | --- |"]
  for r in rows:
    lines.append(f"| {r['seconds']:g} s | {r['baseline_macs_per_sec'] / 1e9:.2f} | "
                 f"{r['macs_per_sec'] / 1e9:.2f} | {100 * r['macs_saving']:.1f}% | "
                 f"{r['baseline_num_params'] / 1e6:.2f}M / {r['num_params'] / 1e6:.2f}M |")
  with open(os.path.join(_OUT.value, "macs.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
