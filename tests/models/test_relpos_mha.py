"""relpos_mha (mixers/relpos_mha.py): SpeechBrain's RelPosMHAXL against a NumPy transcription of
speechbrain/nnet/attention.py (RelPosEncXL, rel_shift, the scores), and inside a Conformer."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs.mixers import wav2vec2 as w2v2_mixer_config
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import mixers
from jaxssl.models.mixers import relpos_mha
from tests.models import test_conformer as tc


def _np_make_pe(t, d):
  """RelPosEncXL.make_pe, literally: past half flipped, future half without position 0."""
  inv_freq = np.exp(np.arange(0, d, 2) * -(np.log(10000.0) / d))
  pos = np.arange(t, dtype=np.float64)[:, None]
  past, future = np.empty((t, d)), np.empty((t, d))
  past[:, 0::2], past[:, 1::2] = np.sin(pos * inv_freq), np.cos(pos * inv_freq)
  future[:, 0::2], future[:, 1::2] = np.sin(pos * inv_freq), np.cos(-pos * inv_freq)
  return np.concatenate([past[::-1], future[1:]])


def _np_rel_shift(x):
  b, h, t, p = x.shape
  x = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 0))).reshape(b, h, -1, t)
  return x[:, :, 1:].reshape(b, h, t, p)[..., :p // 2 + 1]


def _np_relpos_mha(x, valid, p, heads):
  b, t, d = x.shape
  hd = d // heads
  q, k, v = (x @ p[n]["dense"]["kernel"] for n in ("query", "key", "value"))
  q, k, v = (a.reshape(b, t, heads, hd) for a in (q, k, v))
  p_k = (_np_make_pe(t, d) @ p["pos"]["dense"]["kernel"]).reshape(1, -1, heads, hd)
  scale = 1 / np.sqrt(d)
  ac = np.einsum("bhqd,bhkd->bhqk", (q + p["pos_bias_u"]).transpose(0, 2, 1, 3) * scale,
                 k.transpose(0, 2, 1, 3))
  bd = np.einsum("bhqd,hpd->bhqp", (q + p["pos_bias_v"]).transpose(0, 2, 1, 3) * scale,
                 p_k[0].transpose(1, 0, 2))
  score = np.where(valid[:, None, None, :], ac + _np_rel_shift(bd), -np.inf)
  w = np.exp(score - score.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, d)
  return out @ p["out"]["dense"]["kernel"] + p["out"]["dense"]["bias"]


def test_relpos_mha_matches_numpy_relposmhaxl():
  lengths, t = (9, 5), 9
  x, valid = tc._inputs(lengths, t)
  m = mixers.get("relpos_mha")(num_heads=2)
  params = tc._randomize(nn.unbox(m.init(jax.random.key(0), x, valid=valid, train=False)))
  assert sorted(params["params"]) == ["key", "out", "pos", "pos_bias_u", "pos_bias_v", "query",
                                      "value"]
  assert "bias" not in params["params"]["query"]["dense"]  # q, k, v, pos: no bias.
  y = jax.jit(functools.partial(m.apply, train=False))(params, x, valid=valid)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  ref = _np_relpos_mha(np.asarray(x, np.float64), np.asarray(valid), p, heads=2)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(y[b, :n], ref[b, :n], atol=1e-5, rtol=1e-4)
  # The positional table and the shift, alone: entry (i, j) scores relative position i - j.
  np.testing.assert_allclose(relpos_mha.relative_sinusoids(t, tc.D), _np_make_pe(t, tc.D),
                             atol=1e-5)
  scores = np.random.default_rng(0).normal(size=(1, 1, t, 2 * t - 1))
  shifted = np.asarray(relpos_mha.rel_shift(jnp.asarray(scores)))
  np.testing.assert_allclose(shifted, _np_rel_shift(scores), atol=1e-6)
  i, j = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
  np.testing.assert_allclose(shifted[0, 0], scores[0, 0][i, t - 1 - (i - j)], atol=1e-6)
  # Relative positions matter: the same weights without the positional term differ.
  no_pos = jax.tree.map(lambda a: a, params)
  no_pos["params"]["pos"]["dense"]["kernel"] = jnp.zeros((tc.D, tc.D))
  y_no_pos = m.apply(no_pos, x, valid=valid, train=False)
  assert not np.allclose(y_no_pos[0], y[0], atol=1e-3)


def test_relpos_conformer_is_padding_invariant_and_builds_from_the_config():
  lengths = (10, 6)
  enc = encoder_lib.Encoder(num_layers=1, mlp_dim=tc.F, pos_conv_kernel=4, pos_conv_groups=4,
                            mixer=functools.partial(mixers.get("relpos_mha"), num_heads=2),
                            block="conformer", conformer_kernel_size=tc.K)
  x, valid = tc._inputs(lengths, 10)
  params = tc._init(enc, x, valid)
  apply = jax.jit(functools.partial(enc.apply, train=False))
  y, _ = apply(params, x, valid=valid)
  vp = jnp.arange(17)[None] < jnp.array(lengths)[:, None]
  xp = jnp.where(vp[..., None], jnp.concatenate([x, jnp.zeros((2, 7, tc.D))], axis=1), 5.0)
  y_pad, _ = apply(params, xp, valid=vp)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(y_pad[b, :n], y[b, :n], atol=5e-5)
  c = w2v2_mixer_config.get_config("mixer=mha,runlocal")
  with c.unlocked():
    c.model.block = "conformer"
    c.model.mixer = dict(name="relpos_mha")
  _, _, layer = tc._loss_shapes(c, tc._batch(8_000, False))
  assert {"pos_bias_u", "pos_bias_v", "pos"} <= set(layer["self_attn"])
