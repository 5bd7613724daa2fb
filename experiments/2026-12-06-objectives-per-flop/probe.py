"""The experiment's in-training probe as a standalone config, for the baselines (run.py):

  python -m jaxssl.evaluate --config=experiments/2026-12-06-objectives-per-flop/probe.py:\
task=speaker,speakers=unseen --config.upstream=mfcc --workdir=...

The same probe that recipe.py's `evals` run during pretraining (configs/probes
`pretraining_eval`), on the demo corpus.
"""
from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, task="phone", speakers="seen", data_dir="data/tfds")
  c = probes.pretraining_eval(arg.task, every_steps=0, speakers=arg.speakers)
  c.data.name = "demo_corpus"
  c.data.data_dir = arg.data_dir
  del c["every_steps"]
  return c.lock()
