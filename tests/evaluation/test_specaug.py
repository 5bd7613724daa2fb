"""s3prl's SpecAugment on the probe's weighted sum (s3prl/downstream/specaug.py): the time warp
against torch's bicubic interpolation, mask widths and counts, padding, train-only, off."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.probes import asr as asr_config
from configs.probes import speaker as speaker_config
from jaxssl.evaluation import probes


def _runs(row):
  """(start, width) of the runs of True in a 1-D bool array."""
  padded = np.concatenate([[False], row, [False]]).astype(int)
  starts, ends = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1)
  return list(zip(starts, ends - starts))


def _batch(b=256, t=120, d=96, seed=0):
  lengths = np.random.default_rng(seed).integers(t // 2, t + 1, b)
  lengths[0] = t
  valid = np.arange(t)[None] < lengths[:, None]
  x = np.random.default_rng(seed + 1).standard_normal((b, t, d)).astype(np.float32) + 5.0
  return jnp.asarray(x), jnp.asarray(valid), lengths


def _augment(aug, x, valid, seed=0):
  return np.asarray(jax.jit(aug.__call__)(x, valid, jax.random.PRNGKey(seed)))


@pytest.mark.parametrize("axis", ["freq", "time"])
def test_one_mask_per_row_has_a_width_in_the_range_and_spares_padding(axis):
  x, valid, lengths = _batch()
  if axis == "freq":
    aug = probes.SpecAugment(time_warp_window=0, num_time_masks=0, num_freq_masks=1,
                             freq_mask_width=(3, 20))
  else:
    aug = probes.SpecAugment(time_warp_window=0, num_freq_masks=0, num_time_masks=1,
                             time_mask_width=(3, 20))
  out = _augment(aug, x, valid)
  zero, v = out == 0, np.asarray(valid)
  assert not zero[~v].any()  # Padding frames untouched.
  np.testing.assert_array_equal(out[~v], np.asarray(x)[~v])
  widths = []
  for i, n in enumerate(lengths):
    if axis == "freq":  # The same dimensions of every valid frame.
      assert (zero[i, :n] == zero[i, 0]).all()
      runs = _runs(zero[i, 0])
    else:  # Whole frames.
      assert (zero[i].all(-1) == zero[i].any(-1)).all()
      runs = _runs(zero[i, :, 0])
    assert len(runs) <= 1
    widths += [w for _, w in runs]
  # Widths in [3, 20) (torch.randint's range); a time mask may be cut by the row's end.
  assert max(widths) == 19 and (axis == "time" or min(widths) == 3)
  # Time masks start in [0, longest row - widest mask): on a short row some fall in padding.
  assert len(widths) >= (0.9 if axis == "freq" else 0.6) * len(lengths)


def test_s3prl_asr_masks_count_and_extent():
  x, valid, lengths = _batch(t=200, d=300)
  aug = probes.SpecAugment(time_warp_window=0)  # s3prl asr: 2 time (0-39), 4 freq (0-49).
  assert (aug.num_time_masks, aug.time_mask_width, aug.num_freq_masks, aug.freq_mask_width) == (
      2, (0, 40), 4, (0, 50))
  out = _augment(aug, x, valid)
  zero = out == 0
  for i, n in enumerate(lengths):
    frames = zero[i, :n].all(-1)
    dims = zero[i, :n].all(0)
    assert len(_runs(frames)) <= 2 and frames.sum() <= 2 * 39
    assert len(_runs(dims)) <= 4 and dims.sum() <= 4 * 49
    # Everything zeroed is in a masked frame or a masked dimension.
    assert not (zero[i, :n] & ~frames[:, None] & ~dims[None]).any()
  assert not zero[~np.asarray(valid)].any()


def test_time_warp_is_torchs_bicubic_interpolation_of_both_sides():
  torch = pytest.importorskip("torch")
  x, _, _ = _batch(b=3, t=30, d=7)
  lengths, centers, warped = np.array([30, 22, 11]), np.array([12, 6, 5]), np.array([16, 3, 8])
  got = np.asarray(probes.warp_frames(x, jnp.asarray(lengths), jnp.asarray(centers),
                                      jnp.asarray(warped)))
  interpolate = torch.nn.functional.interpolate
  for i, (n, c, w) in enumerate(zip(lengths, centers, warped)):
    row = torch.tensor(np.asarray(x)[i, :n])[None, None]
    ref = torch.cat([interpolate(row[:, :, :c], (w, 7), mode="bicubic", align_corners=False),
                     interpolate(row[:, :, c:], (n - w, 7), mode="bicubic",
                                 align_corners=False)], 2)[0, 0].numpy()
    np.testing.assert_allclose(got[i, :n], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[i, n:], np.asarray(x)[i, n:])


def test_time_warp_leaves_short_rows_and_padding_alone():
  x, valid, lengths = _batch(b=64, t=40, d=8)
  valid = valid.at[1].set(jnp.arange(40) < 10)  # 10 <= 2 x window: s3prl skips it.
  aug = probes.SpecAugment(time_warp_window=5, num_time_masks=0, num_freq_masks=0)
  out = _augment(aug, x, valid)
  v = np.asarray(valid)
  np.testing.assert_array_equal(out[1], np.asarray(x)[1])
  np.testing.assert_array_equal(out[~v], np.asarray(x)[~v])
  changed = [not np.allclose(out[i], np.asarray(x)[i]) for i in range(64) if i != 1]
  assert np.mean(changed) > 0.8  # warped == center (no change) has probability ~1/10.


def test_specaug_acts_in_training_only_and_is_off_unless_enabled():
  x, valid, _ = _batch(b=4, t=50, d=6)
  hidden = jnp.stack([x, 2 * x], axis=1)  # [B, L, T, D]
  on = probes.Probe(kind="ctc", num_outputs=5, projector_dim=8, dropout_rate=0.0,
                    specaug=probes.SpecAugment())
  off = probes.Probe(kind="ctc", num_outputs=5, projector_dim=8, dropout_rate=0.0)
  params = off.init(jax.random.PRNGKey(0), hidden, valid)
  rngs = {"specaug": jax.random.PRNGKey(1)}
  on_apply = jax.jit(on.apply, static_argnames="train")
  off_apply = jax.jit(off.apply, static_argnames="train")
  base = off_apply(params, hidden, valid)
  np.testing.assert_array_equal(on_apply(params, hidden, valid), base)  # Eval: untouched.
  np.testing.assert_array_equal(off_apply(params, hidden, valid, train=True, rngs=rngs), base)
  assert not np.allclose(on_apply(params, hidden, valid, train=True, rngs=rngs), base)
  nothing = probes.SpecAugment(time_warp_window=0, num_time_masks=0, num_freq_masks=0)
  np.testing.assert_array_equal(_augment(nothing, x, valid), np.asarray(x))
  # Configs: on for ASR with s3prl's values, off elsewhere; bad values name the field.
  assert probes.specaug_from_config(asr_config.get_config(None).specaug) == probes.SpecAugment()
  assert probes.specaug_from_config(speaker_config.get_config(None).specaug) is None
  with pytest.raises(ValueError, match=r"specaug.time_mask_width=\(40, 0\)"):
    probes.specaug_from_config(dict(enabled=True, time_mask_width=(40, 0)))
  with pytest.raises(ValueError, match="Unknown specaug fields.*'num_masks'"):
    probes.specaug_from_config(dict(enabled=True, num_masks=2))
