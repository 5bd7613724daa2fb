"""The jnp Kaldi fbank and MFCC against kaldi-native-fbank (the C++ port of Kaldi's
compute-fbank-feats / compute-mfcc-feats), deltas against torchaudio's compute_deltas in NumPy, and
MelHuBERT's stacked frontend on the fbank."""
import jax.numpy as jnp
import kaldi_native_fbank as knf
import librosa
import ml_collections as mlc
import numpy as np
import pytest

from jaxssl.models import frontends
from jaxssl.models.frontends import kaldi_fbank
from jaxssl.models.frontends import mel_stack


def oracle(wave, *, num_bins, window_type):
  """kaldi-native-fbank without dither, on int16-scaled samples (what Kaldi reads)."""
  opts = knf.FbankOptions()
  opts.frame_opts.dither = 0.0
  opts.frame_opts.window_type = window_type
  opts.mel_opts.num_bins = num_bins
  fbank = knf.OnlineFbank(opts)
  fbank.accept_waveform(16_000, (wave * 32768.0).tolist())
  fbank.input_finished()
  return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


@pytest.mark.parametrize("num_bins,window_type,samples", [
    (40, "hamming", 16_123), (40, "povey", 8_000), (23, "povey", 4_321), (80, "hamming", 400)])
def test_matches_kaldi_native_fbank(num_bins, window_type, samples):
  rs = np.random.default_rng(samples)
  t = np.arange(samples) / 16_000
  # Speech-like: a few harmonics, noise, a DC offset (which Kaldi removes per frame).
  wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1830 * t)
          + 0.05 * rs.standard_normal(samples) + 0.02).astype(np.float32)
  want = oracle(wave, num_bins=num_bins, window_type=window_type)
  got = np.asarray(kaldi_fbank.fbank(jnp.asarray(wave[None]), num_bins=num_bins,
                                     window_type=window_type))[0]
  assert got.shape == want.shape == (kaldi_fbank.frames_for(samples), num_bins)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_frame_counts_are_kaldis_snip_edges():
  lengths = np.array([0, 399, 400, 559, 560, 16_000])
  np.testing.assert_array_equal(kaldi_fbank.frames_for(lengths), [0, 0, 1, 1, 2, 98])
  assert kaldi_fbank.frames_for(16_000) == 98 and isinstance(kaldi_fbank.frames_for(400), int)
  with pytest.raises(ValueError, match="window='hann': choose 'povey' or 'hamming'"):
    kaldi_fbank.window("hann")


def test_mel_stack_on_kaldi_fbank_stacks_normalised_frames_and_ignores_padding():
  rs = np.random.default_rng(0)
  audio = jnp.asarray(0.1 * rs.standard_normal((2, 3_600)), jnp.float32)  # 21 frames -> 11.
  raw = np.asarray(kaldi_fbank.fbank(audio))
  stack = mel_stack.MelStack(num_mels=40, stack=2, features="kaldi")
  plain = np.asarray(mel_stack.MelStack(num_mels=40, stack=2, features="kaldi",
                                        normalize=False).apply({}, audio))
  assert plain.shape == (2, 11, 80)
  np.testing.assert_allclose(plain[:, 3, :40], raw[:, 6], rtol=1e-6)
  np.testing.assert_allclose(plain[:, 3, 40:], raw[:, 7], rtol=1e-6)
  a = np.asarray(stack.apply({}, audio))
  frames = np.concatenate([a[:, :, :40], a[:, :10, 40:]], 1)
  np.testing.assert_allclose(frames.mean(1), 0.0, atol=1e-4)
  padded = jnp.pad(audio, ((0, 0), (0, 2_000)))
  valid = jnp.repeat(jnp.arange(5_600)[None] < 3_600, 2, 0)
  b = np.asarray(stack.apply({}, padded, valid))
  np.testing.assert_allclose(b[:, :11], a, atol=2e-4)
  fe = mlc.ConfigDict(dict(name="mel_stack", num_mels=40, stack=2, features="kaldi"))
  assert frontends.frames_for(fe, 5_600) == b.shape[1] == 17
  assert list(np.asarray(frontends.frame_valid(fe, valid).sum(1))) == [11, 11]
  assert frontends.hop(fe) == 320 and frontends.centre(fe) == 200 + 80


def mfcc_oracle(wave, *, scale):
  """kaldi-native-fbank's MFCC as torchaudio.compliance.kaldi.mfcc's defaults: no dither, no
  energy in c0 (Kaldi's compute-mfcc-feats defaults to dither 1 and use_energy true)."""
  opts = knf.MfccOptions()
  opts.frame_opts.dither = 0.0
  opts.use_energy = False
  mfcc = knf.OnlineMfcc(opts)
  mfcc.accept_waveform(16_000, (wave * scale).tolist())
  mfcc.input_finished()
  return np.stack([mfcc.get_frame(i) for i in range(mfcc.num_frames_ready)])


@pytest.mark.parametrize("samples,scale", [(16_123, 32768.0), (4_321, 1.0), (400, 1.0)])
def test_mfcc_matches_kaldi_native_fbank(samples, scale):
  rs = np.random.default_rng(samples)
  t = np.arange(samples) / 16_000
  wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1830 * t)
          + 0.05 * rs.standard_normal(samples) + 0.02).astype(np.float32)
  want = mfcc_oracle(wave, scale=scale)
  got = np.asarray(kaldi_fbank.mfcc(jnp.asarray(wave[None]), scale=scale))[0]
  assert got.shape == want.shape == (kaldi_fbank.frames_for(samples), 13)
  # The log energies agree to ~1e-4 (above); c_k sums 23 of them through a unit-norm DCT column
  # times the lifter (up to 12), so errors of a few 1e-4 are float32 rounding (measured <= 1.3e-4
  # on values up to 105). A wrong DCT, lifter or c0 (energy) is off by units.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def np_compute_deltas(x):
  """torchaudio.functional.compute_deltas(x.T, win_length=5, mode="replicate").T in NumPy."""
  n, denom = 2, 10.0  # (win_length - 1) // 2; n (n + 1) (2 n + 1) / 3.
  p = np.pad(x, ((n, n), (0, 0)), mode="edge")
  return sum(k * p[n + k:n + k + len(x)] for k in range(-n, n + 1)) / denom


def test_deltas_are_torchaudios_compute_deltas_twice_per_row():
  rs = np.random.default_rng(0)
  x = rs.standard_normal((3, 9, 4)).astype(np.float32)
  lengths = np.array([9, 5, 1])
  got = np.asarray(kaldi_fbank.deltas(jnp.asarray(x), jnp.asarray(lengths)))
  assert got.shape == (3, 9, 12)
  for row, n in enumerate(lengths):
    d1 = np_compute_deltas(x[row, :n])
    want = np.concatenate([x[row, :n], d1, np_compute_deltas(d1)], -1)
    # Each row repeats its own last valid frame: padding frames do not leak in.
    np.testing.assert_allclose(got[row, :n], want, rtol=1e-6, atol=1e-6)
  # librosa's Savitzky-Golay delta (width 5, order 1, mode "nearest") is the same regression.
  np.testing.assert_allclose(
      librosa.feature.delta(x[0].T, width=5, order=1, mode="nearest").T,
      np_compute_deltas(x[0]), rtol=1e-5, atol=1e-6)
  full = np.asarray(kaldi_fbank.deltas(jnp.asarray(x)))  # No lengths: every frame is valid.
  d1 = np_compute_deltas(x[1])
  np.testing.assert_allclose(full[1], np.concatenate([x[1], d1, np_compute_deltas(d1)], -1),
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="win_length=4: must be odd and >= 3"):
    kaldi_fbank.deltas(jnp.asarray(x), win_length=4)
