"""The data-efficiency experiment's training run: MelHuBERT's demo recipe with one data switch.

  python -m jaxssl.main --config=experiments/2026-12-06-data-efficiency/recipe.py:\
steps=1200,batching=dynamic --workdir=... --config.data.data_dir=<the build trained on> \
      --config.data.labels=<its k-means units>

Everything but the switches below is configs/hubert/melhubert.py:demo (stage 1: units of the
normalised fbank frames of the corpus trained on). The probes (configs/probes
`pretraining_eval`, the objectives-per-FLOP experiment's) always read the *clean* demo corpus
(`probe_data_dir`), so a run on a dirty or imbalanced build is scored on the same test sets as
the clean one: phone PER at every `phone_every` steps; speaker ID (training voices) and
language ID at the last step.

Switches (run.py sets them per row):
  alpha       < 1: temperature sampling over languages, p_l proportional to (n_l / N)^alpha.
  curriculum  > 0: crop-length curriculum from this many samples up to the 2 s crop over the
              first half of the run (4 compiled lengths).
  batching    "dynamic": fairseq-style batches of about 16 s of audio (the fixed recipe's 8 x 2 s)
              from 4 bucketed lengths, each batch cropped to its shortest (no padding).
Selection (a score file and a kept fraction) is given on the command line
(--config.data.selection.*), as a user would.
"""
from configs import common
from configs import probes
from jaxssl import cli


def get_config(arg=None):
  arg = common.parse_arg(arg, steps=1200, phone_every=0, seed=0, alpha=1.0, curriculum=0,
                         batching="fixed", probe_data_dir="data/tfds")
  if arg.steps <= 0 or arg.batching not in ("fixed", "dynamic"):
    raise ValueError(f"recipe.py needs steps > 0 and batching fixed or dynamic; got {arg}.")
  c = cli.load_config_file("configs/hubert/melhubert.py:demo")
  with c.unlocked():
    c.seed = arg.seed
    c.total_steps = arg.steps
    c.ckpt.every_steps = max(arg.steps // 4, 1)
    if arg.alpha < 1.0:
      c.data.sampling = dict(name="temperature", alpha=arg.alpha)
    if arg.curriculum:
      c.data.curriculum = dict(name="crop_length", start_samples=arg.curriculum,
                               ramp_steps=arg.steps // 2)
    if arg.batching == "dynamic":
      c.data.dynamic_batch_sec = c.data.batch_size * c.data.crop_samples / 16_000
      c.data.dynamic_batch_buckets = 4
    phone_every = arg.phone_every or arg.steps // 2
    c.evals = dict(phone=probes.pretraining_eval("phone", every_steps=phone_every))
    for task in ("speaker", "language"):
      c.evals[task] = probes.pretraining_eval(task, every_steps=arg.steps)
    for e in c.evals.values():
      e.data.name = "demo_corpus"
      e.data.data_dir = arg.probe_data_dir
  return c.lock()
