"""Audio decoding and validation for dataset builders (numpy, per utterance).

`load_audio` turns one file (wav/flac/ogg/mp3, any rate, any channel count)
into 16 kHz mono int16, or raises `BadAudio` with a reason code from a fixed
set, so builders can skip bad files, count them per reason and keep going.
int16 is the storage type: half the bytes of float32 and exactly what 16-bit
corpora hold. Models see `normalize(to_float(x))` (wav2vec 2.0 LARGE /
XLS-R `normalize: true`, https://arxiv.org/abs/2006.11477).
"""
import os
import re

import numpy as np
import soundfile as sf
import soxr

# Reason codes, in the order the skip summary prints them.
REASONS = ("unreadable", "empty", "too_short", "non_finite")

# wav2vec 2.0's conv feature encoder sees 400 samples (25 ms) per frame: a
# shorter input yields no frame at all.
MIN_SAMPLES = 400

# Subtypes libsndfile decodes to floats; only these can hold NaN/inf. MP3 and
# Vorbis decoders produce floats internally, so they take the float path too.
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II",
                   "MPEG_LAYER_III")
# libsndfile's header log reports "data : <declared> (should be <actual>)" when
# a WAV's data chunk is cut short; it then silently returns fewer frames.
_WAV_DATA_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers leave these placeholders as the data size: not truncation.
_STREAMING_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


class BadAudio(Exception):
  """An audio file that cannot become a training example.

  Attributes:
    reason: one of `REASONS`.
    path: the offending file.
    detail: a human-readable explanation (decoder message, counts).
  """

  def __init__(self, reason, path, detail=""):
    if reason not in REASONS:
      raise ValueError(f"Unknown BadAudio reason {reason!r}; choose from {REASONS}.")
    self.reason = reason
    self.path = os.fspath(path)
    self.detail = detail
    super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


def load_audio(path, *, target_rate=16000, min_samples=MIN_SAMPLES):
  """Decodes, downmixes and resamples one audio file.

  Args:
    path: a wav/flac/ogg/mp3 (anything libsndfile reads) file.
    target_rate: output sample rate in Hz; other rates are resampled (soxr HQ).
    min_samples: shortest accepted output length (after resampling).

  Returns:
    audio: [S] int16 at `target_rate`, mono (channels averaged).

  Raises:
    BadAudio: reason "unreadable" (missing, corrupt, truncated), "empty"
      (0 samples), "too_short" (< min_samples) or "non_finite" (NaN/inf).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise BadAudio("unreadable", path, "no such file")
  try:
    with sf.SoundFile(path) as f:
      rate, channels, frames, subtype = f.samplerate, f.channels, f.frames, f.subtype
      _check_wav_header(f, path)
      is_float = subtype in _FLOAT_SUBTYPES
      # Integer PCM is read as int16 directly so 16-bit files round-trip
      # bit-exactly; float files stay float so NaN/inf can be detected.
      x = f.read(dtype="float32" if is_float else "int16", always_2d=True)
  except BadAudio:
    raise
  except (sf.LibsndfileError, RuntimeError, OSError, EOFError, ValueError) as e:
    # libsndfile refuses 0-byte files and 0-sample FLACs outright; those are
    # "empty" (Common Voice ships some 0-byte clips), not corrupt.
    if _is_empty_file(path):
      raise BadAudio("empty", path, "0 samples") from None
    raise BadAudio("unreadable", path, str(e).strip() or type(e).__name__) from None

  if frames == 0 or x.shape[0] == 0:
    raise BadAudio("empty", path, "0 samples")
  # Decoders (FLAC, MP3) may stop early on a damaged stream instead of
  # raising; the header's frame count tells. MP3 counts are estimates, so
  # allow 1% (at least one 1152-sample MPEG frame) of slack.
  slack = max(1152, frames // 100) if subtype.startswith("MPEG") else 0
  if x.shape[0] + slack < frames:
    raise BadAudio("unreadable", path,
                   f"decoded {x.shape[0]} of {frames} frames (truncated or corrupt)")
  if is_float and not np.isfinite(x).all():
    bad = int((~np.isfinite(x)).sum())
    raise BadAudio("non_finite", path, f"{bad} NaN/inf samples")

  if rate == target_rate and channels == 1 and not is_float:
    out = x[:, 0]
  else:
    y = x.astype(np.float32)
    if not is_float:
      y /= 32768.0
    y = y.mean(axis=1) if channels > 1 else y[:, 0]
    if rate != target_rate:
      y = soxr.resample(y, rate, target_rate, quality="HQ")
    out = _float_to_int16(y)
  if out.shape[0] < min_samples:
    raise BadAudio("too_short", path,
                   f"{out.shape[0]} samples at {target_rate} Hz < {min_samples}")
  return np.ascontiguousarray(out)


def _check_wav_header(f, path):
  """Raises BadAudio when a WAV data chunk is shorter than its header says."""
  if f.format not in ("WAV", "WAVEX", "RF64"):
    return
  m = _WAV_DATA_SHORT.search(f.extra_info)
  if m and int(m.group(1)) not in _STREAMING_SIZES and int(m.group(1)) > int(m.group(2)):
    raise BadAudio("unreadable", path,
                   f"truncated: data chunk has {m.group(2)} of {m.group(1)} bytes")


def _is_empty_file(path):
  """True for a 0-byte file or a FLAC whose STREAMINFO says 0 samples."""
  try:
    with open(path, "rb") as f:
      head = f.read(42)
  except OSError:
    return False
  if not head:
    return True
  # "fLaC", block header (4 bytes), then STREAMINFO: total samples are the low
  # 36 bits of bytes 13..17 of the block (https://xiph.org/flac/format.html).
  if len(head) == 42 and head[:4] == b"fLaC" and head[4] & 0x7F == 0:
    info = head[8:]
    return ((info[13] & 0x0F) << 32 | int.from_bytes(info[14:18], "big")) == 0
  return False


def _float_to_int16(y):
  """[-1, 1) float -> int16, rounding and clipping (resampling can overshoot)."""
  return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def to_float(audio):
  """int16 [..., S] -> float32 [..., S] in [-1, 1)."""
  return np.asarray(audio, np.float32) / 32768.0


def normalize(x, eps=1e-5):
  """Per-utterance zero mean, unit variance over the last axis.

  Args:
    x: [..., S] int16 or float audio.
    eps: variance floor, so silence does not divide by zero.

  Returns:
    [..., S] float32.
  """
  x = np.asarray(x, np.float32)
  mean = x.mean(axis=-1, keepdims=True)
  var = x.var(axis=-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps)
