"""Command line of the evaluation: probes on a frozen upstream, or whole-model CTC fine-tuning.

  python -m jaxssl.evaluate --config=configs/probes/phone.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/probes/phone_w2v2
  python -m jaxssl.evaluate --config=configs/probes/speaker.py --config.upstream=mfcc
  python -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream=random_init \
      --config.upstream_arch=configs/wav2vec2/demo.py
  python -m jaxssl.evaluate --config=configs/finetune/ctc_demo.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/finetune/ctc_demo
  python -m jaxssl.evaluate --config=configs/finetune/utterance_demo.py:task=speaker,peft=lora \
      --config.upstream=workdir/hubert_demo/iter2 --workdir=workdir/finetune/speaker_lora

`--config.upstream` is a jaxssl training workdir, a checkpoint from `python -m jaxssl.convert`
(HF / fairseq imports), `random_init` (the architecture of `upstream_arch`, untrained), or the
baselines `mfcc` / `fbank`. Results go to the workdir as results.json, results.md and (probes)
layer_weights.png. Config errors (a mistyped field, a missing upstream) print one line.
`--dry_run` (fine-tuning configs) opens the data and prints its description as one JSON line.
SUPERB: https://arxiv.org/abs/2105.01051
"""
import json
import os
import sys

from absl import app
from absl import flags

from jaxssl import cli
from jaxssl import main as main_lib  # Defines --config / --workdir and their clear errors.
from jaxssl.evaluation import finetune
from jaxssl.evaluation import probing

flags.adopt_module_key_flags(main_lib)  # --config / --workdir in this command's --help.

# Whole-model fine-tuning (jaxssl/evaluation/finetune.py); any other task is a probe.
FINETUNE_TASKS = ("ctc_finetune", "utterance_finetune")


def default_workdir(config):
  """workdir/probes/<task>_<upstream name> (or workdir/finetune/...) when --workdir is unset."""
  name = os.path.basename(os.path.normpath(config.upstream)) or "none"
  kind = "finetune" if config.task in FINETUNE_TASKS else "probes"
  return os.path.join("workdir", kind, f"{config.task}_{name}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("--config=configs/probes/<task>.py (or configs/finetune/...) is "
                         "required.")
  if flags.FLAGS.dry_run:  # Fine-tuning: open the splits, print their description, train nothing.
    if config.task not in FINETUNE_TASKS:
      raise app.UsageError("--dry_run describes fine-tuning configs (configs/finetune/*.py) only.")
    try:
      print(json.dumps(finetune.dry_run(config)))
    except (ValueError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    return
  workdir = flags.FLAGS.workdir or default_workdir(config)
  try:
    if config.task in FINETUNE_TASKS:
      results = finetune.finetune(config, workdir)
    else:
      results = probing.run(config, workdir)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if results.get("preempted"):  # Saved at SIGTERM: requeue the same command to resume.
    sys.exit(main_lib.EXIT_PREEMPTED)
  summary = {k: results[k] for k in ("task", "upstream", "dev", "test", "best_step")}
  print(json.dumps(dict(summary, workdir=workdir)))


if __name__ == "__main__":
  cli.run(main)
