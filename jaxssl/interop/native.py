"""jaxssl checkpoints for imported models: a config that rebuilds the architecture, orbax params.

A converted checkpoint is a directory holding `config.json` (a full jaxssl config: the BASE or
LARGE wav2vec 2.0 recipe with the imported sizes and settings) and `ckpt/0/state`, an orbax
item `{"params": ...}` in the layout `checkpointing.load_params` reads, so it serves as
`ckpt.init_from`. It is not a workdir to resume: it holds no optimizer state.
https://arxiv.org/abs/2006.11477
"""
import json
import os
import shutil

from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp

from configs.wav2vec2 import base as base_recipe
from configs.wav2vec2 import large as large_recipe
from jaxssl.interop import ConversionError
from jaxssl.interop import layout
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.training import checkpointing

HUBERT_DICT_SPECIALS = 4  # fairseq Dictionary: <s>, <pad>, </s>, <unk>.
_DIMS = ("num_layers", "embed_dim", "mlp_dim", "num_heads", "conv_dim", "pos_conv_kernel",
         "pos_conv_groups")


def config_from_spec(spec):
  """The jaxssl config of an imported model (a locked ConfigDict).

  The BASE recipe (configs/wav2vec2/base.py) for post-LN models and the LARGE one for pre-LN
  models, with the sizes of `spec` (a variant name when they equal one, else explicit dims) and
  its carried-over settings. HuBERT gets `objective.name="hubert"` and no quantizer section.
  """
  recipe = large_recipe if spec.layer_norm_first else base_recipe
  c = recipe.get_config().to_dict()
  m = c["model"]
  dims = {k: getattr(spec, k) for k in _DIMS}
  named = [n for n, v in variants.VARIANTS.items()
           if all(getattr(v, k) == dims[k] for k in _DIMS)]
  if named:
    m["variant"] = named[0]
    v = variants.VARIANTS[named[0]]
    m["final_dim"] = 0 if spec.final_dim == v.final_dim else spec.final_dim
  else:
    m["variant"] = dict(dims, final_dim=spec.final_dim)
    m["final_dim"] = 0
  m["layer_norm_first"] = spec.layer_norm_first
  m["frontend"].update(mode=spec.mode, conv_bias=spec.conv_bias)
  if spec.family == "wav2vec2":
    c["quantizer"].update(num_groups=spec.num_groups, num_vars=spec.num_vars)
  else:
    # The sections of configs/hubert (objectives/hubert.py): fairseq's dictionaries hold the
    # clusters plus 4 special symbols, which keep their embeddings.
    del c["quantizer"]
    c["masking"]["prob"] = 0.8  # HuBERT's pretraining configs (docs/reference.md).
    c["data"].update(labels="", label_rate=50)
    extra = HUBERT_DICT_SPECIALS if spec.num_classes and min(spec.num_classes) > 4 else 0
    clusters = [k - extra for k in spec.num_classes] or [0]
    c["objective"] = dict(
        name="hubert", num_clusters=clusters[0] if len(clusters) == 1 else clusters,
        num_extra_embeddings=extra, untie_final_proj=spec.untie_final_proj, logit_temp=0.1,
        masked_weight=1.0, unmasked_weight=0.0,
        feature_penalty_weight=c["objective"]["feature_penalty_weight"])
  for path, value in spec.settings.items():
    section, key = path.rsplit(".", 1)
    node = c
    for part in section.split("."):
      node = node[part]
    node[key] = value
  return mlc.ConfigDict(c).lock()


def spec_from_config(config, flat):
  """The `Spec` of a jaxssl checkpoint: config.model sizes and switches, heads from `flat`."""
  m = config.model
  if m.mixer.name != "mha" or m.frontend.name != "cnn":
    raise ConversionError(f"model.mixer.name={m.mixer.name!r} / model.frontend.name="
                          f"{m.frontend.name!r}: only the wav2vec 2.0 CNN + MHA architecture has "
                          "a transformers / fairseq counterpart.")
  family = config.objective.name
  if family not in layout.FAMILIES:
    raise ConversionError(f"objective.name={family!r}: export supports {layout.FAMILIES}.")
  v = variants.get(m.variant)
  heads = any(not k.startswith(layout.ENCODER + "/") for k in flat)
  kw = {}
  if family == "wav2vec2":
    kw = dict(num_groups=config.quantizer.num_groups, num_vars=config.quantizer.num_vars)
  elif heads:
    k = config.objective.get("num_clusters", 0)
    extra = config.objective.get("num_extra_embeddings", 0)
    kw = dict(num_classes=tuple(n + extra for n in (k if isinstance(k, (list, tuple)) else [k])),
              untie_final_proj=config.objective.get("untie_final_proj", True))
    if sum(kw["num_classes"]) != flat["label_embs_concat"].shape[0]:
      raise ConversionError(f"objective.num_clusters={k} (+{extra} each) does not match "
                            f"label_embs_concat {flat['label_embs_concat'].shape}.")
  return layout.Spec(
      family=family, **{k: getattr(v, k) for k in _DIMS}, mode=m.frontend.mode,
      conv_bias=m.frontend.conv_bias, layer_norm_first=m.layer_norm_first,
      final_dim=wav2vec2_model.final_dim(m), heads=heads, **kw)


def param_shapes(config, spec):
  """jaxssl '/'-path (unrolled layers) -> shape of every param the model for `spec` has."""
  audio = jax.ShapeDtypeStruct((1, variants.RECEPTIVE_FIELD), jnp.float32)
  valid = jax.ShapeDtypeStruct((1, 1), jnp.bool_)
  model_cfg = config.model.copy_and_resolve_references()
  with model_cfg.unlocked():
    model_cfg.scan_layers = False
  if spec.family == "wav2vec2" and spec.heads:
    model = wav2vec2_model.Wav2Vec2Model(
        wav2vec2_model.speech_encoder_from_config(model_cfg), final_dim=spec.final_dim,
        num_groups=spec.num_groups, num_vars=spec.num_vars)
    init = lambda a, v: model.init(jax.random.PRNGKey(0), a, valid=v, masked=v, temperature=1.0,
                                   train=False)
  else:
    enc = wav2vec2_model.speech_encoder_from_config(model_cfg)()
    init = lambda a, v: {"params": {layout.ENCODER: enc.init(jax.random.PRNGKey(0), a, valid=v,
                                                             train=False)["params"]}}
  params = flax.linen.unbox(jax.eval_shape(init, audio, valid)["params"])
  shapes = {k: tuple(x.shape) for k, x in flax.traverse_util.flatten_dict(params, sep="/").items()}
  return shapes | layout.head_shapes(spec)


def nest(flat, config):
  """Flat '/'-paths (unrolled layers) -> nested params in the config's layer layout."""
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  if config.model.scan_layers:
    params = encoder_lib.loop_to_scan(params, variants.get(config.model.variant).num_layers)
  return params


def flatten(params, config):
  """Nested params (scanned or not) -> flat '/'-paths with unrolled layers, as numpy."""
  params = encoder_lib.scan_to_loop(params, variants.get(config.model.variant).num_layers)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  return {k: np.asarray(v) for k, v in flat.items()}


def save(directory, config, params, *, overwrite=False):
  """Writes config.json and the orbax params item `ckpt/0/state` into `directory`.

  The checkpoint is written next to it and renamed into place, so an interrupted run never
  leaves a half-written directory behind; `overwrite` replaces an existing one.
  """
  out = os.path.abspath(os.fspath(directory))
  if os.path.exists(out) and not overwrite:
    raise ConversionError(f"--output={directory}: already exists (pass --overwrite to replace).")
  tmp = out + ".partial"
  shutil.rmtree(tmp, ignore_errors=True)
  manager = ocp.CheckpointManager(epath.Path(tmp) / "ckpt", item_names=("state",))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params})))
  manager.wait_until_finished()
  manager.close()
  checkpointing.save_config(config, tmp)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.replace(tmp, out)


def load(directory):
  """Reads a jaxssl checkpoint: (config ConfigDict, params nested dict of arrays).

  Args:
    directory: a converted checkpoint or a training workdir (holding config.json and ckpt/), or
      one step directory of a workdir's ckpt/ (config.json is looked for two levels up).
  """
  path = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(path):
    raise ConversionError(f"{directory}: no such jaxssl checkpoint directory.")
  candidates = [os.path.join(path, "config.json"),
                os.path.join(os.path.dirname(os.path.dirname(path)), "config.json")]
  config_path = next((p for p in candidates if os.path.isfile(p)), None)
  if config_path is None:
    raise ConversionError(f"{directory}: no config.json, so not a jaxssl checkpoint.")
  try:
    with open(config_path) as f:
      config = mlc.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise ConversionError(f"{config_path}: not valid JSON ({e}).") from None
  try:
    item = checkpointing._resolve(epath.Path(path)) / "state"  # pylint: disable=protected-access
    meta = ocp.PyTreeCheckpointer().metadata(item)
  except FileNotFoundError as e:
    raise ConversionError(f"{directory}: {e}") from None
  meta = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
  if "params" not in meta:
    raise ConversionError(f"{item}: no 'params' in the checkpoint (keys: {sorted(meta)}).")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {"params": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                                   sharding=device),
                                   meta["params"])}
  restored = ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return config, restored["params"]
