"""data2vec 2.0's audio encoder: the local encoder, the context encoder, and both for fine-tuning.

Baevski et al. 2022, https://arxiv.org/abs/2212.07525 ; fairseq examples/data2vec/models/
modalities/audio.py (AudioEncoder), models/modalities/base.py (ModalitySpecificEncoder
contextualized_features, apply_mask) and fairseq/models/wav2vec/wav2vec_asr.py (Wav2VecEncoder
with a data2vec_multi checkpoint: the model without its decoder and EMA teacher).

  LocalEncoder         audio -> the wav2vec 2.0 CNN (gradient scaled by feature_grad_mult) ->
                       LayerNorm -> Linear to the model width (AudioEncoder local_encoder and
                       project_features); params feature_extractor, layer_norm,
                       post_extract_proj: the objective's params["local_encoder"].
  make_encoder         the context encoder: `model.pos_conv.depth` conv positional layers,
                       LayerNorm, dropout, blocks with ALiBi (`model.alibi`): the objective's
                       params["encoder"].
  SpeechEncoder        both in one module for fine-tuning, with the call signature and outputs
                       of `wav2vec2.SpeechEncoder`, so the fine-tuning models, PEFT and the ladder
                       take it as they take that one. Its params are named as that one's, less
                       mask_emb: {feature_extractor, layer_norm, post_extract_proj, encoder}, so
                       the frozen-CNN pattern `speech_encoder/(?!feature_extractor/)` applies
                       unchanged and a pretraining checkpoint's local_encoder/* and encoder/*
                       are its params under another prefix.

Fine-tuning masks (fairseq apply_mask with remove_masked False): the time-masked frames of the
projected local features are zeroed (data2vec 2.0 has no learned mask embedding;
encoder_zero_mask: fairseq's fine-tuning default zero_mask=False puts N(0, mask_noise_std = 0.01)
noise there instead, zeros here), then the masked channels are zeroed; the positional encoder
reads the masked features, as in pretraining. No input or feature dropout (data2vec 2.0 has
neither: the model section's input_dropout_rate / feature_dropout_rate are not read).
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import layers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model


def _project_features(make_frontend, embed_dim, feature_grad_mult, dtype, audio, audio_valid):
  """CNN -> grad mult -> LayerNorm -> Linear, as submodules of the calling (compact) module."""
  feats = make_frontend(name="feature_extractor")(audio, audio_valid)
  feats = layers.grad_multiply(feats, feature_grad_mult)
  feats = layers.layer_norm("layer_norm", dtype)(feats)
  return layers.Dense(embed_dim, axes=("conv_out", "embed"), dtype=dtype,
                      kernel_init=layers.torch_linear_init, name="post_extract_proj")(feats)


class LocalEncoder(nn.Module):
  """Audio -> [B, T, D]: frontend -> (grad mult) -> LayerNorm -> Linear (project_features)."""
  make_frontend: Any
  embed_dim: int
  feature_grad_mult: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, audio_valid=None):
    return _project_features(self.make_frontend, self.embed_dim, self.feature_grad_mult,
                             self.dtype, audio, audio_valid)


def make_encoder(model_cfg, *, ffn_targets: bool) -> functools.partial:
  """The context `Encoder` constructor of a data2vec 2.0 `model` section; `ffn_targets` picks
  the hidden states (the blocks' FFN outputs, the teacher's targets) and nothing else."""
  make = wav2vec2_model.speech_encoder_from_config(model_cfg).keywords["make_encoder"]
  extra = dict(ffn_targets=ffn_targets)
  pos = model_cfg.get("pos_conv", None)
  if pos and pos.depth:
    extra |= dict(pos_conv_layers=pos.depth,
                  pos_conv_kernel=max(3, pos.width // pos.depth))  # AudioEncoder's k.
  if model_cfg.get("alibi", False):
    extra |= dict(alibi_heads=model_cfg.mixer.get("num_heads",
                                                  variants.get(model_cfg.variant).num_heads))
  return functools.partial(make, **extra)


class SpeechEncoder(nn.Module):
  """The fine-tuned data2vec 2.0 encoder: audio -> contextual frames (see the module docstring)."""
  embed_dim: int
  make_frontend: Callable[..., nn.Module]
  make_encoder: Callable[..., nn.Module]
  feature_grad_mult: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool,
               channel_masked=None):
    """Encodes a batch.

    Args:
      audio: [B, S] float waveform.
      valid: [B, T] bool frame padding mask.
      masked: optional [B, T] bool time mask: these frames of the projected features are zeroed.
      audio_valid: optional [B, S] bool sample padding mask (see wav2vec2.SpeechEncoder).
      train: enables dropout and LayerDrop.
      channel_masked: optional [B, D] bool: these channels of the projected features are zeroed
        in every frame, after the time mask.

    Returns:
      dict with "x" [B, T, D] the last block's output, "hidden" tuple of L+1 [B, T, D] (the
      blocks' input and outputs) and "features" [B, T, D] the projected local features before
      masking.
    """
    feats = _project_features(self.make_frontend, self.embed_dim, self.feature_grad_mult,
                              self.dtype, audio, audio_valid)
    x = feats
    if masked is not None:
      x = jnp.where(masked[..., None], jnp.zeros((), x.dtype), x)
    if channel_masked is not None:
      x = jnp.where(channel_masked[:, None, :], jnp.zeros((), x.dtype), x)
    x = nn.with_logical_constraint(x, ("act_batch", "act_time", "act_embed"))
    x, hidden = self.make_encoder(name="encoder")(x, valid=valid, train=train)
    return dict(x=x, hidden=hidden, features=feats)


def speech_encoder_from_config(model_cfg) -> functools.partial:
  """A `SpeechEncoder` constructor from a data2vec 2.0 config's `model` section."""
  kw = wav2vec2_model.speech_encoder_from_config(model_cfg).keywords
  return functools.partial(
      SpeechEncoder, embed_dim=kw["embed_dim"], make_frontend=kw["make_frontend"],
      make_encoder=make_encoder(model_cfg, ffn_targets=False),
      feature_grad_mult=kw["feature_grad_mult"], dtype=kw["dtype"])
