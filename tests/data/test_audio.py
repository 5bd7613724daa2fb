"""Tests for jaxssl.data.audio: one per bad-input reason, downmix, resampling."""
import os

import numpy as np
import pytest

from jaxssl.data import audio
from tests.data import corpus_fixtures as fx


def _reason(path, **kwargs):
  with pytest.raises(audio.BadAudio) as e:
    audio.load_audio(path, **kwargs)
  assert e.value.path == os.fspath(path)
  assert os.fspath(path) in str(e.value)
  return e.value.reason


def test_int16_wav_round_trips_exactly(tmp_path):
  x = fx.tone(1234)
  y = audio.load_audio(fx.write(str(tmp_path / "a.wav"), x))
  assert y.dtype == np.int16
  np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_compressed_formats_decode(tmp_path, fmt, ext):
  x = fx.tone(8000)
  y = audio.load_audio(fx.write(str(tmp_path / f"a.{ext}"), x, format=fmt))
  assert y.dtype == np.int16 and abs(len(y) - 8000) <= 1152
  if fmt == "FLAC":  # Lossless.
    np.testing.assert_array_equal(y, x)
  else:  # Lossy but clearly the same tone.
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n].astype(float), y[:n].astype(float))[0, 1] > 0.9


def test_missing_file_is_unreadable(tmp_path):
  assert _reason(str(tmp_path / "nope.wav")) == "unreadable"


def test_corrupt_file_is_unreadable(tmp_path):
  assert _reason(fx.write_garbage(str(tmp_path / "bad.wav"))) == "unreadable"


def test_truncated_wav_is_unreadable(tmp_path):
  path = fx.write_truncated(str(tmp_path / "cut.wav"))
  assert _reason(path) == "unreadable"


def test_truncated_flac_is_unreadable(tmp_path):
  path = fx.write(str(tmp_path / "cut.flac"), fx.tone(16000))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  assert _reason(path) == "unreadable"


def test_empty_file(tmp_path):
  path = fx.write(str(tmp_path / "empty.wav"), np.zeros((0,), np.int16))
  assert _reason(path) == "empty"


def test_too_short_uses_min_samples(tmp_path):
  path = fx.write(str(tmp_path / "short.wav"), fx.tone(399))
  assert _reason(path) == "too_short"
  assert len(audio.load_audio(fx.write(str(tmp_path / "ok.wav"), fx.tone(400)))) == 400
  assert _reason(str(tmp_path / "ok.wav"), min_samples=401) == "too_short"


def test_too_short_is_judged_after_resampling(tmp_path):
  # 250 samples at 8 kHz -> 500 at 16 kHz: long enough; 150 -> 300 is not.
  ok = fx.write(str(tmp_path / "ok.wav"), fx.tone(250, rate=8000), rate=8000)
  assert len(audio.load_audio(ok)) == 500
  short = fx.write(str(tmp_path / "short.wav"), fx.tone(150, rate=8000), rate=8000)
  assert _reason(short) == "too_short"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_file(tmp_path, bad):
  x = np.full(1000, 0.1, np.float32)
  x[500] = bad
  path = fx.write(str(tmp_path / "f.wav"), x, subtype="FLOAT")
  assert _reason(path) == "non_finite"


def test_float_file_is_scaled_to_int16(tmp_path):
  x = np.array([0.0, 0.5, -0.5, 1.5, -1.5] * 100, np.float32)  # Out-of-range values clip.
  y = audio.load_audio(fx.write(str(tmp_path / "f.wav"), x, subtype="FLOAT"))
  np.testing.assert_array_equal(y[:5], [0, 16384, -16384, 32767, -32768])


def test_stereo_is_downmixed_to_the_channel_mean(tmp_path):
  left, right = fx.tone(2000, seed=1), fx.tone(2000, freq=300.0, seed=2)
  path = fx.write(str(tmp_path / "st.wav"), np.stack([left, right], axis=1))
  y = audio.load_audio(path)
  assert y.shape == (2000,)
  expected = (left.astype(np.float64) + right) / 2
  assert np.abs(y - expected).max() <= 1.0  # Rounding only.


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_other_rates_are_resampled_to_16k(tmp_path, rate):
  x = fx.tone(rate, rate=rate, freq=440.0, amp=0.5)  # 1 s.
  path = fx.write(str(tmp_path / f"r{rate}.flac"), x, rate=rate)
  y = audio.load_audio(path)
  assert y.dtype == np.int16 and len(y) == 16000
  spectrum = np.abs(np.fft.rfft(y.astype(np.float64)))
  assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins: the pitch survives.
  assert 0.4 < np.abs(y).max() / 32768 < 0.6  # So does the level.


def test_multichannel_at_other_rate(tmp_path):
  x = np.stack([fx.tone(4410, rate=44100)] * 4, axis=1)
  y = audio.load_audio(fx.write(str(tmp_path / "q.wav"), x, rate=44100))
  assert len(y) == 1600


def test_bad_audio_rejects_unknown_reason():
  with pytest.raises(ValueError, match="reason"):
    audio.BadAudio("weird", "x.wav")


def test_normalize_and_to_float():
  x = fx.tone(1000, amp=0.8) + np.int16(1000)
  f = audio.to_float(x)
  assert f.dtype == np.float32 and np.abs(f).max() < 1.0
  np.testing.assert_allclose(f, x / 32768.0, rtol=1e-6)
  z = audio.normalize(f)
  assert z.dtype == np.float32
  assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-3
  assert np.isfinite(audio.normalize(np.zeros(10))).all()  # Silence: no division by 0.
  batch = audio.normalize(np.stack([f, 2 * f + 3]))  # Per row.
  np.testing.assert_allclose(batch[0], batch[1], atol=1e-4)

