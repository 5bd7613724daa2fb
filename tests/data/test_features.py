"""Offline log-mel/MFCC shapes and values, and jnp-vs-librosa log-mel parity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.data import features
from jaxssl.models.frontends import mel
from tests.data import corpus_fixtures as fx


def _speechlike(n, seed=0):
  """Float audio with harmonics, a chirp and noise: energy in every mel band."""
  t = np.arange(n) / 16000
  rng = np.random.default_rng(seed)
  x = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.2 * np.sin(2 * np.pi * (300 + 2000 * t) * t)
       + 0.05 * rng.standard_normal(n))
  return x.astype(np.float32)


@pytest.mark.parametrize("n", [400, 1601, 16000])
def test_log_mel_shape_and_frame_rate(n):
  m = features.log_mel(_speechlike(n))
  assert m.shape == (1 + n // 160, 80) == (features.num_frames(n), 80)
  assert m.dtype == np.float32 and np.isfinite(m).all()


def test_log_mel_floor_and_int16_scaling():
  np.testing.assert_allclose(features.log_mel(np.zeros(800, np.float32)), np.log(1e-6),
                             rtol=1e-6)
  x = fx.tone(3200)
  np.testing.assert_allclose(features.log_mel(x), features.log_mel(x / 32768.0), atol=1e-4)


def test_log_mel_peaks_at_the_tone():
  m = features.log_mel(fx.tone(16000, freq=1000.0, amp=0.5), n_mels=40)
  import librosa  # pylint: disable=g-import-not-at-top
  centers = librosa.mel_frequencies(n_mels=40 + 2, fmax=8000)[1:-1]
  assert abs(centers[np.argmax(m[50])] - 1000) < 150


def test_mfcc_shapes_and_deltas():
  x = _speechlike(8000)
  plain = features.mfcc(x, with_deltas=False)
  full = features.mfcc(x)
  t = 1 + 8000 // 160
  assert plain.shape == (t, 13) and full.shape == (t, 39) and full.dtype == np.float32
  np.testing.assert_allclose(full[:, :13], plain, atol=1e-4)
  # Kaldi deltas: d_t = sum_{k=1,2} k (c_{t+k} - c_{t-k}) / 10, edges repeated.
  c = np.pad(plain, ((2, 2), (0, 0)), mode="edge")
  d = sum(k * (c[2 + k:2 + k + t] - c[2 - k:2 - k + t]) for k in (1, 2)) / 10
  np.testing.assert_allclose(full[:, 13:26], d, atol=1e-3)
  dp = np.pad(d, ((2, 2), (0, 0)), mode="edge")
  dd = sum(k * (dp[2 + k:2 + k + t] - dp[2 - k:2 - k + t]) for k in (1, 2)) / 10
  np.testing.assert_allclose(full[:, 26:], dd, atol=1e-3)


def test_mfcc_works_on_the_shortest_input():
  assert features.mfcc(_speechlike(400)).shape == (3, 39)


@pytest.mark.parametrize("n", [400, 2000, 16123])
def test_jnp_log_mel_matches_librosa(n):
  x = np.stack([_speechlike(n, seed=0), _speechlike(n, seed=1) * 0.1])
  got = np.asarray(jax.jit(mel.log_mel)(jnp.asarray(x)))
  assert got.shape == (2, mel.frames_for(n), 80)
  for b in range(2):
    np.testing.assert_allclose(got[b], features.log_mel(x[b]), atol=1e-4, rtol=0)


def test_jnp_log_mel_int16_and_other_sizes():
  x = fx.tone(4000, seed=5)
  got = np.asarray(mel.log_mel(jnp.asarray(x[None]), n_mels=40, n_fft=512))[0]
  want = features.log_mel(x, n_mels=40, n_fft=512)
  assert got.shape == want.shape == (1 + 4000 // 160, 40)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_jnp_log_mel_rejects_unbatched_audio():
  with pytest.raises(ValueError, match=r"\[B, S\]"):
    mel.log_mel(jnp.zeros((1600,)))
