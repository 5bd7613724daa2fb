"""Corruptions that make a clean utterance look like badly crawled audio (the *dirty* builds).

Web-crawled speech corpora hold recordings that are not (usable) speech at all: noise only,
digital silence, music, heavy clipping, speech buried in noise, and audio that went through a
careless sample-rate conversion. Data-selection studies filter these out with signal-quality
scores (e.g. the SNR, speech-activity and clipping filters of large crawls such as YODAS,
https://arxiv.org/abs/2406.00899, or Emilia, https://arxiv.org/abs/2407.05361). A dirty demo
corpus (`python -m jaxssl.data.demo_corpus --dirty_fraction=...`) plants known corruptions,
each labelled in the manifest, so a scorer's precision and recall can be measured.

Every corruption maps int16 [S] audio and a numpy Generator to int16 [S] audio of the same
length (phone alignments keep their sample positions; they no longer describe the audio of a
corrupted utterance). What each one guarantees, and what the tests check:

  noise         white Gaussian noise at the utterance's RMS level; the speech is gone.
  silence       digital silence with +-1 LSB dither (|x| <= 1 sample step).
  clipping      gain until the peak is 10x full scale, then clipped to int16: a large share of
                samples sits at full scale.
  low_snr       the speech plus white noise at LOW_SNR_DB (0 dB) relative to its mean power.
  music         the speech replaced by a note sequence (triads of harmonic tones, 250 ms notes,
                decaying envelopes) at the utterance's RMS level.
  bad_resample  decimated to 8 kHz without an anti-alias filter, then brought back to 16 kHz by
                sample-and-hold (no interpolation filter): aliasing plus imaging, and every
                pair of samples (2i, 2i+1) equal.
"""
import numpy as np

LOW_SNR_DB = 0.0
CLIP_OVERDRIVE = 10.0  # Peak after the gain, in multiples of full scale.
_FULL_SCALE = 32767.0
_NOTE_SECONDS = 0.25
_SAMPLE_RATE = 16000


def _rms(x):
  return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _to_int16(y):
  return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def noise(audio, rng):
  """White Gaussian noise at the utterance's RMS (at least -50 dBFS): no speech left."""
  level = max(_rms(audio.astype(np.float64)), _FULL_SCALE * 10 ** (-50 / 20))
  return _to_int16(rng.standard_normal(len(audio)) * level)


def silence(audio, rng):
  """Digital silence with +-1 LSB dither."""
  return rng.integers(-1, 2, size=len(audio)).astype(np.int16)


def clipping(audio, rng):
  """Overdriven to CLIP_OVERDRIVE x full scale and clipped to int16."""
  del rng
  x = audio.astype(np.float64)
  peak = max(float(np.max(np.abs(x))) if len(x) else 0.0, 1.0)
  return _to_int16(x * (CLIP_OVERDRIVE * _FULL_SCALE / peak))


def low_snr(audio, rng, snr_db=LOW_SNR_DB):
  """The utterance plus white noise at `snr_db` relative to its mean power."""
  x = audio.astype(np.float64)
  level = max(_rms(x), 1.0) * 10 ** (-snr_db / 20)
  return _to_int16(x + rng.standard_normal(len(x)) * level)


def music(audio, rng):
  """A note sequence (major triads of 3-harmonic tones, decaying) at the utterance's RMS."""
  n = len(audio)
  t = np.arange(n) / _SAMPLE_RATE
  note_len = int(_NOTE_SECONDS * _SAMPLE_RATE)
  y = np.zeros(n)
  root_midi = rng.integers(48, 67, size=max(1, -(-n // note_len)))
  for k, root in enumerate(root_midi):
    seg = slice(k * note_len, min(n, (k + 1) * note_len))
    tt = t[seg] - t[seg][0]
    env = np.exp(-tt / 0.12)
    for interval in (0, 4, 7):  # A major triad.
      f0 = 440.0 * 2 ** ((root + interval - 69) / 12)
      for h in (1, 2, 3):
        y[seg] += env * np.sin(2 * np.pi * h * f0 * tt) / h
  level = max(_rms(audio.astype(np.float64)), _FULL_SCALE * 10 ** (-30 / 20))
  return _to_int16(y * (level / max(_rms(y), 1e-12)))


def bad_resample(audio, rng):
  """16 kHz -> 8 kHz by dropping every other sample, back by repeating each (no filters)."""
  del rng
  return np.repeat(audio[::2], 2)[:len(audio)].astype(np.int16)


CORRUPTIONS = {
    "noise": noise, "silence": silence, "clipping": clipping, "low_snr": low_snr,
    "music": music, "bad_resample": bad_resample,
}


def apply(name, audio, rng):
  """Applies corruption `name` to int16 `audio` (same length, int16)."""
  if name not in CORRUPTIONS:
    raise ValueError(f"Unknown corruption {name!r}; choose from {sorted(CORRUPTIONS)}.")
  return CORRUPTIONS[name](np.asarray(audio, np.int16), rng)


def choose(num_records, fraction, kinds, seed, stream=0):
  """Which records of a split are corrupted, and how.

  Exactly floor(fraction * num_records + 0.5) records are picked by a seeded permutation; the
  k-th picked gets kinds[k % len(kinds)], so each kind's count is within one of the others'.

  Returns:
    list of num_records str: the corruption of each record, "" for a clean one.
  """
  if not 0 <= fraction <= 1:
    raise ValueError(f"--dirty_fraction must be in [0, 1], got {fraction}.")
  if fraction > 0 and not kinds:
    raise ValueError("--corruptions is empty; name at least one of "
                     f"{sorted(CORRUPTIONS)}.")
  for k in kinds:
    if k not in CORRUPTIONS:
      raise ValueError(f"Unknown corruption {k!r} in --corruptions; choose from "
                       f"{sorted(CORRUPTIONS)}.")
  count = int(np.floor(fraction * num_records + 0.5))
  picked = np.random.default_rng([seed, 23, stream]).permutation(num_records)[:count]
  out = [""] * num_records
  for k, i in enumerate(picked):
    out[int(i)] = kinds[k % len(kinds)]
  return out
