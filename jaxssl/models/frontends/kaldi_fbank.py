"""Kaldi-compatible log mel filterbank in jnp: [B, S] audio -> [B, T, num_bins] at 100 Hz.

What `compute-fbank-feats`, `torchaudio.compliance.kaldi.fbank` and `kaldi-native-fbank` compute
(Kaldi's feature-window.cc, mel-computations.cc), without dither: MelHuBERT's input
(nervjack2/MelHuBERT extracts 40-bin fbank with torchaudio's Kaldi routine, Hamming window).
Per frame of 25 ms every 10 ms (snip_edges: only whole frames, T = 1 + (S - 400) // 160):
remove the DC offset, pre-emphasise (x[i] -= 0.97 x[i-1], x[0] -= 0.97 x[0]), window (povey or
hamming), zero-pad to 512, |rfft|^2, triangular filters spaced on Kaldi's mel scale
1127 ln(1 + f / 700) from 20 Hz to Nyquist (the Nyquist bin unused), log(max(x, float32 eps)).
Waveforms in [-1, 1) are scaled by 32768 first (Kaldi reads int16 samples), as MelHuBERT does.

Tested against kaldi-native-fbank (tests/models/test_kaldi_fbank.py).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

FRAME_LENGTH = 400  # 25 ms at 16 kHz.
FRAME_SHIFT = 160   # 10 ms.
PADDED = 512        # round_to_power_of_two(400).
PREEMPHASIS = 0.97
EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor (std::numeric_limits<float>::epsilon).
INT16_SCALE = 32768.0


def frames_for(num_samples):
  """Whole 25 ms frames every 10 ms in `num_samples` samples (ints, numpy or jnp int arrays;
  0 below 400 samples)."""
  n = 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT
  return n * (n > 0)


def _kaldi_mel(f):
  return 1127.0 * np.log(1.0 + f / 700.0)


@functools.lru_cache(maxsize=16)
def mel_banks(num_bins, sample_rate=16_000, low_freq=20.0, high_freq=0.0):
  """[PADDED // 2 + 1, num_bins] float32 Kaldi MelBanks (high_freq <= 0: Nyquist + high_freq)."""
  nyquist = 0.5 * sample_rate
  high = high_freq if high_freq > 0 else nyquist + high_freq
  mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high)
  delta = (mel_high - mel_low) / (num_bins + 1)
  mel = _kaldi_mel(np.arange(PADDED // 2) * sample_rate / PADDED)  # The Nyquist bin is unused.
  banks = np.zeros((PADDED // 2 + 1, num_bins), np.float64)
  for b in range(num_bins):
    left, centre, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    inside = (mel > left) & (mel < right)
    banks[:PADDED // 2, b] = np.where(inside, np.where(mel <= centre, up, down), 0.0)
  return banks.astype(np.float32)


@functools.lru_cache(maxsize=8)
def window(kind):
  """Kaldi's symmetric windows of FRAME_LENGTH samples: "povey" (Hann^0.85) or "hamming"."""
  a = 2 * np.pi / (FRAME_LENGTH - 1)
  i = np.arange(FRAME_LENGTH)
  if kind == "povey":
    return np.power(0.5 - 0.5 * np.cos(a * i), 0.85).astype(np.float32)
  if kind == "hamming":
    return (0.54 - 0.46 * np.cos(a * i)).astype(np.float32)
  raise ValueError(f"window={kind!r}: choose 'povey' or 'hamming'.")


def fbank(audio, *, num_bins=40, window_type="hamming", scale=INT16_SCALE):
  """Kaldi log filterbank energies, jit-able.

  Args:
    audio: [B, S] float waveform (int16 range after `scale`).
    num_bins: mel filters.
    window_type: "hamming" (MelHuBERT) or "povey" (Kaldi's default).
    scale: multiplies the waveform first (32768: [-1, 1) floats to int16 range).

  Returns:
    [B, T, num_bins] float32, T = frames_for(S).
  """
  if audio.ndim != 2:
    raise ValueError(f"fbank expects [B, S] audio, got shape {audio.shape}.")
  x = audio.astype(jnp.float32) * scale
  t = int(frames_for(audio.shape[1]))
  idx = np.arange(t)[:, None] * FRAME_SHIFT + np.arange(FRAME_LENGTH)[None]
  frames = x[:, idx]                                            # [B, T, 400]
  frames = frames - frames.mean(-1, keepdims=True)              # remove_dc_offset
  prev = jnp.concatenate([frames[..., :1], frames[..., :-1]], -1)
  frames = (frames - PREEMPHASIS * prev) * window(window_type)  # x[0] -= 0.97 x[0] too
  spec = jnp.fft.rfft(frames, n=PADDED, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2             # [B, T, 257]
  mel = jnp.matmul(power, mel_banks(num_bins), precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(mel, EPS))
