"""fairseq wav2vec 2.0 / HuBERT checkpoints -> `layout.Spec` and tensors.

A fairseq checkpoint is a torch pickle {"cfg" or "args", "model": state dict, ...}: newer ones
keep the hydra config as nested dicts (or pickled omegaconf objects), older ones an
argparse.Namespace; both are read through inert stubs (files.read_torch), never by importing
fairseq. Pretraining checkpoints (model `_name` / arch "wav2vec2" or "hubert") and CTC
fine-tuned ones ("wav2vec_ctc" / "hubert_ctc": the encoder under "w2v_encoder.w2v_model.", its
pretraining config in `w2v_args`; the CTC projection is dropped) are read. Defaults are those of
fairseq's Wav2Vec2Config / HubertConfig. https://github.com/facebookresearch/fairseq
"""
import ast

from jaxssl.interop import ConversionError
from jaxssl.interop import files
from jaxssl.interop import layout
from jaxssl.models import variants

DEFAULTS = dict(
    extractor_mode="default", encoder_layers=12, encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu",
    layer_type="transformer", dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    encoder_layerdrop=0.0, dropout_input=0.0, dropout_features=0.0, final_dim=0,
    layer_norm_first=False,
    conv_feature_layers="[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    conv_bias=False, logit_temp=0.1, quantize_input=False, target_glu=False,
    feature_grad_mult=1.0, quantizer_depth=1, latent_vars=320, latent_groups=2, latent_dim=0,
    mask_length=10, mask_prob=0.65, num_negatives=100, cross_sample_negatives=0, conv_pos=128,
    conv_pos_groups=16, pos_conv_depth=1, latent_temp=(2.0, 0.5, 0.999995),
    untie_final_proj=False)
FINETUNED = {"wav2vec_ctc": "w2v_encoder.w2v_model.", "hubert_ctc": "w2v_encoder.w2v_model."}
SETTINGS = {
    "model.dropout_rate": "dropout", "model.attention_dropout_rate": "attention_dropout",
    "model.activation_dropout_rate": "activation_dropout",
    "model.input_dropout_rate": "dropout_input", "model.layerdrop_rate": "encoder_layerdrop",
    "model.frontend.feature_grad_mult": "feature_grad_mult", "masking.prob": "mask_prob",
    "masking.span": "mask_length", "objective.logit_temp": "logit_temp",
}
W2V2_SETTINGS = {
    "model.feature_dropout_rate": "dropout_features", "quantizer.temp": "latent_temp",
    "objective.num_negatives": "num_negatives",
    "objective.cross_sample_negatives": "cross_sample_negatives",
}
# Weight norm under torch's parametrizations (fairseq run on torch >= 2.1) -> fairseq's names.
_POS = "encoder.pos_conv.0."
_ALIASES = {_POS + "parametrizations.weight.original0": _POS + "weight_g",
            _POS + "parametrizations.weight.original1": _POS + "weight_v"}


def parse_conv_layers(text, source="conv_feature_layers"):
  """fairseq's conv_feature_layers string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", evaluated
  without eval(): only list/tuple literals of ints, + and * are accepted."""
  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, (ast.List, ast.Tuple)):
      items = [ev(e) for e in node.elts]
      return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
      return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
      a, b = ev(node.left), ev(node.right)
      return a + b if isinstance(node.op, ast.Add) else a * b
    raise ConversionError(f"{source}: cannot parse conv_feature_layers={text!r}.")
  try:
    layers = ev(ast.parse(str(text), mode="eval"))
  except SyntaxError:
    raise ConversionError(f"{source}: cannot parse conv_feature_layers={text!r}.") from None
  if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
    raise ConversionError(f"{source}: conv_feature_layers={text!r} is not a list of "
                          "(dim, kernel, stride).")
  return layers


def read(path):
  """A fairseq checkpoint -> (Spec, tensors named as in `layout.name_table`, notes).

  Raises:
    ConversionError: unreadable file, no model state / config, unsupported architecture.
  """
  ckpt = files.read_torch(path)
  if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
    raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' state dict).")
  model_cfg, task_cfg = _configs(ckpt, path)
  name = model_cfg.get("_name") or model_cfg.get("arch")
  state, notes = dict(ckpt["model"]), []
  if name in FINETUNED:
    inner = files.plain(model_cfg.get("w2v_args"))
    if not isinstance(inner, dict):
      raise ConversionError(f"{path}: fine-tuned {name!r} checkpoint without w2v_args (the "
                            "pretrained model's config); convert the pretrained checkpoint.")
    model_cfg, task_cfg = (inner["model"], inner.get("task") or {}) if "model" in inner else (
        inner, inner)
    prefix = FINETUNED[name]
    name = model_cfg.get("_name") or model_cfg.get("arch")
    notes += [f"dropped fine-tuning head {k!r}" for k in sorted(state) if not k.startswith(prefix)]
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
  if name not in layout.FAMILIES:
    raise ConversionError(f"{path}: unsupported fairseq architecture {name!r}; supported: "
                          f"{list(layout.FAMILIES)} and fine-tuned {sorted(FINETUNED)}.")
  state = {_ALIASES.get(k, k): v for k, v in state.items()}
  spec = spec_from_config(model_cfg, task_cfg, name, state, path, _dictionary_sizes(ckpt))
  if name == "hubert" and not spec.heads and "final_proj.weight" in state:
    notes.append("dropped final_proj: no label embeddings (a fine-tuning checkpoint)")
    state = {k: v for k, v in state.items() if not k.startswith("final_proj.")}
  return spec, state, notes


def _dictionary_sizes(ckpt):
  """Symbols per label dictionary in HuBERT's task_state (pickled fairseq Dictionary objects,
  read as stubs), or () when absent."""
  dicts = files.plain(ckpt.get("task_state") or {})
  dicts = dicts.get("dictionaries") if isinstance(dicts, dict) else None
  if not isinstance(dicts, list) or not all(isinstance(d, dict) and "symbols" in d
                                            for d in dicts):
    return ()
  return [len(d["symbols"]) for d in dicts]


def _configs(ckpt, path):
  cfg = files.plain(ckpt.get("cfg"))
  if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
    return cfg["model"], cfg.get("task") or {}
  args = files.plain(ckpt.get("args"))
  if isinstance(args, dict) and args:
    return args, args  # Old checkpoints: one flat Namespace for model and task.
  raise ConversionError(f"{path}: no 'cfg' or 'args' in the checkpoint, so its architecture "
                        "is unknown.")


def spec_from_config(model_cfg, task_cfg, family, state, source, dictionary_sizes=()):
  """The Spec of a fairseq model config (+ task config for `normalize`, state for the heads,
  HuBERT's label dictionary sizes when the checkpoint's task_state holds them)."""
  get = lambda k: DEFAULTS[k] if model_cfg.get(k) is None else model_cfg[k]
  for field, want in (("activation_fn", "gelu"), ("layer_type", "transformer"),
                      ("pos_conv_depth", 1), ("quantize_input", False), ("target_glu", False),
                      ("quantizer_depth", 1)):
    if get(field) != want:
      raise ConversionError(f"{source}: unsupported {field}={get(field)!r} (jaxssl builds "
                            f"{want!r}).")
  conv = parse_conv_layers(get("conv_feature_layers"), source)
  if [(k, s) for _, k, s in conv] != list(zip(variants.CONV_KERNELS, variants.CONV_STRIDES)) or (
      len({d for d, _, _ in conv}) != 1):
    raise ConversionError(f"{source}: unsupported conv_feature_layers={conv}: jaxssl's feature "
                          "encoder has kernels 10,3,3,3,3,2,2, strides 5,2,...,2, one width.")
  mode = get("extractor_mode")
  if mode not in ("default", "layer_norm"):
    raise ConversionError(f"{source}: unsupported extractor_mode={mode!r}.")
  embed = get("encoder_embed_dim")
  final_dim = get("final_dim") or embed
  if family == "wav2vec2":
    heads = "final_proj.weight" in state
    if heads and "quantizer.vars" not in state:
      raise ConversionError(f"{source}: unsupported wav2vec 2.0 without a target quantizer "
                            "(quantize_targets=False): 'quantizer.vars' is missing.")
    if get("latent_dim") not in (0, final_dim):
      raise ConversionError(f"{source}: unsupported latent_dim={get('latent_dim')} != final_dim "
                            f"{final_dim}.")
    kw = dict(num_groups=get("latent_groups"), num_vars=get("latent_vars"))
  else:
    heads = "label_embs_concat" in state
    kw = {}
    if heads:
      total = int(state["label_embs_concat"].shape[0])
      sizes = dictionary_sizes or [total]
      if sum(sizes) != total:
        raise ConversionError(f"{source}: the task's dictionaries ({sizes}) do not add up to "
                              f"label_embs_concat's {total} rows.")
      kw = dict(num_classes=tuple(sizes), untie_final_proj=bool(get("untie_final_proj")))
  settings = {ours: get(theirs) for ours, theirs in SETTINGS.items()}
  if family == "wav2vec2":
    settings |= {ours: get(theirs) for ours, theirs in W2V2_SETTINGS.items()}
    temp = settings["quantizer.temp"]
    try:  # Old (argparse) checkpoints keep it as the string "(2,0.5,0.999995)".
      temp = ast.literal_eval(temp) if isinstance(temp, str) else temp
      settings["quantizer.temp"] = [float(t) for t in temp]
    except (ValueError, SyntaxError, TypeError):
      raise ConversionError(f"{source}: cannot parse latent_temp={temp!r}.") from None
  if task_cfg.get("normalize") is not None:
    settings["data.normalize"] = bool(task_cfg["normalize"])
  return layout.Spec(
      family=family, num_layers=get("encoder_layers"), embed_dim=embed,
      mlp_dim=get("encoder_ffn_embed_dim"), num_heads=get("encoder_attention_heads"),
      conv_dim=conv[0][0], pos_conv_kernel=get("conv_pos"), pos_conv_groups=get("conv_pos_groups"),
      mode=mode, conv_bias=bool(get("conv_bias")), layer_norm_first=bool(get("layer_norm_first")),
      final_dim=final_dim, heads=heads, settings=settings, **kw)
