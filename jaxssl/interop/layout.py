"""Parameter names and layouts of wav2vec 2.0 / HuBERT in jaxssl, HF transformers and fairseq.

One table (`name_table`) lists every parameter of an architecture (`Spec`) as a jaxssl path, the
transformers and fairseq names, and the layout change: torch Linear weights are [out, in] and
Conv1d weights [out, in, k] where flax uses [in, out] and [k, in, out], so both are the reversal
of all axes (`np.transpose`), which also takes weight norm's per-tap gain [1, 1, k] to our
[k, 1, 1]; the quantizer codebook loses torch's leading axis of 1. Conversion in either direction
is strict: a missing, unexpected or wrongly shaped tensor is an error naming it.
https://arxiv.org/abs/2006.11477 , https://arxiv.org/abs/2106.07447
"""
import dataclasses
from typing import Any

import numpy as np

from jaxssl.interop import ConversionError

FAMILIES = ("wav2vec2", "hubert")
FORMATS = ("hf", "fairseq")
ENCODER = "speech_encoder"  # jaxssl nests the encoder's params under this name (Wav2Vec2Model).


@dataclasses.dataclass(frozen=True)
class Spec:
  """What decides an architecture's parameter names and shapes, plus its training settings.

  Attributes:
    family: "wav2vec2" or "hubert".
    num_layers, embed_dim, mlp_dim, num_heads, conv_dim, pos_conv_kernel, pos_conv_groups:
      sizes as in `jaxssl.models.variants.Variant`.
    mode: feature-encoder mode, "default" (group norm after conv 0) or "layer_norm".
    conv_bias: whether the feature-encoder convs have biases.
    layer_norm_first: pre-LN Transformer (LARGE) instead of post-LN (BASE).
    final_dim: the contrastive / prediction space (and the quantizer's codevector size).
    heads: whether the pretraining heads are present (wav2vec 2.0: quantizer, project_q,
      final_proj; HuBERT: final_proj, label embeddings).
    num_groups, num_vars: the Gumbel quantizer's codebooks and entries per codebook.
    num_classes: HuBERT label embeddings per label set (fairseq dictionary sizes, including
      its 4 special symbols); their concatenation is `label_embs_concat`.
    untie_final_proj: HuBERT's final_proj is D -> final_dim x sets (one slice per label set)
      instead of D -> final_dim shared by all sets.
    settings: other config values carried over (dropouts, normalisation, temperatures), keyed
      by jaxssl config path, e.g. {"model.dropout_rate": 0.1, "data.normalize": True}.
  """
  family: str
  num_layers: int
  embed_dim: int
  mlp_dim: int
  num_heads: int
  conv_dim: int
  pos_conv_kernel: int
  pos_conv_groups: int
  mode: str
  conv_bias: bool
  layer_norm_first: bool
  final_dim: int
  heads: bool
  num_groups: int = 2
  num_vars: int = 320
  num_classes: tuple = ()
  untie_final_proj: bool = False
  settings: Any = dataclasses.field(default_factory=dict, compare=False)


def _linear(ours, hf, fs):
  return [(f"{ours}/dense/kernel", f"{hf}.weight", f"{fs}.weight", "T"),
          (f"{ours}/dense/bias", f"{hf}.bias", f"{fs}.bias", None)]


def _norm(ours, hf, fs):
  return [(f"{ours}/scale", f"{hf}.weight", f"{fs}.weight", None),
          (f"{ours}/bias", f"{hf}.bias", f"{fs}.bias", None)]


def name_table(spec):
  """Every parameter of `spec` as (jaxssl '/'-path, HF name, fairseq name, layout change).

  jaxssl paths use unrolled layers ("layer_00", ...); HF names are those of `Wav2Vec2Model` /
  `HubertModel` (heads under their `*ForPreTraining` names, without the "wav2vec2." prefix).
  The layout change is None (same array), "T" (reverse all axes) or "squeeze0" (drop axis 0).
  """
  e, fe = ENCODER, f"{ENCODER}/feature_extractor"
  rows = []
  for i in range(7):
    hf, fs = f"feature_extractor.conv_layers.{i}", f"feature_extractor.conv_layers.{i}"
    rows.append((f"{fe}/conv_{i}/kernel", f"{hf}.conv.weight", f"{fs}.0.weight", "T"))
    if spec.conv_bias:
      rows.append((f"{fe}/conv_{i}/bias", f"{hf}.conv.bias", f"{fs}.0.bias", None))
    if spec.mode == "layer_norm":
      rows += _norm(f"{fe}/norm_{i}", f"{hf}.layer_norm", f"{fs}.2.1")
    elif i == 0:
      rows += _norm(f"{fe}/norm_0", f"{hf}.layer_norm", f"{fs}.2")
  rows += _norm(f"{e}/layer_norm", "feature_projection.layer_norm", "layer_norm")
  rows += _linear(f"{e}/post_extract_proj", "feature_projection.projection", "post_extract_proj")
  rows.append((f"{e}/mask_emb", "masked_spec_embed", "mask_emb", None))
  pos_hf, pos_fs = "encoder.pos_conv_embed.conv", "encoder.pos_conv.0"
  rows += [(f"{e}/encoder/pos_conv/weight_g", f"{pos_hf}.parametrizations.weight.original0",
            f"{pos_fs}.weight_g", "T"),
           (f"{e}/encoder/pos_conv/weight_v", f"{pos_hf}.parametrizations.weight.original1",
            f"{pos_fs}.weight_v", "T"),
           (f"{e}/encoder/pos_conv/bias", f"{pos_hf}.bias", f"{pos_fs}.bias", None)]
  rows += _norm(f"{e}/encoder/layer_norm", "encoder.layer_norm", "encoder.layer_norm")
  for i in range(spec.num_layers):
    ours, hf, fs = f"{e}/encoder/layer_{i:02d}", f"encoder.layers.{i}", f"encoder.layers.{i}"
    for mine, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"),
                         ("out", "out_proj")):
      rows += _linear(f"{ours}/self_attn/{mine}", f"{hf}.attention.{theirs}",
                      f"{fs}.self_attn.{theirs}")
    rows += _norm(f"{ours}/self_attn_layer_norm", f"{hf}.layer_norm", f"{fs}.self_attn_layer_norm")
    rows += _linear(f"{ours}/ffn/fc1", f"{hf}.feed_forward.intermediate_dense", f"{fs}.fc1")
    rows += _linear(f"{ours}/ffn/fc2", f"{hf}.feed_forward.output_dense", f"{fs}.fc2")
    rows += _norm(f"{ours}/final_layer_norm", f"{hf}.final_layer_norm", f"{fs}.final_layer_norm")
  if spec.heads and spec.family == "wav2vec2":
    rows.append(("quantizer/codevectors", "quantizer.codevectors", "quantizer.vars", "squeeze0"))
    rows += _linear("quantizer/weight_proj", "quantizer.weight_proj", "quantizer.weight_proj")
    rows += _linear("project_q", "project_q", "project_q")
    rows += _linear("final_proj", "project_hid", "final_proj")
  elif spec.heads and spec.family == "hubert":
    # transformers has no HuBERT pretraining model: these exist in fairseq checkpoints only.
    rows += _linear("final_proj", None, "final_proj")
    rows.append(("label_embs_concat", None, "label_embs_concat", None))
  return rows


def head_shapes(spec):
  """Shapes of the HuBERT head params (named as in jaxssl/objectives/hubert.py's HubertModel,
  which this package does not import)."""
  if not (spec.heads and spec.family == "hubert"):
    return {}
  out = spec.final_dim * (len(spec.num_classes) if spec.untie_final_proj else 1)
  return {"final_proj/dense/kernel": (spec.embed_dim, out), "final_proj/dense/bias": (out,),
          "label_embs_concat": (sum(spec.num_classes), spec.final_dim)}


def _apply(x, change, inverse=False):
  if change == "T":
    return np.transpose(x)
  if change == "squeeze0":
    return x[None] if inverse else x[0]
  return x


def to_jaxssl(tensors, spec, fmt, shapes, *, source):
  """Source tensors (names already normalised to the table's) -> flat jaxssl params.

  Args:
    tensors: dict source name -> numpy array.
    spec: the architecture.
    fmt: "hf" or "fairseq": which column of the table names the tensors.
    shapes: dict jaxssl path -> expected shape (from the model built for `spec`).
    source: file or folder name for error messages.

  Returns:
    dict jaxssl '/'-path -> float32 numpy array.

  Raises:
    ConversionError: naming the first missing, unexpected or wrongly shaped tensor.
  """
  col = FORMATS.index(fmt) + 1
  table = {row[col]: row for row in name_table(spec) if row[col] is not None}
  _check_coverage({row[0] for row in table.values()}, shapes, fmt)
  missing = [k for k in table if k not in tensors]
  if missing:
    raise ConversionError(f"{source}: missing key {missing[0]!r} (jaxssl "
                          f"{table[missing[0]][0]!r}){_more(missing)}; the config describes a "
                          f"{_describe(spec)} model.")
  unexpected = sorted(k for k in tensors if k not in table)
  if unexpected:
    raise ConversionError(f"{source}: unexpected key {unexpected[0]!r}{_more(unexpected)}: no "
                          f"parameter of a {_describe(spec)} jaxssl model corresponds to it.")
  out = {}
  for name, (ours, *_, change) in table.items():
    x = _apply(np.asarray(tensors[name]), change)
    if tuple(x.shape) != tuple(shapes[ours]):
      theirs = tuple(np.asarray(tensors[name]).shape)
      want = tuple(_apply(np.zeros(shapes[ours], np.int8), change, inverse=True).shape)
      raise ConversionError(f"{source}: wrong shape for {name!r}: {theirs}, but the config "
                            f"({_describe(spec)}) implies {want}.")
    out[ours] = np.asarray(x, np.float32)
  return out


def from_jaxssl(flat, spec, fmt):
  """Flat jaxssl params -> dict of `fmt` names -> float32 numpy arrays in torch layout.

  Raises:
    ConversionError: a jaxssl parameter with no counterpart in `fmt` (e.g. another mixer), or
      one the table expects that `flat` lacks.
  """
  col = FORMATS.index(fmt) + 1
  rows = [row for row in name_table(spec) if row[col] is not None]
  known = {row[0] for row in rows}
  extra = sorted(set(flat) - known)
  if extra:
    raise ConversionError(f"jaxssl param {extra[0]!r}{_more(extra)} has no {fmt} counterpart.")
  out = {}
  for ours, *names, change in rows:
    if ours not in flat:
      raise ConversionError(f"jaxssl checkpoint lacks param {ours!r} of a {_describe(spec)} "
                            "model.")
    out[names[col - 1]] = np.ascontiguousarray(
        _apply(np.asarray(flat[ours], np.float32), change, inverse=True))
  return out


def _check_coverage(paths, shapes, fmt):
  """The table must name exactly the params of the model that jaxssl builds for the spec."""
  if set(paths) != set(shapes):
    diff = sorted(set(paths) ^ set(shapes))
    raise ConversionError(f"internal: the {fmt} name table and the jaxssl model disagree on "
                          f"{diff[:5]}.")


def _more(names):
  return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


def _describe(spec):
  ln = "pre-LN" if spec.layer_norm_first else "post-LN"
  heads = "with" if spec.heads else "without"
  return (f"{spec.family} {spec.num_layers}-layer {spec.embed_dim}-dim {ln}, {spec.mode} "
          f"feature encoder{' with conv bias' if spec.conv_bias else ''}, {heads} pretraining "
          "heads")
