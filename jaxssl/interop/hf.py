"""HF transformers model folders <-> `layout.Spec` and tensors (Wav2Vec2 / HuBERT, PyTorch).

A folder holds config.json and model.safetensors (or pytorch_model.bin, or sharded versions of
either with an index.json), optionally preprocessor_config.json. transformers' config names map to
jaxssl's as: feat_extract_norm "group"/"layer" -> frontend mode "default"/"layer_norm",
do_stable_layer_norm -> layer_norm_first, proj_codevector_dim -> final_dim (codevector_dim must
equal it: jaxssl's quantizer emits final_dim-wide codevectors, as fairseq does with latent_dim=0).
https://huggingface.co/docs/transformers/model_doc/wav2vec2
"""
import json
import os

import numpy as np

from jaxssl.interop import ConversionError
from jaxssl.interop import files
from jaxssl.interop import layout
from jaxssl.models import variants

# (family, has pretraining heads, key prefixes dropped on import: task heads jaxssl lacks).
ARCHITECTURES = {
    "Wav2Vec2Model": ("wav2vec2", False, ()),
    "Wav2Vec2ForPreTraining": ("wav2vec2", True, ()),
    "Wav2Vec2ForCTC": ("wav2vec2", False, ("lm_head.",)),
    "HubertModel": ("hubert", False, ()),
    "HubertForCTC": ("hubert", False, ("lm_head.",)),
}
# transformers' defaults for the fields read here (Wav2Vec2Config / HubertConfig, v4 and v5):
# a config.json written by transformers omits none of them, hand-written ones may.
DEFAULTS = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", feat_extract_activation="gelu", feat_extract_norm="group",
    conv_dim=[512] * 7, conv_kernel=list(variants.CONV_KERNELS),
    conv_stride=list(variants.CONV_STRIDES), conv_bias=False, num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16, do_stable_layer_norm=False, layer_norm_eps=1e-5,
    hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, feat_proj_dropout=0.0,
    feat_quantizer_dropout=0.0, layerdrop=0.1, mask_time_prob=0.05, mask_feature_prob=0.0,
    num_codevector_groups=2, num_codevectors_per_group=320, codevector_dim=256,
    proj_codevector_dim=256, contrastive_logits_temperature=0.1, num_negatives=100,
    diversity_loss_weight=0.1, add_adapter=False, adapter_attn_dim=None,
    feat_proj_layer_norm=True, conv_pos_batch_norm=False)
# jaxssl config path <- transformers field, carried over on import and written back on export.
SETTINGS = {
    "model.dropout_rate": "hidden_dropout", "model.attention_dropout_rate": "attention_dropout",
    "model.activation_dropout_rate": "activation_dropout",
    "model.input_dropout_rate": "feat_proj_dropout", "model.layerdrop_rate": "layerdrop",
}
W2V2_SETTINGS = {
    "model.feature_dropout_rate": "feat_quantizer_dropout",
    "objective.logit_temp": "contrastive_logits_temperature",
    "objective.num_negatives": "num_negatives",
    "objective.diversity_weight": "diversity_loss_weight",
}
_POS = "encoder.pos_conv_embed.conv."
# Weight norm's names before torch's parametrizations (transformers < 4.3x, torch < 2.1 files).
_LEGACY = {_POS + "weight_g": _POS + "parametrizations.weight.original0",
           _POS + "weight_v": _POS + "parametrizations.weight.original1"}


def spec_from_config(cfg, source="config.json"):
  """A transformers config dict -> (`Spec`, architecture name, dropped key prefixes)."""
  get = lambda k: cfg.get(k, DEFAULTS[k])
  model_type = cfg.get("model_type")
  arch = (cfg.get("architectures") or [None])[0]
  if arch is None and model_type in layout.FAMILIES:
    arch = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel"}[model_type]
  if arch not in ARCHITECTURES:
    raise ConversionError(f"{source}: unsupported architecture {arch!r} (model_type "
                          f"{model_type!r}); supported: {sorted(ARCHITECTURES)}.")
  family, heads, dropped = ARCHITECTURES[arch]
  checks = [  # (field, value jaxssl can build)
      ("hidden_act", "gelu"), ("feat_extract_activation", "gelu"), ("add_adapter", False),
      ("adapter_attn_dim", None), ("feat_proj_layer_norm", True), ("conv_pos_batch_norm", False),
      ("conv_kernel", list(variants.CONV_KERNELS)), ("conv_stride", list(variants.CONV_STRIDES))]
  for field, want in checks:
    if field in cfg and (list(cfg[field]) if isinstance(want, list) else cfg[field]) != want:
      raise ConversionError(f"{source}: unsupported {field}={cfg[field]!r} (jaxssl builds "
                            f"{want!r}).")
  conv_dim = list(get("conv_dim"))
  if len(set(conv_dim)) != 1 or len(conv_dim) != len(variants.CONV_KERNELS):
    raise ConversionError(f"{source}: unsupported conv_dim={conv_dim}: jaxssl's feature encoder "
                          f"has {len(variants.CONV_KERNELS)} convs of one width.")
  if abs(get("layer_norm_eps") - 1e-5) > 1e-12:
    raise ConversionError(f"{source}: unsupported layer_norm_eps={get('layer_norm_eps')} "
                          "(jaxssl's LayerNorms use 1e-5).")
  norm = {"group": "default", "layer": "layer_norm"}.get(get("feat_extract_norm"))
  if norm is None:
    raise ConversionError(f"{source}: unsupported feat_extract_norm="
                          f"{get('feat_extract_norm')!r}; choose from ['group', 'layer'].")
  # transformers' HuBERT has no pretraining head: take fairseq's recipe value (BASE 256, LARGE
  # 768) so that the config matches the released models' recipes.
  final_dim = (get("proj_codevector_dim") if family == "wav2vec2" else
               768 if get("hidden_size") >= 1024 else 256)
  if heads and get("codevector_dim") != final_dim:
    raise ConversionError(f"{source}: unsupported codevector_dim={get('codevector_dim')} != "
                          f"proj_codevector_dim={final_dim} (jaxssl's quantizer emits final_dim).")
  settings = {ours: get(theirs) for ours, theirs in SETTINGS.items()}
  if family == "wav2vec2":
    settings |= {ours: get(theirs) for ours, theirs in W2V2_SETTINGS.items()}
  spec = layout.Spec(
      family=family, num_layers=get("num_hidden_layers"), embed_dim=get("hidden_size"),
      mlp_dim=get("intermediate_size"), num_heads=get("num_attention_heads"),
      conv_dim=conv_dim[0], pos_conv_kernel=get("num_conv_pos_embeddings"),
      pos_conv_groups=get("num_conv_pos_embedding_groups"), mode=norm,
      conv_bias=bool(get("conv_bias")), layer_norm_first=bool(get("do_stable_layer_norm")),
      final_dim=final_dim, heads=heads, num_groups=get("num_codevector_groups"),
      num_vars=get("num_codevectors_per_group"), settings=settings)
  return spec, arch, dropped


def read(folder):
  """A transformers model folder -> (Spec, tensors named as in `layout.name_table`, notes).

  Raises:
    ConversionError: missing folder / config / weights, unsupported architecture, unreadable
      weight files.
  """
  folder = os.fspath(folder)
  cfg_path = os.path.join(folder, "config.json")
  if not os.path.isdir(folder):
    raise ConversionError(f"--input={folder}: no such transformers model folder.")
  if not os.path.isfile(cfg_path):
    raise ConversionError(f"{folder}: no config.json, so not a transformers model folder.")
  cfg = _read_json(cfg_path)
  spec, arch, dropped = spec_from_config(cfg, cfg_path)
  pre = os.path.join(folder, "preprocessor_config.json")
  if os.path.isfile(pre):
    spec.settings["data.normalize"] = bool(_read_json(pre).get("do_normalize", False))
  tensors = _read_weights(folder)
  prefix, notes, out = f"{spec.family}.", [], {}
  for name, x in tensors.items():
    if name.startswith(dropped):
      notes.append(f"dropped {arch}'s task head {name!r}")
      continue
    name = name[len(prefix):] if name.startswith(prefix) else name
    out[_LEGACY.get(name, name)] = x
  if "masked_spec_embed" not in out and not (cfg.get("mask_time_prob", 0.05) > 0
                                             or cfg.get("mask_feature_prob", 0.0) > 0):
    # transformers builds no mask embedding when SpecAugment is off; jaxssl always has one.
    out["masked_spec_embed"] = np.zeros((spec.embed_dim,), np.float32)
    notes.append("masked_spec_embed absent (mask_time_prob=0): mask_emb set to zeros")
  return spec, out, notes


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConversionError(f"{path}: not readable JSON ({e}).") from None


def _read_weights(folder):
  """All tensors of a folder: single or sharded safetensors, else single or sharded .bin."""
  for index, reader in (("model.safetensors.index.json", files.read_safetensors),
                        ("pytorch_model.bin.index.json", files.read_torch)):
    path = os.path.join(folder, index)
    if os.path.isfile(path):
      shards = sorted(set(_read_json(path).get("weight_map", {}).values()))
      if not shards:
        raise ConversionError(f"{path}: no weight_map.")
      out = {}
      for shard in shards:
        out.update(reader(os.path.join(folder, shard)))
      return out
  if os.path.isfile(os.path.join(folder, "model.safetensors")):
    return files.read_safetensors(os.path.join(folder, "model.safetensors"))
  if os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
    state = files.read_torch(os.path.join(folder, "pytorch_model.bin"))
    if not isinstance(state, dict):
      raise ConversionError(f"{folder}/pytorch_model.bin: not a state dict.")
    return state
  raise ConversionError(f"{folder}: no model.safetensors or pytorch_model.bin (nor a sharded "
                        "index.json of either).")


def config_from_spec(spec, config):
  """The transformers config.json dict for `spec`, with settings from the jaxssl `config`."""
  cfg = dict(
      model_type=spec.family,
      architectures=[("Wav2Vec2ForPreTraining" if spec.heads else "Wav2Vec2Model")
                     if spec.family == "wav2vec2" else "HubertModel"],
      hidden_size=spec.embed_dim, num_hidden_layers=spec.num_layers,
      num_attention_heads=spec.num_heads, intermediate_size=spec.mlp_dim, hidden_act="gelu",
      feat_extract_activation="gelu",
      feat_extract_norm="layer" if spec.mode == "layer_norm" else "group",
      conv_dim=[spec.conv_dim] * len(variants.CONV_KERNELS),
      conv_kernel=list(variants.CONV_KERNELS), conv_stride=list(variants.CONV_STRIDES),
      num_feat_extract_layers=len(variants.CONV_KERNELS), conv_bias=spec.conv_bias,
      num_conv_pos_embeddings=spec.pos_conv_kernel,
      num_conv_pos_embedding_groups=spec.pos_conv_groups,
      do_stable_layer_norm=spec.layer_norm_first, layer_norm_eps=1e-5)
  settings = dict(SETTINGS)
  if spec.family == "wav2vec2":
    settings |= W2V2_SETTINGS
    cfg.update(num_codevector_groups=spec.num_groups, num_codevectors_per_group=spec.num_vars,
               codevector_dim=spec.final_dim, proj_codevector_dim=spec.final_dim)
  else:
    cfg.update(feat_proj_layer_norm=True, conv_pos_batch_norm=False)
  for ours, theirs in settings.items():
    section, key = ours.rsplit(".", 1)
    node = config
    for part in section.split("."):
      node = node.get(part, {}) if hasattr(node, "get") else {}
    if hasattr(node, "get") and node.get(key) is not None:
      cfg[theirs] = node.get(key)
  return cfg


def write(folder, spec, tensors, config):
  """Writes config.json, model.safetensors and preprocessor_config.json into `folder`.

  Args:
    folder: output directory (created).
    spec: the architecture.
    tensors: dict name (`layout.name_table`'s HF column) -> numpy array in torch layout.
    config: the jaxssl config (settings, data.normalize).
  """
  os.makedirs(folder, exist_ok=True)
  # A *ForPreTraining model nests the encoder under its base-model prefix; *Model does not.
  prefix = f"{spec.family}." if spec.heads else ""
  heads = ("quantizer.", "project_q.", "project_hid.")
  named = {(k if k.startswith(heads) else prefix + k): v for k, v in tensors.items()}
  files.write_safetensors(os.path.join(folder, "model.safetensors"), named, {"format": "pt"})
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config_from_spec(spec, config), f, indent=2, sort_keys=True)
  normalize = bool(config.get("data", {}).get("normalize", False))
  with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
    json.dump(dict(feature_extractor_type="Wav2Vec2FeatureExtractor", feature_size=1,
                   sampling_rate=16000, padding_side="right", padding_value=0.0,
                   do_normalize=normalize, return_attention_mask=spec.mode == "layer_norm"),
              f, indent=2, sort_keys=True)
