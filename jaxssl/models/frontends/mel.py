"""In-graph log-mel spectrogram (jnp): [B, S] audio -> [B, T, n_mels] at 100 Hz.

The input of mel-based models (MelHuBERT, https://arxiv.org/abs/2211.09944;
BEST-RQ, https://arxiv.org/abs/2202.01855), computed on the accelerator so the
data pipeline ships raw audio for every model. It reproduces
`jaxssl.data.features.log_mel` (librosa) to 1e-4 on log values: centered
frames with n_fft // 2 zeros on each side, periodic Hann window, |rfft|^2,
the Slaney mel filterbank from `librosa.filters.mel`, log(x + 1e-6).

Static shapes throughout (T = 1 + S // hop_length); the framing gather
indices and filterbank are numpy constants built once per shape at trace time.
"""
import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import scipy.signal

# Same floor as the offline features (features.LOG_FLOOR), so the two match.
LOG_FLOOR = 1e-6


def frames_for(num_samples, hop_length=160):
  """Number of frames `log_mel` returns for `num_samples` samples."""
  return 1 + num_samples // hop_length


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate=16000, n_fft=400, n_mels=80):
  """[n_fft // 2 + 1, n_mels] float32 Slaney mel filterbank (librosa defaults)."""
  return np.ascontiguousarray(
      librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).T.astype(np.float32))


@functools.lru_cache(maxsize=16)
def _window(win_length, n_fft):
  """Periodic Hann of win_length, zero-padded to n_fft and centered (as librosa)."""
  w = scipy.signal.get_window("hann", win_length, fftbins=True).astype(np.float32)
  left = (n_fft - win_length) // 2
  return np.pad(w, (left, n_fft - win_length - left))


def log_mel(audio, *, sample_rate=16000, n_mels=80, win_length=400, hop_length=160, n_fft=400):
  """Natural-log mel power spectrogram, jit-able.

  Args:
    audio: [B, S] waveform; int16 is scaled to [-1, 1), floats are used as is.
    sample_rate: Hz.
    n_mels: mel bands.
    win_length: Hann window length (400 = 25 ms at 16 kHz).
    hop_length: frame shift (160 = 10 ms).
    n_fft: FFT size, >= win_length.

  Returns:
    [B, T, n_mels] float32 with T = 1 + S // hop_length; log(power + 1e-6).
  """
  if audio.ndim != 2:
    raise ValueError(f"log_mel expects [B, S] audio, got shape {audio.shape}.")
  if win_length > n_fft:
    raise ValueError(f"win_length {win_length} > n_fft {n_fft}.")
  if audio.dtype == jnp.int16:
    x = audio.astype(jnp.float32) / 32768.0
  else:
    x = audio.astype(jnp.float32)
  num_frames = frames_for(audio.shape[1], hop_length)
  pad = n_fft // 2
  x = jnp.pad(x, ((0, 0), (pad, pad)))  # librosa center=True, pad_mode="constant".
  idx = np.arange(num_frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
  frames = x[:, idx] * _window(win_length, n_fft)  # [B, T, n_fft]
  spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # [B, T, n_fft // 2 + 1]
  # HIGHEST: on TPU/GPU the default matmul precision (bf16 passes / TF32)
  # would cost ~1e-2 in log-mel; this matmul is tiny next to the encoder.
  mel = jnp.matmul(power, mel_filterbank(sample_rate, n_fft, n_mels),
                   precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel + LOG_FLOOR)
