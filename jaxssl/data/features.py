"""Offline acoustic features (numpy + librosa): log-mel and MFCC with deltas.

Used for HuBERT iteration-1 targets (39-d MFCC + deltas at 100 Hz, clustered
with k-means into 100 units; https://arxiv.org/abs/2106.07447) and for
mel-input models (MelHuBERT, BEST-RQ). Never called per batch in training:
the in-graph twin of `log_mel` is `jaxssl.models.frontends.mel.log_mel`, and
the two agree to 1e-4 on log values.

Framing: 25 ms Hann windows (periodic, as `scipy.signal.get_window`), 10 ms
hop, centered with zero padding of n_fft // 2 on both sides (librosa's
`center=True, pad_mode="constant"`), so T = 1 + S // hop_length frames, at
least twice the CNN frontend's 50 Hz frames (HuBERT trims labels to match).
"""
import librosa
import numpy as np

from jaxssl.data import audio as audio_lib

# Added before the log so silence gives a finite floor (log(1e-6) = -13.8)
# instead of -inf. Shared with the jnp frontend so the two match.
LOG_FLOOR = 1e-6


def num_frames(num_samples, hop_length=160):
  """Frames `log_mel`/`mfcc` return for `num_samples` samples (centered framing)."""
  return 1 + num_samples // hop_length


def _as_float(x):
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"Expected mono audio [S], got shape {x.shape}.")
  return audio_lib.to_float(x) if x.dtype == np.int16 else x.astype(np.float32)


def mel_power(audio, *, sample_rate=16000, n_mels=80, win_length=400, hop_length=160,
              n_fft=400):
  """Mel power spectrogram. [S] int16 or float -> [T, n_mels] float32."""
  x = _as_float(audio)
  s = librosa.feature.melspectrogram(
      y=x, sr=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
      window="hann", center=True, pad_mode="constant", power=2.0, n_mels=n_mels)
  return s.T.astype(np.float32)


def log_mel(audio, *, sample_rate=16000, n_mels=80, win_length=400, hop_length=160,
            n_fft=400):
  """Natural-log mel power spectrogram.

  Args:
    audio: [S] int16 (scaled to [-1, 1)) or float waveform.
    sample_rate: Hz.
    n_mels: mel bands (librosa Slaney mel scale and area normalization).
    win_length: Hann window length in samples (400 = 25 ms at 16 kHz).
    hop_length: frame shift in samples (160 = 10 ms, i.e. 100 Hz).
    n_fft: FFT size (>= win_length).

  Returns:
    [T, n_mels] float32, T = 1 + S // hop_length; log(power + LOG_FLOOR).
  """
  return np.log(mel_power(audio, sample_rate=sample_rate, n_mels=n_mels,
                          win_length=win_length, hop_length=hop_length, n_fft=n_fft)
                + LOG_FLOOR).astype(np.float32)


def mfcc(audio, n_mfcc=13, with_deltas=True, *, sample_rate=16000, n_mels=40,
         win_length=400, hop_length=160, n_fft=400):
  """MFCCs (DCT-II of log-mel in dB), optionally with Kaldi-style deltas.

  Deltas are the +-2 frame regression of the MFCCs and ΔΔ the same regression
  of Δ (Kaldi `add-deltas`, torchaudio `compute_deltas`, as in HuBERT's
  `dump_mfcc_feature.py`), with edge frames repeated so any length works.

  Args:
    audio: [S] int16 or float waveform.
    n_mfcc: cepstral coefficients.
    with_deltas: append Δ and ΔΔ.
    sample_rate, n_mels, win_length, hop_length, n_fft: as in `log_mel`.

  Returns:
    [T, 3 * n_mfcc] (or [T, n_mfcc]) float32 at sample_rate / hop_length Hz.
  """
  power = mel_power(audio, sample_rate=sample_rate, n_mels=n_mels, win_length=win_length,
                    hop_length=hop_length, n_fft=n_fft)
  # No top_db clipping: it would make the floor depend on each utterance's peak.
  db = librosa.power_to_db(power.T, top_db=None)
  c = librosa.feature.mfcc(S=db, n_mfcc=n_mfcc)  # [n_mfcc, T]
  if with_deltas:
    d1 = librosa.feature.delta(c, width=5, order=1, mode="nearest")
    d2 = librosa.feature.delta(d1, width=5, order=1, mode="nearest")
    c = np.concatenate([c, d1, d2], axis=0)
  return c.T.astype(np.float32)
