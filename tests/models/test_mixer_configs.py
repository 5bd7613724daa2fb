"""Mixer configs: every token mixer selectable in the wav2vec 2.0, HuBERT and MelHuBERT sweeps.

configs/mixers/{wav2vec2,hubert}.py swap `model.mixer` in a recipe and nothing else; these tests
build each sweep's model and loss (abstract shapes only, no compilation) for every mixer.
"""
import functools
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import mixers as mixer_configs
from configs.mixers import wav2vec2 as w2v2_mixer_config
from jaxssl import objectives
from jaxssl.data import batching
from jaxssl.models import mixers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.models.mixers import hyena
from jaxssl.training import optimizers


def test_encoder_config_wiring_and_bad_mixer_fields():
  c = w2v2_mixer_config.get_config("mixer=summary_mixing,runlocal")
  enc = wav2vec2_model.speech_encoder_from_config(c.model)
  mixer = enc.keywords["make_encoder"].keywords["mixer"]
  assert mixer.func is mixers.get("summary_mixing") and mixer.keywords["num_heads"] == 2
  c = w2v2_mixer_config.get_config("mixer=hyena,runlocal")
  with c.unlocked():
    c.model.mixer.max_framez = 3
  with pytest.raises(ValueError, match=r"model.mixer.max_framez is not a field of mixer 'hyena'"):
    wav2vec2_model.speech_encoder_from_config(c.model)
  with pytest.raises(ValueError, match="Unknown mixer 'lstm'"):
    w2v2_mixer_config.get_config("mixer=lstm")
  with pytest.raises(ValueError, match="Unknown recipe 'huge'"):
    w2v2_mixer_config.get_config("recipe=huge")


def test_mixer_configs_build_the_wav2vec2_loss_for_every_mixer():
  batch = dict(audio=jax.ShapeDtypeStruct((2, 8_000), jnp.float32),
               valid=jax.ShapeDtypeStruct((2, 8_000), jnp.bool_))
  for name in mixer_configs.MIXER_NAMES:
    c = w2v2_mixer_config.get_config(f"mixer={name},runlocal")
    assert c.model.mixer.name == name
    assert c.model.variant == "tiny" and c.total_steps == 4  # The demo recipe, shrunk.
    obj = objectives.build(c)
    # Abstract shapes only: the config -> model -> loss wiring, without compiling.
    params = jax.eval_shape(obj.init, jax.random.key(1), batch)
    layer = params["speech_encoder"]["encoder"]["layer_00"]
    assert ("self_attn" in layer) == (name != "fnet")  # FNet has no parameters.
    loss, metrics = jax.eval_shape(functools.partial(obj.loss, step=0), nn.unbox(params), batch,
                                   jax.random.key(2))
    assert loss.shape == () and "accuracy" in metrics


# Parameter names only one mixer has, so the built model shows which mixer it holds.
MIXER_PARAM = {"mha": "query", "summary_mixing": "summary_proj", "hyena": "filter_fn"}


@pytest.mark.parametrize("recipe", ["demo", "melhubert"])
def test_hubert_and_melhubert_sweeps_build_the_loss_with_every_mixer(recipe):
  """configs/mixers/hubert.py swaps the mixer inside HuBERT's and MelHuBERT's encoders too."""
  hubert_sweep = importlib.import_module("configs.mixers.hubert")
  s = 8_000
  batch = dict(audio=jax.ShapeDtypeStruct((2, s), jnp.float32),
               valid=jax.ShapeDtypeStruct((2, s), jnp.bool_),
               labels=jax.ShapeDtypeStruct((2, s // 160 + 1), jnp.int32),
               labels_valid=jax.ShapeDtypeStruct((2, s // 160 + 1), jnp.bool_))
  for name in mixer_configs.MIXER_NAMES:
    c = hubert_sweep.get_config(f"mixer={name},recipe={recipe},runlocal")
    assert c.model.mixer.name == name
    obj = objectives.build(c)
    params = jax.eval_shape(obj.init, jax.random.key(1), batch)
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda a: isinstance(a, nn.Partitioned))[0]}
    mixer_paths = [p for p in paths if "['layer_00']['self_attn']" in p]
    if name == "fnet":
      assert not mixer_paths  # No parameters.
    else:
      assert any(MIXER_PARAM[name] in p for p in mixer_paths), (name, sorted(mixer_paths))
      others = [n for k, n in MIXER_PARAM.items() if k != name]
      assert not any(o in p for o in others for p in mixer_paths), name
    loss, _ = jax.eval_shape(functools.partial(obj.loss, step=0), nn.unbox(params), batch,
                             jax.random.key(2))
    assert loss.shape == ()


@pytest.mark.parametrize("sweep,recipe,arg,recipe_arg", [
    ("wav2vec2", "configs.wav2vec2.base", "recipe=base", None),
    ("hubert", "configs.hubert.demo", "recipe=demo,iteration=2", "iteration=2"),
])
def test_sweeps_change_only_the_mixer(sweep, recipe, arg, recipe_arg):
  """Same recipe, same budget: every field but model.mixer equals the recipe's (and, for Hyena,
  optim.no_decay and optim.lr_groups: its implicit filter takes no weight decay and safari's
  learning rates)."""
  recipe = pytest.importorskip(recipe)  # HuBERT's configs land with the HuBERT objective.
  sweep = importlib.import_module(f"configs.mixers.{sweep}")
  ref = recipe.get_config(recipe_arg).to_dict()
  for name in mixer_configs.MIXER_NAMES:
    c = sweep.get_config(f"mixer={name},{arg}").to_dict()
    assert c["model"].pop("mixer")["name"] == name
    no_decay = c["optim"].pop("no_decay")
    assert no_decay == (mixer_configs.HYENA_NO_DECAY if name == "hyena" else "")
    groups = c["optim"].pop("lr_groups")
    assert tuple(groups) == (mixer_configs.HYENA_LR_GROUPS if name == "hyena" else ())
    ref["optim"].pop("no_decay", None)
    ref["optim"].pop("lr_groups", None)
    assert c["model"] == {k: v for k, v in ref["model"].items() if k != "mixer"}
    assert {k: v for k, v in c.items() if k != "model"} == {
        k: v for k, v in ref.items() if k != "model"}
  hyena_cfg = sweep.get_config(f"mixer=hyena,{arg}")
  assert hyena_cfg.model.mixer.max_frames == variants.frames_for(ref["data"]["crop_samples"])
  # The built encoder takes the mixer's fields (a locked config rejects typos before that).
  enc = wav2vec2_model.speech_encoder_from_config(hyena_cfg.model)
  assert enc.keywords["make_encoder"].keywords["mixer"].func is hyena.HyenaMixer


def test_hyena_sweep_leaves_the_implicit_filter_without_weight_decay():
  """safari's HyenaFilter: weight decay 0 on the implicit filter's MLP and Sin frequencies."""
  c = w2v2_mixer_config.get_config("mixer=hyena,runlocal")
  params = jax.eval_shape(objectives.build(c).init, jax.random.key(0), batching.dummy_batch())
  decayed = optimizers.decay_mask(c.optim.no_decay)(nn.unbox(params))
  flat = {optimizers.param_path(p): d for p, d in jax.tree_util.tree_flatten_with_path(decayed)[0]}
  filters = [p for p in flat if "/filter_fn/" in p]
  assert filters and not any(flat[p] for p in filters)
  assert all(flat[p] for p in flat if "/filter_fn/" not in p)  # Everything else decays.
  assert "sin_freq" in " ".join(filters)
