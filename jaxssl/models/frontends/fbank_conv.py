"""BEST-RQ's input: SpeechBrain's 80-d fbank, normalised per utterance, then 2 strided 2-D convs.

Chiu et al. 2022, "Self-supervised learning with random-projection quantizer for speech
recognition" (BEST-RQ), https://arxiv.org/abs/2202.01855 , as SpeechBrain's open recipe builds it
(Whetten et al. 2024, https://arxiv.org/abs/2405.04296): speechbrain/speechbrain at commit
9c826ef, recipes/LibriSpeech/self-supervised-learning/BEST-RQ/{hparams/BEST-RQ.yaml,train.py}.

Features (`sb_fbank`, speechbrain/lobes/features.py `Fbank` and speechbrain/processing/
features.py `STFT`, `spectral_magnitude`, `Filterbank`, `InputNormalization`):
  centred 400-sample frames every 160 samples (torch.stft center=True, zero padding), periodic
  Hamming window, |X|^2, 80 triangular filters on the HTK mel scale between 0 and 8 kHz (each
  triangle as wide on both sides as its left band, Filterbank._triangular_filters),
  10 log10(max(x, 1e-10)) clamped at 80 dB below the utterance's maximum (top_db), then each
  mel band normalised by the utterance's own mean and (biased) std over its real frames
  (InputNormalization(norm_type="sentence"), variance clamped at 1e-10). T_fbank = 1 + S // 160.
Stacking (`stacked_fbank`): train.py's `pad_feats` zero-pads the frames to a multiple of 4
(`pad_to_divisible_by: 4`) and `feats.view(B, T // 4, -1)` concatenates 4 consecutive frames:
[B, T, 320] at 40 ms. These are the quantizer's input, and what the masking replaces by noise.
Conv (`FbankConv`, speechbrain/lobes/models/convolution.py `ConvolutionFrontEnd` / `ConvBlock`
with BEST-RQ.yaml's num_blocks 2, num_layers_per_block 1, out_channels (128, 32), kernel 3,
stride 2, no residual; speechbrain/nnet/CNN.py `Conv2d`):
  per block: Conv2d k3 s2 over (time, mel) with 'same' padding = 1 *reflected* frame / bin on each
  side (get_padding_elem, padding_mode="reflect"), torch's default init, bias -> LayerNorm over
  (mel, channels) with a (mel, channels) affine (sb LayerNorm(input_shape[2:]), eps 1e-5) ->
  LeakyReLU(0.01) -> Dropout(0.1). 80 bins -> 40 -> 20, so [B, T, 20 x 32 = 640] at 40 ms
  (TransformerASR.encode reshapes [B, T, F, C] -> [B, T, F * C]); the encoder's input Linear
  640 -> d is the SpeechEncoder's `post_extract_proj`.

Padding: every frame past an utterance's (multiple-of-4) length is zero, and the right reflection
of each conv reads that utterance's own last frames, so each real output frame equals what the
utterance alone would give, whatever the batch's padded length (SpeechBrain pads a batch and
reflects at the batch's end instead). `features=` hands the module ready stacked (e.g. masked)
features instead of computing them from the audio (`objectives/best_rq.py`).
"""
import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HOP = 160          # 10 ms fbank frames at 16 kHz (BEST-RQ.yaml hop_length: 10).
N_FFT = 400        # BEST-RQ.yaml n_fft: 400 (= win_length 25 ms).
STACK = 4          # BEST-RQ.yaml pad_to_divisible_by: 4; train.py stacks 4 frames.
AMIN = 1e-10       # Filterbank amin.
TOP_DB = 80.0      # Filterbank top_db.
NORM_EPS = 1e-10   # InputNormalization epsilon.


def fbank_frames_for(num_samples):
  """10 ms frames of `num_samples` samples (ints or int arrays): centred, 1 + S // 160."""
  return 1 + num_samples // HOP


def frames_for(num_samples, stack: int = STACK):
  """40 ms output frames: the fbank frames padded to a multiple of `stack`, over `stack`."""
  return -(-fbank_frames_for(num_samples) // stack)


def _to_mel(hz):
  return 2595.0 * np.log10(1.0 + hz / 700.0)


def _to_hz(mel):
  return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def filterbank(n_mels: int = 80, sample_rate: int = 16_000, n_fft: int = N_FFT):
  """[n_fft // 2 + 1, n_mels] float32: SpeechBrain's triangular filters (f_min 0, f_max sr/2)."""
  mel = np.linspace(_to_mel(0.0), _to_mel(sample_rate / 2), n_mels + 2, dtype=np.float32)
  hz = _to_hz(mel.astype(np.float64)).astype(np.float32)
  band = (hz[1:] - hz[:-1])[:-1]
  central = hz[1:-1]
  freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1, dtype=np.float32)
  slope = (freqs[None, :] - central[:, None]) / band[:, None]
  return np.ascontiguousarray(np.maximum(0.0, np.minimum(slope + 1.0, 1.0 - slope)).T)


@functools.lru_cache(maxsize=4)
def _hamming(n: int = N_FFT):
  """torch.hamming_window(n) (periodic)."""
  return (0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def sb_fbank(audio, lengths=None, *, n_mels: int = 80):
  """SpeechBrain's Fbank in dB with top_db per utterance. [B, S] -> [B, 1 + S // 160, n_mels].

  `lengths` [B]: real fbank frames per row (the top_db maximum is taken over those only);
  None: all.
  """
  x = audio.astype(jnp.float32)
  t = fbank_frames_for(audio.shape[1])
  x = jnp.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)))  # torch.stft center=True, constant pad.
  idx = np.arange(t)[:, None] * HOP + np.arange(N_FFT)[None, :]
  spec = jnp.fft.rfft(x[:, idx] * _hamming(N_FFT), n=N_FFT, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  mel = jnp.matmul(power, filterbank(n_mels), precision=jax.lax.Precision.HIGHEST)
  db = 10.0 * jnp.log10(jnp.maximum(mel, AMIN))
  if lengths is None:
    lengths = jnp.full((audio.shape[0],), t)
  real = (jnp.arange(t)[None] < lengths[:, None])[..., None]
  floor = jnp.max(jnp.where(real, db, -jnp.inf), axis=(1, 2), keepdims=True) - TOP_DB
  return jnp.maximum(db, floor)


def stacked_fbank(audio, valid=None, *, n_mels: int = 80, stack: int = STACK):
  """Normalised fbank stacked by `stack`: [B, S] (valid [B, S] or None) -> [B, T, stack * n_mels].

  Each utterance is normalised by its own statistics over its real frames; frames past them
  (and the zero padding up to a multiple of `stack`) are zero.
  """
  b = audio.shape[0]
  num = valid.sum(-1) if valid is not None else jnp.full((b,), audio.shape[1])
  lengths = fbank_frames_for(num)
  feats = sb_fbank(audio, lengths, n_mels=n_mels)
  t_fb = feats.shape[1]
  w = (jnp.arange(t_fb)[None] < lengths[:, None]).astype(jnp.float32)[..., None]
  n = jnp.maximum(w.sum(1, keepdims=True), 1.0)
  mean = (feats * w).sum(1, keepdims=True) / n
  var = (jnp.square(feats - mean) * w).sum(1, keepdims=True) / n
  feats = (feats - mean) / jnp.sqrt(jnp.maximum(var, NORM_EPS)) * w
  t = -(-t_fb // stack)
  feats = jnp.pad(feats, ((0, 0), (0, t * stack - t_fb), (0, 0)))
  return feats.reshape(b, t, stack * n_mels)


def _torch_bias_init(fan_in):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                   bound)


def _reflect_pad(x, length):
  """Pads [B, T, F, C] by one on each side of time and mel, reflecting (torch 'reflect').

  In time the right reflection is at each row's own `length` [B] (frames >= length are zero):
  position length + 1 of the padded row holds frame length - 2.
  """
  t = x.shape[1]
  xp = jnp.concatenate([x[:, 1:2], x, jnp.zeros_like(x[:, :1])], axis=1)  # [B, T + 2, F, C]
  src = jnp.clip(length - 2, 0, t - 1)[:, None, None, None]
  right = jnp.take_along_axis(x, src, axis=1)  # [B, 1, F, C]
  at = (jnp.arange(t + 2)[None] == (length + 1)[:, None])[..., None, None]
  xp = jnp.where(at, right, xp)
  return jnp.concatenate([xp[:, :, 1:2], xp, xp[:, :, -2:-1]], axis=2)


class FbankConv(nn.Module):
  """[B, S] audio -> [B, T, (n_mels / 4) * channels[-1]] at 40 ms (T = frames_for(S))."""
  num_mels: int = 80
  stack: int = STACK
  channels: Sequence[int] = (128, 32)
  kernel_size: int = 3
  dropout_rate: float = 0.1
  train: bool = False               # Dropout on (the objective sets it while training).
  features: Optional[Any] = None    # [B, T, stack * num_mels]: use these (e.g. noise-masked).
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, valid=None):
    """audio [B, S]; valid: optional [B, S] bool sample padding mask (a prefix per row)."""
    if self.kernel_size != 3:
      raise ValueError(f"model.frontend.kernel_size={self.kernel_size}: SpeechBrain's 'same' "
                       "padding of a stride-2 conv is one frame per side, i.e. kernel 3.")
    feats = self.features
    if feats is None:
      feats = stacked_fbank(audio, valid, n_mels=self.num_mels, stack=self.stack)
    b, t, _ = feats.shape
    num = valid.sum(-1) if valid is not None else jnp.full((b,), audio.shape[1])
    length = frames_for(num, self.stack) * self.stack  # Real fbank frames, padded to 4.
    x = feats.reshape(b, t * self.stack, self.num_mels, 1).astype(self.dtype)
    for i, ch in enumerate(self.channels):
      x = _reflect_pad(x, length)
      fan_in = 9 * x.shape[-1]
      x = nn.Conv(ch, (3, 3), strides=(2, 2), padding="VALID", dtype=self.dtype,
                  kernel_init=nn.with_logical_partitioning(
                      nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                      (None, None, "conv_in", "conv_out")),
                  bias_init=nn.with_logical_partitioning(_torch_bias_init(fan_in),
                                                         ("conv_out",)),
                  name=f"conv_{i}")(x)
      length = -(-length // 2)
      x = nn.LayerNorm(epsilon=1e-5, reduction_axes=(-2, -1), feature_axes=(-2, -1),
                       dtype=self.dtype,
                       scale_init=nn.with_logical_partitioning(nn.initializers.ones,
                                                               (None, None)),
                       bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                              (None, None)),
                       name=f"norm_{i}")(x)
      x = nn.leaky_relu(x, 0.01)
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not self.train)
      x = jnp.where((jnp.arange(x.shape[1])[None] < length[:, None])[..., None, None], x,
                    jnp.zeros((), x.dtype))
    if x.shape[1] != t:
      raise ValueError(f"fbank_conv: {t} stacked frames gave {x.shape[1]} conv frames; "
                       f"model.frontend.stack={self.stack} must be 2 ** len(channels).")
    return x.reshape(b, t, -1)
