"""Upstreams for the probes: trained or imported checkpoints, the same architecture untrained, and
MFCC / filterbank baselines, all behind one call `upstream(batch) -> (hidden, valid)`.

s3prl's upstream contract (https://arxiv.org/abs/2105.01051, docs/reference.md): every hidden
state, L+1 of them for an L-layer Transformer (its input and each layer's output), at a known
frame rate. A jaxssl model gives them through its objective's `represent(params, batch) -> (x,
hidden tuple of L+1 [B, T, D], valid [B, T])`, jitted here once per batch shape; `upstream` names:

  <path>        a jaxssl training workdir, one of its ckpt/<step> directories, or a checkpoint
                written by `python -m jaxssl.convert` (HF / fairseq imports): config.json says
                which objective and architecture, `checkpointing.load_params` reads the weights;
  random_init   the architecture of `upstream_arch` (a config file or a checkpoint directory)
                with freshly initialised weights;
  mfcc, fbank   s3prl's baseline upstream (s3prl/upstream/baseline/{mfcc,fbank}.yaml,
                extracter.py): torchaudio.compliance.kaldi.{mfcc,fbank} with its defaults on the
                [-1, 1) waveform (no dither, povey window, pre-emphasis 0.97, snip_edges, 25 ms
                / 10 ms; MFCC: 23 mel bins, 13 cepstra with c0 and no energy, lifter 22; fbank:
                80 log-mel bins), + Δ + ΔΔ (torchaudio ComputeDeltas, win_length 5): 39-d and
                240-d at 100 Hz, T = 1 + (S - 400) // 160; then per-utterance CMVN
                (x - mean) / (1e-10 + std) with torch's unbiased std. Computed with the jnp
                Kaldi frontend (jaxssl/models/frontends/kaldi_fbank.py), one "layer";
                `mfcc_no_cmvn` / `fbank_no_cmvn` skip the CMVN. With CMVN every utterance's
                mean feature is zero, so a mean-pooled linear probe (speaker, language) is at
                chance, as SUPERB's FBANK baseline (SID 0.0009 accuracy).
  mfcc_librosa  jaxssl's earlier MFCC-39 (librosa: 40 Slaney mel bands, Hann window, dB, no
                lifter, centred frames T = 1 + S // 160; jaxssl/data/features.py) with the earlier
                CMVN (numpy std + 1e-5), and `mfcc_librosa_no_cmvn`: the baselines that the
                README's demo probe table (experiments/2026-11-probes-demo) was measured with.

Waveforms reach a checkpoint upstream scaled as in its pretraining (`data.normalize`).
"""
import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import constants
from jaxssl import distill  # pylint: disable=unused-import (students load as upstreams)
from jaxssl import feature_stats
from jaxssl import objectives
from jaxssl import pretrained
from jaxssl.data import audio as audio_lib
from jaxssl.data import features
from jaxssl.models.frontends import kaldi_fbank

BASELINES = ("mfcc", "fbank", "mfcc_no_cmvn", "fbank_no_cmvn", "mfcc_librosa",
             "mfcc_librosa_no_cmvn")
_DIMS = {"mfcc": 39, "fbank": 240, "mfcc_librosa": 39}
CMVN_EPS = 1e-10  # s3prl extracter.CMVN.


@dataclasses.dataclass
class Upstream:
  """A frozen feature extractor.

  Attributes:
    name: what was loaded ("mfcc", "random_init", a checkpoint path, ...).
    num_hidden: number of hidden states the probe weighs (L+1; 1 for the baselines).
    dim: their width D.
    frame_rate: frames per second (50 for the wav2vec 2.0 CNN, 100 for the baselines).
    normalize: whether waveforms must be normalised per utterance (the pretraining's
      data.normalize), which the probe's loader then does.
    encode: `batch -> (hidden [B, L+1, T, D], valid [B, T] bool)`; batch holds "audio" [B, S]
      float32 and "valid" [B, S] bool as the pipeline yields them.
    config: the pretraining config of a model upstream (None for the baselines).
  """
  name: str
  num_hidden: int
  dim: int
  frame_rate: float
  normalize: bool
  encode: Callable[[dict], tuple]
  config: Any = None

  def __call__(self, batch):
    return self.encode(batch)


@functools.partial(jax.jit, static_argnames=("kind", "cmvn"))
def kaldi_features(audio, num_samples, *, kind, cmvn):
  """s3prl's baseline features of a padded batch (see the module docstring).

  Args:
    audio: [B, S] float32 in [-1, 1), zero past each row's `num_samples`.
    num_samples: [B] valid samples per row.
    kind: "mfcc" (39-d) or "fbank" (240-d).
    cmvn: normalise each row over its valid frames.

  Returns:
    (features [B, T, D] float32, zero on invalid frames; valid [B, T] bool), T = frames_for(S).
    Padding changes no valid frame: a Kaldi frame only reads its own 400 samples.
  """
  if kind == "mfcc":
    f = kaldi_fbank.mfcc(audio, num_ceps=13, num_bins=23, cepstral_lifter=22.0,
                         window_type="povey", scale=1.0)
  else:
    f = kaldi_fbank.fbank(audio, num_bins=80, window_type="povey", scale=1.0)
  frames = kaldi_fbank.frames_for(num_samples)
  f = kaldi_fbank.deltas(f, frames, order=2, win_length=5)
  valid = jnp.arange(f.shape[1])[None] < frames[:, None]
  m = valid[..., None].astype(f.dtype)
  if cmvn:  # torch's x.std(dim=0) is unbiased (n - 1); one frame gives 0 instead of NaN.
    n = jnp.maximum(frames, 1)[:, None, None].astype(f.dtype)
    mean = (f * m).sum(1, keepdims=True) / n
    var = (((f - mean) * m) ** 2).sum(1, keepdims=True) / jnp.maximum(n - 1, 1)
    f = (f - mean) / (CMVN_EPS + jnp.sqrt(var))
  return f * m, valid


def baseline(name) -> Upstream:
  """s3prl's MFCC-39 or fbank-240 baseline, or the earlier librosa MFCC, with or without CMVN."""
  if name not in BASELINES:
    raise ValueError(f"Unknown baseline {name!r}; choose from {list(BASELINES)}.")
  cmvn = not name.endswith("_no_cmvn")
  kind = name[:-len("_no_cmvn")] if not cmvn else name
  dim = _DIMS[kind]

  def encode(batch):
    audio, valid = np.asarray(batch["audio"]), np.asarray(batch["valid"], bool)
    audio = audio_lib.to_float(audio) if audio.dtype == np.int16 else audio.astype(np.float32)
    lengths = valid.sum(-1)
    audio = np.where(valid, audio, np.float32(0))
    f, frames = kaldi_features(audio, lengths, kind=kind, cmvn=cmvn)
    return np.asarray(f)[:, None], np.asarray(frames)

  def encode_librosa(batch):
    audio, valid = np.asarray(batch["audio"]), np.asarray(batch["valid"], bool)
    num_frames = features.num_frames(audio.shape[1], constants.MEL_HOP)
    hidden = np.zeros((audio.shape[0], 1, num_frames, dim), np.float32)
    frames = np.zeros((audio.shape[0], num_frames), bool)
    for i, n in enumerate(valid.sum(-1)):
      if not n:
        continue  # A padding row: no frames.
      f = features.mfcc(audio[i, :n])
      if cmvn:
        f = (f - f.mean(0)) / (f.std(0) + 1e-5)
      hidden[i, 0, :len(f)] = f
      frames[i, :len(f)] = True
    return hidden, frames

  return Upstream(name=name, num_hidden=1, dim=dim,
                  frame_rate=constants.SAMPLE_RATE / constants.MEL_HOP, normalize=False,
                  encode=encode_librosa if kind == "mfcc_librosa" else encode)


_REPRESENT = {}  # id(config) -> (config, jitted represent): evals reuse one compiled forward.


def _jitted_represent(config):
  """`(params, audio, valid) -> (hidden [B, L+1, T, D], valid [B, T])`, jitted once per config."""
  if id(config) not in _REPRESENT:
    objective = objectives.build(config)

    @jax.jit
    def represent(params, audio, valid):
      _, hidden, frame_valid = objective.represent(params, {"audio": audio, "valid": valid})
      return jnp.stack(hidden, axis=1), frame_valid

    _REPRESENT[id(config)] = (config, represent)  # Holding config keeps its id unique.
  return _REPRESENT[id(config)][1]


def from_params(config, params, *, name) -> Upstream:
  """A model upstream from a pretraining config and its (possibly sharded) params.

  This is also what the pretraining `evals` hook uses on the live train state.
  """
  represent = _jitted_represent(config)

  def shape(num_samples):
    return jax.eval_shape(represent, params,
                          jax.ShapeDtypeStruct((1, num_samples), jnp.float32),
                          jax.ShapeDtypeStruct((1, num_samples), jnp.bool_))[0].shape

  # Frames added by one more second (a 400-sample receptive field makes 1 s give 49, not 50).
  (_, num_hidden, t1, dim) = shape(constants.SAMPLE_RATE)
  t2 = shape(2 * constants.SAMPLE_RATE)[2]
  frames_per_sec = t2 - t1

  def encode(batch):
    # No extra padding to share compiled shapes between splits: the default (group-norm)
    # wav2vec 2.0 frontend normalises over time, padding included, so padding changes features.
    return represent(params, jnp.asarray(batch["audio"], jnp.float32),
                     jnp.asarray(batch["valid"], bool))

  return Upstream(name=name, num_hidden=num_hidden, dim=dim, frame_rate=float(frames_per_sec),
                  normalize=bool(config.data.get("normalize", False)), encode=encode,
                  config=config)


def load(spec, *, arch="configs/wav2vec2/demo.py", seed=0) -> Upstream:
  """The upstream named by `spec` (see the module docstring).

  Args:
    spec: "mfcc", "fbank", "random_init" or a checkpoint path.
    arch: for random_init, the architecture: a config file ("file.py[:arg]") or a checkpoint
      directory whose config.json is used.
    seed: initialisation seed of random_init.
  """
  if not spec:
    raise ValueError("upstream is empty: pass --config.upstream=<checkpoint dir> or one of "
                     f"{list(BASELINES) + ['random_init']}.")
  if spec in BASELINES:
    return baseline(spec)
  if spec == "random_init":
    # A mel recipe's normalisation (MelHuBERT's training-set statistics), as its run would.
    config = feature_stats.fill_config(pretrained.load_config(arch))
    return from_params(config, pretrained.init_params(config, seed), name="random_init")
  config, params = pretrained.load_checkpoint(spec)
  return from_params(config, params, name=os.fspath(spec))
