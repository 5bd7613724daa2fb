"""wav2vec 2.0 with any token mixer: one recipe (demo, base, large), `model.mixer` swapped.

  python -m jaxssl.main --config=configs/mixers/wav2vec2.py:mixer=hyena \
      --workdir=workdir/w2v2_demo_hyena
  python -m jaxssl.main --config=configs/mixers/wav2vec2.py:mixer=summary_mixing,recipe=base \
      --workdir=gs://$BUCKET/w2v2_base_summix --config.data.data_dir=$TFDS
  python -m jaxssl.main --config=configs/mixers/wav2vec2.py:mixer=fnet --dry_run   # FLOPs/step

Everything but the mixer is the recipe's (configs/wav2vec2/<recipe>.py), so runs with the same
`total_steps` spend the same data budget. Mixers: mha, summary_mixing, fnet, hyena (settings in
configs/mixers/__init__.py). `runlocal` shrinks the recipe for a CPU smoke run.
"""
from configs import common
from configs import mixers
from configs.wav2vec2 import base
from configs.wav2vec2 import demo
from configs.wav2vec2 import large

RECIPES = {"demo": demo, "base": base, "large": large}


def get_config(arg=None):
  arg = common.parse_arg(arg, mixer="summary_mixing", recipe="demo", runlocal=False)
  if arg.recipe not in RECIPES:
    raise ValueError(f"Unknown recipe {arg.recipe!r}; choose from {sorted(RECIPES)}.")
  c = RECIPES[arg.recipe].get_config("runlocal" if arg.runlocal else None)
  return mixers.with_mixer(c, arg.mixer)
