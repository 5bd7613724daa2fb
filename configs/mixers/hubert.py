"""HuBERT (or MelHuBERT) with any token mixer: one recipe, `model.mixer` swapped.

  python -m jaxssl.main --config=configs/mixers/hubert.py:mixer=hyena,iteration=1 \
      --workdir=workdir/hubert_it1_hyena
  python -m jaxssl.main --config=configs/mixers/hubert.py:mixer=fnet,recipe=base,iteration=2 \
      --workdir=gs://$BUCKET/hubert_base_it2_fnet --config.data.data_dir=$TFDS
  python -m jaxssl.main --config=configs/mixers/hubert.py:mixer=summary_mixing,recipe=melhubert \
      --dry_run

Everything but the mixer is the recipe's (configs/hubert/<recipe>.py, whose docstrings give the
k-means steps that make the labels), so runs with the same `total_steps` spend the same data
budget. `iteration` applies to the demo and base recipes; `runlocal` shrinks the recipe.
"""
from configs import common
from configs import mixers
from configs.hubert import base
from configs.hubert import demo
from configs.hubert import large
from configs.hubert import melhubert

RECIPES = {"demo": demo, "base": base, "large": large, "melhubert": melhubert}
ITERATED = ("demo", "base")  # Recipes with an `iteration` argument (1: MFCC units, 2: layer).


def get_config(arg=None):
  arg = common.parse_arg(arg, mixer="summary_mixing", recipe="demo", iteration=1,
                         runlocal=False)
  if arg.recipe not in RECIPES:
    raise ValueError(f"Unknown recipe {arg.recipe!r}; choose from {sorted(RECIPES)}.")
  recipe_arg = [f"iteration={arg.iteration}"] if arg.recipe in ITERATED else []
  recipe_arg += ["runlocal"] if arg.runlocal else []
  c = RECIPES[arg.recipe].get_config(",".join(recipe_arg) or None)
  return mixers.with_mixer(c, arg.mixer)
