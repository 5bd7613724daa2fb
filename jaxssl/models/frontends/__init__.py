"""Frontends: raw audio -> frame features. `model.frontend.name` is a key of `REGISTRY`.

Every encoder (wav2vec 2.0, HuBERT, MelHuBERT, fine-tuning, probes) builds its frontend here, so
any encoder config takes any frontend:

  cnn        wav2vec 2.0's conv feature encoder, 50 Hz (fields: mode, conv_bias,
             feature_grad_mult);
  mel        normalised log-mel at 100 Hz (fields: num_mels, features, stats);
  mel_stack  MelHuBERT's input: normalised 40-d log-mel stacked in pairs, 50 Hz (fields:
             num_mels, stack, features, stats).
  fbank_conv BEST-RQ's input (SpeechBrain's recipe, `fbank_conv.py`): normalised 80-d fbank,
             two stride-2 convs, 25 Hz (fields: num_mels, stack, channels, kernel_size,
             dropout_rate).

`features` picks the log-mel: "librosa" (Hann, Slaney mel, centred frames; the default) or
"kaldi" (Kaldi's fbank as MelHuBERT computes it, `kaldi_fbank.py`: whole frames only).
`stats` names the training set's per-band mean and std (`jaxssl.feature_stats`; the run copies
them into `mean` / `std` when it starts); empty: each utterance is normalised by its own.

A `Frontend` says how its config section becomes a module and how many frames a number of samples
gives; a fork adds one with `frontends.register("name", Frontend(...))`.
"""
import dataclasses
import functools
from typing import Any, Callable

import jax.numpy as jnp

from jaxssl import constants
from jaxssl import registry
from jaxssl.models import variants
from jaxssl.models.frontends import cnn
from jaxssl.models.frontends import fbank_conv
from jaxssl.models.frontends import kaldi_fbank
from jaxssl.models.frontends import mel_stack


@dataclasses.dataclass(frozen=True)
class Frontend:
  """One frontend kind.

  Attributes:
    module: (frontend section, size `Variant`, dtype) -> a module constructor whose instances map
      (audio [B, S], audio_valid [B, S] or None) -> [B, T, C].
    frames_for: (frontend section, samples: int or int array) -> frames T.
    hop: frontend section -> samples per output frame.
    centre: frontend section -> samples from frame t's first sample (t * hop) to the centre of
      what it sees (aligning frames with 10 ms labels, clustering/features.py).
  """
  module: Callable[[Any, variants.Variant, Any], Callable]
  frames_for: Callable[[Any, Any], Any]
  hop: Callable[[Any], int]
  centre: Callable[[Any], int]


REGISTRY = registry.Registry("frontend", "model.frontend.name")
register = REGISTRY.register
names = REGISTRY.names

register("cnn", Frontend(
    module=lambda fe, v, dtype: functools.partial(
        cnn.ConvFeatureEncoder, conv_dim=v.conv_dim, mode=fe.mode, conv_bias=fe.conv_bias,
        dtype=dtype),
    frames_for=lambda fe, n: variants.frames_for(n),
    hop=lambda fe: constants.FRAME_HOP,
    centre=lambda fe: variants.RECEPTIVE_FIELD // 2))


def _features(fe):
  return fe.get("features", "librosa")  # Configs written before 2026-12-06 have no field.


def _stack(fe):
  return fe.get("stack", 1)  # "mel" is "mel_stack" without stacking.


def _mel_centre(fe):
  """librosa's frames are centred on t * 160; Kaldi's 400-sample frames start there. A stack
  is centred between its first and last frame."""
  first = 0 if _features(fe) == "librosa" else kaldi_fbank.FRAME_LENGTH // 2
  return first + constants.MEL_HOP * (_stack(fe) - 1) // 2


def _mel_module(fe, v, dtype):
  del v, dtype
  mean, std = tuple(fe.get("mean", ())), tuple(fe.get("std", ()))
  if fe.get("stats", "") and not mean:
    raise ValueError(
        f"model.frontend.stats={fe.stats!r} is not filled in: the run copies the dataset's "
        "statistics into model.frontend.mean / std when it starts (jaxssl.feature_stats."
        "fill_config); build through `python -m jaxssl.main` or call fill_config first.")
  return functools.partial(mel_stack.MelStack, num_mels=fe.num_mels, stack=_stack(fe),
                           features=_features(fe), mean=mean, std=std)


for _name in ("mel", "mel_stack"):
  register(_name, Frontend(
      module=_mel_module,
      frames_for=lambda fe, n: mel_stack.frames_for(n, _stack(fe), _features(fe)),
      hop=lambda fe: constants.MEL_HOP * _stack(fe),
      centre=_mel_centre))


def _fbank_conv_module(fe, v, dtype):
  del v
  return functools.partial(
      fbank_conv.FbankConv, num_mels=fe.get("num_mels", 80), stack=fe.get("stack", 4),
      channels=tuple(fe.get("channels", (128, 32))), kernel_size=fe.get("kernel_size", 3),
      dropout_rate=fe.get("dropout_rate", 0.1), dtype=dtype)


# 40 ms frames; frame t's conv receptive field is centred on fbank frame 4t, itself centred on
# sample 640 t (SpeechBrain's centred STFT frames).
register("fbank_conv", Frontend(
    module=_fbank_conv_module,
    frames_for=lambda fe, n: fbank_conv.frames_for(n, fe.get("stack", 4)),
    hop=lambda fe: fbank_conv.HOP * fe.get("stack", 4),
    centre=lambda fe: 0))


def get(frontend_cfg) -> Frontend:
  """The `Frontend` a `model.frontend` section names."""
  return REGISTRY.get(frontend_cfg.name)


def frames_for(frontend_cfg, num_samples):
  """Output frames of `num_samples` samples (Python ints or int arrays)."""
  return get(frontend_cfg).frames_for(frontend_cfg, num_samples)


def hop(frontend_cfg) -> int:
  """Samples per output frame (320 for the CNN: 50 frames per second)."""
  return get(frontend_cfg).hop(frontend_cfg)


def centre(frontend_cfg) -> int:
  """Samples from a frame's start (t * hop) to the centre of what it sees."""
  return get(frontend_cfg).centre(frontend_cfg)


def frame_valid(frontend_cfg, valid_samples):
  """[B, S] sample padding mask (a prefix of True per row) -> [B, T] frame padding mask."""
  t = frames_for(frontend_cfg, valid_samples.shape[-1])
  lengths = frames_for(frontend_cfg, valid_samples.sum(-1))
  return jnp.arange(t)[None] < lengths[:, None]
