"""Token-mixer sweeps: the same pretraining recipes with `model.mixer` swapped.

`mixer_section(name, c)` gives each mixer's settings for a recipe `c`; configs/mixers/wav2vec2.py
uses it (and a HuBERT sweep will). Mixers: jaxssl/models/mixers (docs/reference.md).
"""
import ml_collections as mlc

from jaxssl.models import variants

MIXER_NAMES = ("mha", "summary_mixing", "fnet", "hyena")


def mixer_section(name, c):
  """The `model.mixer` section for mixer `name` in recipe `c` (its data and model sections).

  - mha: the recipe's own attention (heads and attention dropout from the variant / model).
  - summary_mixing: the paper's mode; its concat dropout is the recipe's dropout_rate (0.1 in
    the SummaryMixing wav2vec 2.0 recipe, 0 in the demo); block splits = the variant's heads.
  - fnet: per-utterance DFT (padding invariant), unitary scaling.
  - hyena: order 2; positions normalised by the pretraining crop's frame count (safari's
    l_max = the training length).
  """
  if name not in MIXER_NAMES:
    raise ValueError(f"Unknown mixer {name!r}; choose from {list(MIXER_NAMES)}.")
  if name == "mha":
    return mlc.ConfigDict(dict(name="mha"))
  if name == "summary_mixing":
    return mlc.ConfigDict(dict(name=name, dropout_rate=c.model.dropout_rate))
  if name == "fnet":
    return mlc.ConfigDict(dict(name=name, padding="exact", norm="ortho"))
  return mlc.ConfigDict(dict(
      name=name, max_frames=max(variants.frames_for(c.data.crop_samples), 1), order=2,
      filter_dim=64, filter_emb_dim=33, dropout_rate=0.0))


# safari's HyenaFilter gives its implicit filter (the MLP, its Sin frequencies, the positional
# embedding) weight decay 0, and learning rates of their own: the positional embedding 1e-5
# (lr_pos_emb), the rest of the filter 1e-3 (HyenaFilter's lr). First match wins.
HYENA_NO_DECAY = r".*/filter_fn/.*"
HYENA_LR_GROUPS = ((r".*/filter_fn/pos_emb", 1e-5), (r".*/filter_fn/.*", 1e-3))


def no_decay(name, recipe_no_decay=""):
  """`optim.no_decay` of a recipe with mixer `name`: the recipe's, plus the mixer's own."""
  own = HYENA_NO_DECAY if name == "hyena" else ""
  return "|".join(p for p in (recipe_no_decay, own) if p)


def lr_groups(name, recipe_groups=()):
  """`optim.lr_groups` of a recipe with mixer `name`: the mixer's own, then the recipe's."""
  own = HYENA_LR_GROUPS if name == "hyena" else ()
  return tuple(own) + tuple(tuple(g) for g in recipe_groups)


def with_mixer(c, name):
  """Recipe `c` (a locked ConfigDict) with its mixer replaced by `name`; returns it locked."""
  with c.unlocked():
    c.model.mixer = mixer_section(name, c)
    if "optim" in c:
      c.optim.no_decay = no_decay(name, c.optim.get("no_decay", ""))
      c.optim.lr_groups = lr_groups(name, c.optim.get("lr_groups", ()))
  return c.lock()
