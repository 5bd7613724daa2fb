"""Per-utterance features to cluster: MFCC-39, log-mel, or a layer of a trained checkpoint.

HuBERT (https://arxiv.org/abs/2106.07447) clusters MFCC-39 at 100 Hz for iteration 1 and the
features of a middle layer of the iteration-1 model at 50 Hz for iteration 2 (fairseq
examples/hubert/simple_kmeans/dump_{mfcc,hubert}_feature.py); MelHuBERT clusters its own 10 ms
log-mel frames. Each extractor says where its frames sit in the audio, so that label i lines up
with the model frame that reads it:
- "mfcc": 13 MFCCs + deltas over 25 ms windows [160 i, 160 i + 400), as Kaldi's snip-edges
  framing in fairseq: label 2t then covers the same samples as CNN frame t;
- "logmel": 40 log-mel bands centred at 160 i (librosa's);
- "fbank": 40-d Kaldi fbank over [160 i, 160 i + 400), the frames MelHuBERT stacks, normalised
  by the training set's per-band statistics when given (`jaxssl.feature_stats`), as the model
  reads them;
- "layer": hidden state `layer` (1-based, fairseq's output_layer; 0 is the Transformer's input)
  of a checkpoint, one row per encoder frame (CNN frames are centred at 320 t + 200 samples).
"""
import dataclasses

import jax
import numpy as np

from jaxssl import constants
from jaxssl import distill  # pylint: disable=unused-import (students load as upstreams)
from jaxssl import feature_stats
from jaxssl import objectives
from jaxssl import pretrained
from jaxssl.data import batching
from jaxssl.data import features as features_lib
from jaxssl.models import frontends
from jaxssl.models import variants

KINDS = ("mfcc", "logmel", "fbank", "layer")
_CNN_HALF_WINDOW = 200  # The conv frontend's 400-sample receptive field, centred.
_BUCKET_SAMPLES = 8_000  # Model inputs are padded to 0.5 s steps: a few compiles, little padding.


@dataclasses.dataclass(frozen=True)
class Framing:
  """Where an extractor's frames sit: frame i is centred at sample hop * i + center_offset."""
  label_rate: int
  hop: int
  center_offset: int


def mfcc(audio):
  """[S] int16 -> [T, 39] float32 at 100 Hz, frame i over samples [160 i, 160 i + 400)."""
  # The centred librosa framing of features.mfcc puts frame i's centre at 160 i; dropping the
  # first 200 samples moves it to 160 i + 200, the centre of Kaldi's (and CNN frame i/2's) window.
  return features_lib.mfcc(audio[_CNN_HALF_WINDOW:], n_mfcc=13, with_deltas=True)


def logmel(audio, num_mels=40):
  """[S] int16 -> [T, num_mels] float32 at 100 Hz, frame i centred at sample 160 i."""
  return features_lib.log_mel(audio, n_mels=num_mels)


class Extractor:
  """`extractor(list of int16 [S_i]) -> list of [T_i, D] float32`, with its `framing`."""

  def __init__(self, kind, *, checkpoint="", layer=0, batch_size=16, stats=None):
    """`stats`: optional (mean, std) per band for "fbank" (`feature_stats.load`)."""
    if kind not in KINDS:
      raise ValueError(f"Unknown --features={kind!r}; choose from {list(KINDS)}.")
    if stats is not None and kind != "fbank":
      raise ValueError(f"--stats normalises --features=fbank, not {kind!r}.")
    self.kind = kind
    self.batch_size = batch_size
    self.stats = stats
    if kind == "mfcc":
      self.framing = Framing(100, 160, _CNN_HALF_WINDOW)
    elif kind == "logmel":
      self.framing = Framing(100, 160, 0)
    elif kind == "fbank":
      self.framing = Framing(100, 160, _CNN_HALF_WINDOW)  # Kaldi's whole 400-sample frames.
      self._fbank = feature_stats.features_fn("fbank", 40)
    else:
      self._load_model(checkpoint, layer)

  def _load_model(self, checkpoint, layer):
    if not checkpoint:
      raise ValueError("--features=layer needs --checkpoint=<workdir of a trained run>.")
    # What a probe's upstream takes: a workdir, one of its ckpt/<step> dirs or a converted model.
    self.config, self.params = pretrained.load_checkpoint(checkpoint)
    self.objective = objectives.build(self.config)
    num_layers = variants.get(self.config.model.variant).num_layers
    if not 0 <= layer <= num_layers:
      raise ValueError(f"--layer={layer}: the checkpoint's encoder has layers 1..{num_layers} "
                       "(0: the Transformer's input).")
    self.layer = layer
    self._represent = jax.jit(self._layer)
    fe = self.config.model.frontend
    hop = frontends.hop(fe)
    self.framing = Framing(constants.SAMPLE_RATE // hop, hop, frontends.centre(fe))

  def _layer(self, params, batch):
    _, hidden, valid = self.objective.represent(params, batch)
    return hidden[self.layer], valid.sum(-1)

  def __call__(self, audios):
    if self.kind == "mfcc":
      return [mfcc(a) for a in audios]
    if self.kind == "logmel":
      return [logmel(a) for a in audios]
    if self.kind == "fbank":
      feats = feature_stats.padded_features(self._fbank, "fbank", audios)
      if self.stats is not None:
        mean, std = (np.asarray(x, np.float32) for x in self.stats)
        feats = [(f - mean) / std for f in feats]
      return feats
    return self._layer_features(audios)

  def _layer_features(self, audios):
    """Batches of similar length, padded to 0.5 s steps, normalised as in training."""
    out = [None] * len(audios)
    order = np.argsort([len(a) for a in audios], kind="stable")
    for start in range(0, len(order), self.batch_size):
      rows = order[start:start + self.batch_size]
      length = -(-max(len(audios[i]) for i in rows) // _BUCKET_SAMPLES) * _BUCKET_SAMPLES
      batch_audio = [audios[i] for i in rows] + [None] * (self.batch_size - len(rows))
      audio, valid = batching.crop_batch(batch_audio, np.zeros(self.batch_size, np.int64),
                                         length, normalize=self.config.data.normalize)
      batch = dict(audio=audio, valid=valid)
      feats, frames = jax.device_get(self._represent(self.params, batch))
      for j, i in enumerate(rows):
        out[i] = feats[j, :frames[j]].astype(np.float32)
    return out

