"""The wav2vec 2.0 / HuBERT speech encoder and the wav2vec 2.0 pretraining model.

`SpeechEncoder` is fairseq's Wav2Vec2Model without its pretraining heads: frontend (the conv
feature encoder, or any of `frontends.REGISTRY`; gradient scaled by `feature_grad_mult`) ->
LayerNorm -> projection to the model width -> input dropout -> learned mask embedding on masked
frames -> zeros on masked channels (fine-tuning's mask_channel_prob) -> Transformer encoder.
MelHuBERT's variant (`feature_layer_norm=False`, `mask_token="zeros"`): no LayerNorm, masked
frames zeroed before the projection, no embedding.
`Wav2Vec2Model` adds the Gumbel quantizer of the (unmasked) LayerNormed frontend features,
`project_q` and `final_proj`.
https://arxiv.org/abs/2006.11477
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import conformer
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import mixers
from jaxssl.models import quantizer as quantizer_lib
from jaxssl.models import variants


class SpeechEncoder(nn.Module):
  """Audio -> contextual frames. See `__call__` for shapes."""
  embed_dim: int
  make_frontend: Callable[..., nn.Module]
  make_encoder: Callable[..., nn.Module]
  feature_grad_mult: float = 1.0
  feature_layer_norm: bool = True
  mask_token: str = "learned"   # "learned": fairseq's mask_emb; "zeros": MelHuBERT's.
  input_dropout_rate: float = 0.0
  feature_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool,
               channel_masked=None):
    """Encodes a batch.

    Args:
      audio: [B, S] float waveform.
      valid: [B, T] bool frame padding mask (T = frontends.frames_for(S)).
      masked: optional [B, T] bool SSL mask; masked frames are replaced by `mask_emb` (or their
        input features by zeros, `mask_token="zeros"`).
      audio_valid: optional [B, S] bool sample padding mask (a prefix of True per row): the CNN's
        GroupNorm and the mel frontends' normalisation then take their statistics over valid
        frames only. None: every sample is real.
      train: enables dropout and LayerDrop.
      channel_masked: optional [B, D] bool: these channels of the projected features are zeroed
        in every frame, after the time mask (fairseq `apply_mask`, mask_channel_before=False).

    Returns:
      dict with "x" [B, T, D] final output, "hidden" tuple of L+1 [B, T, D], "features"
      [B, T, C] LayerNormed CNN features before masking (after feature dropout), and
      "features_pen" the mean squared frontend output over valid frames (fairseq's feature
      penalty).
    """
    if self.mask_token not in ("learned", "zeros"):
      raise ValueError(f"mask_token={self.mask_token!r}: choose 'learned' or 'zeros'.")
    feats = self.make_frontend(name="feature_extractor")(audio, audio_valid)
    feats = layers.grad_multiply(feats, self.feature_grad_mult)
    w = valid.astype(jnp.float32)[..., None]
    features_pen = (jnp.square(feats.astype(jnp.float32)) * w).sum() / jnp.maximum(
        w.sum() * feats.shape[-1], 1.0)
    if self.feature_layer_norm:
      feats = layers.layer_norm("layer_norm", self.dtype)(feats)
    inputs = feats
    if masked is not None and self.mask_token == "zeros":
      inputs = jnp.where(masked[..., None], 0.0, feats).astype(feats.dtype)
    x = layers.Dense(self.embed_dim, axes=("conv_out", "embed"), dtype=self.dtype,
                     kernel_init=layers.torch_linear_init, name="post_extract_proj")(inputs)
    x = nn.Dropout(self.input_dropout_rate)(x, deterministic=not train)
    unmasked = nn.Dropout(self.feature_dropout_rate)(feats, deterministic=not train)
    if self.mask_token == "learned":
      mask_emb = self.param("mask_emb", nn.with_logical_partitioning(
          nn.initializers.uniform(1.0), ("embed",)), (self.embed_dim,))
      if masked is not None:
        x = jnp.where(masked[..., None], mask_emb.astype(x.dtype), x)
    if channel_masked is not None:
      x = jnp.where(channel_masked[:, None, :], jnp.zeros((), x.dtype), x)
    x = nn.with_logical_constraint(x, ("act_batch", "act_time", "act_embed"))
    x, hidden = self.make_encoder(name="encoder")(x, valid=valid, train=train)
    return dict(x=x, hidden=hidden, features=unmasked, features_pen=features_pen)


class Wav2Vec2Model(nn.Module):
  """SpeechEncoder + quantizer + projections: audio -> (context c, quantized targets q)."""
  speech_encoder: Callable[..., nn.Module]
  final_dim: int
  num_groups: int = 2
  num_vars: int = 320
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, masked, temperature, train: bool, audio_valid=None,
               groups: int = 1):
    """Returns dict: "c" [B,T,F] = final_proj(x), "q" [B,T,F] = project_q(quantized features),
    the quantizer's perplexities and diversity term over `groups` blocks of rows (see
    quantizer.py), "features_pen" and "hidden" (see SpeechEncoder)."""
    out = self.speech_encoder(name="speech_encoder")(audio, valid=valid, masked=masked,
                                                     audio_valid=audio_valid, train=train)
    feats = out["features"]
    b, t, ch = feats.shape
    q, q_metrics = quantizer_lib.GumbelQuantizer(
        self.num_groups, self.num_vars, self.final_dim, self.dtype, name="quantizer")(
            feats.reshape(b * t, ch), weights=masked.reshape(-1).astype(jnp.float32),
            temperature=temperature, train=train, groups=groups)
    proj = functools.partial(layers.Dense, self.final_dim, dtype=self.dtype,
                             kernel_init=layers.torch_linear_init)
    q = proj(axes=(None, None), name="project_q")(q.reshape(b, t, self.final_dim))
    c = proj(axes=("embed", None), name="final_proj")(out["x"])
    return dict(c=c, q=q, hidden=out["hidden"], features_pen=out["features_pen"], **q_metrics)


def speech_encoder_from_config(model_cfg) -> functools.partial:
  """A SpeechEncoder constructor from a config's `model` section (see configs/common.py)."""
  v = variants.get(model_cfg.variant)
  dtype = jnp.dtype(model_cfg.dtype)
  fe = model_cfg.frontend
  mixer_kwargs = {k: v_ for k, v_ in model_cfg.mixer.items() if k != "name"}
  mixer_cls = mixers.get(model_cfg.mixer.name)
  fields = set(mixer_cls.__dataclass_fields__) - {"parent", "name", "dtype"}
  if set(mixer_kwargs) - fields:
    raise ValueError(f"model.mixer.{sorted(set(mixer_kwargs) - fields)[0]} is not a field of "
                     f"mixer {model_cfg.mixer.name!r}; valid: {sorted(fields)}.")
  # A mixer field the variant or the model section also has takes their value by default:
  # num_heads (mha; summary_mixing's block split), attention_dropout_rate (mha).
  defaults = {"num_heads": v.num_heads,
              "attention_dropout_rate": model_cfg.attention_dropout_rate}
  for name, value in defaults.items():
    if name in fields:
      mixer_kwargs.setdefault(name, value)
  mixer = functools.partial(mixer_cls, dtype=dtype, **mixer_kwargs)
  make_encoder = functools.partial(
      encoder_lib.Encoder, num_layers=v.num_layers, mlp_dim=v.mlp_dim, mixer=mixer,
      pos_conv_kernel=v.pos_conv_kernel, pos_conv_groups=v.pos_conv_groups,
      layer_norm_first=model_cfg.layer_norm_first, dropout_rate=model_cfg.dropout_rate,
      activation_dropout_rate=model_cfg.activation_dropout_rate,
      layerdrop_rate=model_cfg.layerdrop_rate, scan_layers=model_cfg.scan_layers,
      remat=model_cfg.remat, dtype=dtype, **conformer.encoder_kwargs(model_cfg))
  return functools.partial(
      SpeechEncoder, embed_dim=v.embed_dim, make_frontend=frontends.get(fe).module(fe, v, dtype),
      make_encoder=make_encoder, feature_grad_mult=fe.get("feature_grad_mult", 1.0),
      feature_layer_norm=model_cfg.feature_layer_norm, mask_token=model_cfg.mask_token,
      input_dropout_rate=model_cfg.input_dropout_rate,
      feature_dropout_rate=model_cfg.feature_dropout_rate, dtype=dtype)


def final_dim(model_cfg) -> int:
  return model_cfg.final_dim or variants.get(model_cfg.variant).final_dim


def wav2vec2_from_config(config) -> Wav2Vec2Model:
  """The full pretraining model from a config's `model` and `quantizer` sections."""
  return Wav2Vec2Model(
      speech_encoder=speech_encoder_from_config(config.model), final_dim=final_dim(config.model),
      num_groups=config.quantizer.num_groups, num_vars=config.quantizer.num_vars,
      dtype=jnp.dtype(config.model.dtype))


def represent(model_cfg, encoder_params, batch):
  """The SpeechEncoder of `model_cfg` as a frozen upstream (no masking, no dropout): batch
  "audio" / "valid" [B, S] -> (x [B, T, D], hidden tuple of L+1 [B, T, D], valid [B, T])."""
  valid = frontends.frame_valid(model_cfg.frontend, batch["valid"])
  out = speech_encoder_from_config(model_cfg)().apply(
      {"params": encoder_params}, batch["audio"], valid=valid, audio_valid=batch["valid"],
      train=False)
  return out["x"], out["hidden"], valid
