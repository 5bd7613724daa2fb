"""Kaldi-compatible log mel filterbank in jnp: [B, S] audio -> [B, T, num_bins] at 100 Hz.

What `compute-fbank-feats`, `torchaudio.compliance.kaldi.fbank` and `kaldi-native-fbank` compute
(Kaldi's feature-window.cc, mel-computations.cc), without dither: MelHuBERT's input
(nervjack2/MelHuBERT extracts 40-bin fbank with torchaudio's Kaldi routine, Hamming window).
Per frame of 25 ms every 10 ms (snip_edges: only whole frames, T = 1 + (S - 400) // 160):
remove the DC offset, pre-emphasise (x[i] -= 0.97 x[i-1], x[0] -= 0.97 x[0]), window (povey or
hamming), zero-pad to 512, |rfft|^2, triangular filters spaced on Kaldi's mel scale
1127 ln(1 + f / 700) from 20 Hz to Nyquist (the Nyquist bin unused), log(max(x, float32 eps)).
Waveforms in [-1, 1) are scaled by 32768 first (Kaldi reads int16 samples), as MelHuBERT does.

`mfcc` is Kaldi's compute-mfcc-feats on these log energies (mel-computations.cc,
mfcc.cc; torchaudio.compliance.kaldi.mfcc): the orthonormal DCT-II of the log mel energies
(Kaldi's ComputeDctMatrix), first `num_ceps` kept, scaled by the cepstral lifter
1 + Q/2 sin(pi i / Q); c0 is the DCT's, not the frame's log energy (use_energy=False, as
torchaudio's default, fairseq's HuBERT MFCC and s3prl's baseline). `deltas` appends Δ and ΔΔ as
torchaudio.functional.compute_deltas (win_length 5, replicate padding) applied twice, as s3prl's
baseline extracter (s3prl/upstream/baseline/extracter.py) and fairseq's
examples/hubert/simple_kmeans/dump_mfcc_feature.py do (Kaldi's add-deltas differs at the edges).

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


@functools.lru_cache(maxsize=8)
def dct_matrix(num_ceps, num_bins):
  """[num_bins, num_ceps] float32 Kaldi DCT (ComputeDctMatrix): orthonormal DCT-II, as columns."""
  if not 0 < num_ceps <= num_bins:
    raise ValueError(f"num_ceps={num_ceps} must be in [1, num_bins={num_bins}].")
  n, k = np.arange(num_bins)[:, None], np.arange(num_ceps)[None]
  m = np.sqrt(2.0 / num_bins) * np.cos(np.pi / num_bins * (n + 0.5) * k)
  m[:, 0] = np.sqrt(1.0 / num_bins)
  return m.astype(np.float32)


@functools.lru_cache(maxsize=8)
def lifter(num_ceps, cepstral_lifter):
  """[num_ceps] float32 Kaldi cepstral liftering 1 + Q/2 sin(pi i / Q) (c0 unchanged)."""
  i = np.arange(num_ceps)
  return (1.0 + 0.5 * cepstral_lifter * np.sin(np.pi * i / cepstral_lifter)).astype(np.float32)


def mfcc(audio, *, num_ceps=13, num_bins=23, cepstral_lifter=22.0, window_type="povey",
         scale=INT16_SCALE):
  """Kaldi MFCCs (compute-mfcc-feats without dither and energy), jit-able.

  Args:
    audio: [B, S] float waveform (int16 range after `scale`).
    num_ceps: cepstra kept, c0 included (Kaldi's default 13).
    num_bins: mel filters (Kaldi's MFCC default 23).
    cepstral_lifter: Q of the lifter; 0 disables it.
    window_type: "povey" (Kaldi's default) or "hamming".
    scale: multiplies the waveform first; 1.0 for torchaudio on [-1, 1) floats (s3prl, fairseq).
      A scale only shifts c0 (by sqrt(num_bins) ln(scale^2)), away from the log floor.

  Returns:
    [B, T, num_ceps] float32, T = frames_for(S).
  """
  logmel = fbank(audio, num_bins=num_bins, window_type=window_type, scale=scale)
  c = jnp.matmul(logmel, dct_matrix(num_ceps, num_bins), precision=jax.lax.Precision.HIGHEST)
  return c * lifter(num_ceps, cepstral_lifter) if cepstral_lifter else c


def deltas(x, num_frames=None, *, order=2, win_length=5):
  """x with its deltas appended, as torchaudio.functional.compute_deltas applied `order` times.

  Delta t = sum_{k=-n..n} k x[t + k] / (2 sum_{k=1..n} k^2), n = (win_length - 1) // 2, with
  the edge frames repeated (torchaudio's mode="replicate"); ΔΔ is the delta of Δ. Each row's edge
  is its own last valid frame, so padding frames never leak into valid ones.

  Args:
    x: [B, T, D] features.
    num_frames: [B] valid frames per row (default: all T).
    order: how many deltas to append (2: Δ and ΔΔ).
    win_length: odd window length >= 3 (torchaudio's default 5).

  Returns:
    [B, T, (order + 1) D]: [x, Δx, ΔΔx, ...] along the last axis.
  """
  if win_length < 3 or win_length % 2 == 0:
    raise ValueError(f"win_length={win_length}: must be odd and >= 3.")
  b, t = x.shape[:2]
  n = (win_length - 1) // 2
  denom = n * (n + 1) * (2 * n + 1) / 3
  last = jnp.full((b,), t - 1) if num_frames is None else jnp.asarray(num_frames) - 1
  offsets = np.arange(-n, n + 1)
  idx = jnp.clip(np.arange(t)[None, :, None] + offsets, 0,
                 jnp.maximum(last, 0)[:, None, None])               # [B, T, W]
  weights = jnp.asarray(offsets / denom, x.dtype)
  out = [x]
  for _ in range(order):
    window_ = jax.vmap(lambda y, i: y[i])(out[-1], idx)            # [B, T, W, D]
    out.append(jnp.einsum("btwd,w->btd", window_, weights,
                          precision=jax.lax.Precision.HIGHEST))
  return jnp.concatenate(out, axis=-1)
