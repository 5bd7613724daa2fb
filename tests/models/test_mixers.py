"""Token mixers: shapes, padding invariance, closed-form references, gradients, sharding.

Each mixer is checked against a NumPy implementation of its paper's formula (explicit DFT
matrices for FNet, a direct convolution for Hyena, masked softmax attention, SummaryMixing's
equations), on tiny sizes. The configs that select them: test_mixer_configs.py.
"""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from configs import common
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import mixers
from jaxssl.models.mixers import fnet
from jaxssl.models.mixers import hyena
from jaxssl.models.mixers import mha
from jaxssl.training import partitioning

D = 16
KWARGS = {"mha": dict(num_heads=2), "summary_mixing": dict(num_heads=2),
          "fnet": {}, "hyena": dict(max_frames=32), "relpos_mha": dict(num_heads=2)}


def _mixer(name, **kw):
  return mixers.get(name)(**(KWARGS[name] | kw))


def _inputs(b=2, t=13, lengths=(13, 8), seed=0):
  x = jax.random.normal(jax.random.key(seed), (b, t, D))
  valid = jnp.arange(t)[None] < jnp.asarray(lengths)[:, None]
  return x, valid


def _init(m, x, valid):
  return nn.unbox(jax.jit(functools.partial(m.init, train=False))(
      jax.random.key(1), x, valid=valid))


def _apply(m, train=False):
  """m.apply compiled once per shape: much faster than op-by-op on these tiny inputs."""
  return jax.jit(functools.partial(m.apply, train=train))


def _gelu(x):
  return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


def _layer_norm(x, p):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


@pytest.mark.parametrize("name", mixers.names())
def test_shapes_and_finiteness(name):
  x, valid = _inputs()
  m = _mixer(name)
  params = _init(m, x, valid)
  y = _apply(m)(params, x, valid=valid)
  chex.assert_shape(y, x.shape)
  chex.assert_tree_all_finite(y)
  assert float(jnp.abs(y).max()) > 1e-3  # Not a constant zero map.
  # A row with no real frame stays finite (no 0/0 in means or normalisations).
  y0 = _apply(m)(params, x, valid=jnp.zeros_like(valid))
  chex.assert_tree_all_finite(y0)


@pytest.mark.parametrize("name", mixers.names())
def test_real_frames_do_not_see_padding(name):
  x, _ = _inputs(b=1, t=11, lengths=(11,))
  m = _mixer(name)
  params = _init(m, x, jnp.ones((1, 11), bool))
  apply = _apply(m)
  y = apply(params, x, valid=jnp.ones((1, 11), bool))
  for extra in (1, 20):  # Different padded lengths, padded with loud junk.
    junk = 7.0 * jax.random.normal(jax.random.key(extra), (1, extra, D))
    padded = jnp.concatenate([x, junk], axis=1)
    valid = jnp.arange(11 + extra)[None] < 11
    y_pad = apply(params, padded, valid=valid)
    np.testing.assert_allclose(y_pad[:, :11], y, atol=2e-5, rtol=2e-5)


def test_plain_fnet_depends_on_padding_the_documented_violation():
  """`padding="zeros"` (plain FNet on zeroed frames) is not padding invariant: the DFT length is
  the padded T. Padded *content* still cannot leak, since those frames are zeroed first."""
  x, _ = _inputs(b=1, t=11, lengths=(11,))
  apply = _apply(fnet.FourierMixer(padding="zeros"))
  y = apply({}, x, valid=jnp.ones((1, 11), bool))
  padded = jnp.concatenate([x, jnp.ones((1, 5, D))], axis=1)
  valid = jnp.arange(16)[None] < 11
  y_pad = apply({}, padded, valid=valid)
  assert float(jnp.abs(y_pad[:, :11] - y).max()) > 0.1
  junk = padded.at[:, 11:].set(-9.0)
  np.testing.assert_allclose(apply({}, junk, valid=valid), y_pad, atol=1e-6)


@pytest.mark.parametrize("padding,norm", [("exact", "ortho"), ("exact", "backward"),
                                          ("zeros", "ortho")])
def test_fnet_matches_explicit_dft_matrices(padding, norm):
  t, lengths = 12, (12, 7)
  x, valid = _inputs(t=t, lengths=lengths)
  y = _apply(fnet.FourierMixer(padding=padding, norm=norm))({}, x, valid=valid)

  def dft(n):
    return np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)

  for b, length in enumerate(lengths):
    n = length if padding == "exact" else t
    xb = np.where(np.asarray(valid[b])[:, None], np.asarray(x[b], np.float64), 0.0)[:n]
    ref = (dft(n) @ xb @ dft(D)).real  # Re(F_T X F_D): time and hidden DFTs.
    if norm == "ortho":
      ref /= np.sqrt(n * D)
    np.testing.assert_allclose(y[b, :length], ref[:length], atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(y[b, length:], 0.0)


def test_bluestein_dft_is_accurate_for_long_rows():
  t = 3_001
  lengths = jnp.array([t, 2_999, 1_024, 1])
  y = jax.random.normal(jax.random.key(0), (4, t, 2)) + 1j * jax.random.normal(
      jax.random.key(1), (4, t, 2))
  y = jnp.where(jnp.arange(t)[None, :, None] < lengths[:, None, None], y, 0)
  out = fnet.dft_per_row(y, lengths)
  for b, n in enumerate(np.asarray(lengths)):
    ref = np.fft.fft(np.asarray(y[b, :n], np.complex128), axis=0)
    err = np.abs(np.asarray(out[b, :n]) - ref).max() / np.abs(ref).max()
    assert err < 1e-4, (n, err)


def _is_smooth(k):
  for p in (2, 3, 5):
    while k % p == 0:
      k //= p
  return k == 1


def test_fft_len_is_the_next_5_smooth_size():
  for n in (1, 7, 97, 1_999, 12_001):
    m = fnet.fft_len(n)
    assert m >= n and _is_smooth(m)
    assert not any(_is_smooth(k) for k in range(n, m))


def test_hyena_fft_convolution_matches_direct_convolution():
  rng = np.random.default_rng(0)
  b, t, c = 2, 9, 3
  u = rng.normal(size=(b, t, c)).astype(np.float32)
  k = rng.normal(size=(2 * t - 1, c)).astype(np.float32)  # Lags -(T-1)..T-1.
  y = hyena.two_sided_fft_conv(jnp.asarray(u), jnp.asarray(k))
  ref = np.zeros((b, t, c))
  for i in range(t):
    for s in range(t):
      ref[:, i] += k[i - s + t - 1] * u[:, s]
  np.testing.assert_allclose(y, ref, atol=1e-5)
  # The causal half alone is numpy's full linear convolution, truncated.
  k_causal = np.concatenate([np.zeros((t - 1, c), np.float32), k[t - 1:]])
  y_causal = hyena.two_sided_fft_conv(jnp.asarray(u), jnp.asarray(k_causal))
  np.testing.assert_allclose(y_causal[0, :, 1], np.convolve(u[0, :, 1], k[t - 1:, 1])[:t],
                             atol=1e-5)
  with pytest.raises(ValueError, match="filter shape"):
    hyena.two_sided_fft_conv(jnp.asarray(u), jnp.asarray(k[1:]))


def _hyena_reference(p, x, valid, m):
  """NumPy Hyena (order 2) with the implicit filter and a direct two-sided convolution."""

  def dense(h, q):
    return h @ q["kernel"] + q.get("bias", 0.0)

  t = x.shape[1]
  u = dense(x, p["in_proj"]["dense"]) * valid[..., None]
  w = p["short_filter_kernel"]
  up = np.pad(u, ((0, 0), (1, 1), (0, 0)))
  u = (up[:, :-2] * w[0] + up[:, 1:-1] * w[1] + up[:, 2:] * w[2] + p["short_filter_bias"])
  u = u * valid[..., None]
  x0, x1, v = np.split(u, 3, axis=-1)
  lags = np.arange(-(t - 1), t)
  tt = lags[:, None] / m.max_frames
  bands = (m.filter_emb_dim - 1) // 2
  f = np.linspace(1e-4, bands - 1, bands)
  z = np.concatenate([tt, np.cos(2 * np.pi * tt * f), -np.sin(2 * np.pi * tt * f)], -1)
  fp = p["filter_fn"]
  inside = np.abs(lags) < m.max_frames  # The learned rows; beyond them the closed form.
  z[inside] = fp["pos_emb"][lags[inside] + m.max_frames - 1]
  h = np.sin(fp["sin_freq"] * dense(z, fp["implicit_filter_in"]))
  for i in range(m.num_filter_layers):
    h = np.sin(fp["sin_freq"] * dense(h, fp[f"implicit_filter_{i}"]))
  h = dense(h, fp["implicit_filter_out"])
  deltas = np.linspace(np.log(1e-2) / 1.5, np.log(1e-2) / 0.3, x.shape[-1])
  h = h * np.exp(-np.abs(tt) * np.abs(deltas))
  v = v * x1
  conv = np.zeros_like(v)
  for i in range(t):
    for s in range(t):
      conv[:, i] += h[i - s + t - 1] * v[:, s]
  v = conv + v * p["filter_bias"]
  return dense(v * x0, p["out_proj"]["dense"])


def test_hyena_matches_a_numpy_reference_and_is_bidirectional():
  x, valid = _inputs(t=10, lengths=(10, 6))
  m = _mixer("hyena")
  params = _init(m, x, valid)
  y = _apply(m)(params, x, valid=valid)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  ref = _hyena_reference(p, np.asarray(x, np.float64), np.asarray(valid), m)
  for b, n in enumerate((10, 6)):
    np.testing.assert_allclose(y[b, :n], ref[b, :n], atol=1e-4, rtol=1e-3)
  # The positional embedding is a parameter (safari trains it) that starts at the closed form;
  # trained rows are read for lags under max_frames, the closed form past them (max_frames 4).
  short = _mixer("hyena", max_frames=4)
  sp = _init(short, x, valid)
  table = sp["params"]["filter_fn"]["pos_emb"]
  assert table.shape == (7, short.filter_emb_dim)
  lags = np.arange(-3, 4)
  np.testing.assert_allclose(table[:, 0], lags / 4, atol=1e-7)
  sp["params"]["filter_fn"]["pos_emb"] = table + jax.random.normal(jax.random.key(5), table.shape)
  y = _apply(short)(sp, x, valid=valid)
  ref = _hyena_reference(jax.tree.map(lambda a: np.asarray(a, np.float64), sp["params"]),
                         np.asarray(x, np.float64), np.asarray(valid), short)
  for b, n in enumerate((10, 6)):
    np.testing.assert_allclose(y[b, :n], ref[b, :n], atol=1e-4, rtol=1e-3)
  # Non-causal: frame 2's output depends on frame 7 (and frame 7's on frame 2).
  jac = jax.jit(jax.grad(lambda z: m.apply(params, z, valid=valid, train=False)[0, 2].sum()))(x)
  assert float(jnp.abs(jac[0, 7]).sum()) > 0 and float(jnp.abs(jac[0, 0]).sum()) > 0


def test_summary_mixing_matches_the_paper_equations():
  x, valid = _inputs(t=9, lengths=(9, 4))
  m = _mixer("summary_mixing")
  params = _init(m, x, valid)
  y = _apply(m)(params, x, valid=valid)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  xv = np.asarray(x, np.float64)
  mask = np.asarray(valid, np.float64)[..., None]

  def mlp(h, q):  # Block-diagonal Linear + GELU per layer (n_split = 2).
    for i in range(2):
      k, bias = q[f"linear_{i}"]["kernel"], q[f"linear_{i}"]["bias"]
      hs = h.reshape(h.shape[:-1] + (2, -1))
      h = _gelu(np.einsum("btnf,nfh->btnh", hs, k) + bias).reshape(h.shape[:-1] + (-1,))
    return h

  f = _layer_norm(mlp(xv, p["local_proj"]) * mask, p["local_norm"])
  s_bar = (mlp(xv, p["summary_proj"]) * mask).sum(1) / mask.sum(1)
  s_bar = _layer_norm(s_bar, p["summary_norm"])
  cat = np.concatenate([f, np.broadcast_to(s_bar[:, None], f.shape)], -1)
  ref = _gelu(cat @ p["merge_kernel"] + p["merge_bias"])
  for b, n in enumerate((9, 4)):
    np.testing.assert_allclose(y[b, :n], ref[b, :n], atol=1e-5, rtol=1e-4)
  # The training path (explicit concat, for the concat dropout) is the same map when nothing
  # is dropped.
  keep_all = mixers.get("summary_mixing")(num_heads=2, dropout_rate=1e-9)
  y_train = _apply(keep_all, train=True)(params, x, valid=valid,
                                         rngs={"dropout": jax.random.key(3)})
  np.testing.assert_allclose(y_train, y, atol=1e-5)
  assert all(np.all(q["bias"] == 0) for q in p["local_proj"].values())  # Zero-init biases.
  with pytest.raises(ValueError, match="num_heads=3 must divide"):
    _init(mixers.get("summary_mixing")(num_heads=3), x, valid)


def test_mha_matches_masked_softmax_attention():
  x, valid = _inputs(t=7, lengths=(7, 3))
  m = _mixer("mha")
  params = _init(m, x, valid)
  y = _apply(m)(params, x, valid=valid)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])

  def proj(name, h):
    return h @ p[name]["dense"]["kernel"] + p[name]["dense"]["bias"]

  xv = np.asarray(x, np.float64)
  q, k, v = (proj(n, xv).reshape(2, 7, 2, D // 2) for n in ("query", "key", "value"))
  logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(D // 2)
  logits = np.where(np.asarray(valid)[:, None, None, :], logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  ref = proj("out", np.einsum("bhts,bshd->bthd", w, v).reshape(2, 7, D))
  np.testing.assert_allclose(y, ref, atol=1e-5)
  assert sorted(p) == ["key", "out", "query", "value"]


def test_mha_kernel_choice():
  assert mha.resolve_implementation(None, jnp.float32) == "xla"
  # On this CPU backend bf16 still goes to XLA; cuDNN is picked only on a GPU.
  expected = "cudnn" if jax.default_backend() == "gpu" else "xla"
  assert mha.resolve_implementation(None, jnp.bfloat16) == expected
  assert mha.resolve_implementation("cudnn", jnp.float32) == "cudnn"
  with pytest.raises(ValueError, match="mixer.implementation='flash'"):
    mha.resolve_implementation("flash", jnp.float32)


@pytest.mark.parametrize("name", mixers.names())
def test_gradients_are_finite_and_nonzero(name):
  x, valid = _inputs()
  m = _mixer(name, **({"dropout_rate": 0.1} if name in ("summary_mixing", "hyena") else {}))
  params = _init(m, x, valid)
  r = jax.random.normal(jax.random.key(5), x.shape)

  def loss(p, z):
    y = m.apply(p, z, valid=valid, train=True, rngs={"dropout": jax.random.key(2)})
    return jnp.sum(y * r * valid[..., None])

  gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  chex.assert_tree_all_finite((gp, gx))
  assert float(jnp.abs(gx[valid]).sum()) > 0
  for path, g in jax.tree_util.tree_flatten_with_path(gp)[0]:
    assert float(jnp.abs(g).sum()) > 0, jax.tree_util.keystr(path)
  # Padded inputs get no gradient: nothing real depends on them.
  np.testing.assert_allclose(gx[~valid], 0.0, atol=1e-6)


@pytest.mark.parametrize("name", mixers.names())
def test_whole_encoder_is_padding_invariant(name):
  mixer = functools.partial(mixers.get(name), **KWARGS[name])
  enc = encoder_lib.Encoder(num_layers=1, mlp_dim=32, mixer=mixer, pos_conv_kernel=4,
                            pos_conv_groups=4, layer_norm_first=True)
  x, _ = _inputs(b=1, t=10, lengths=(10,))
  ones = jnp.ones((1, 10), bool)
  params = _init(enc, x, ones)
  y, _ = _apply(enc)(params, x, valid=ones)
  padded = jnp.concatenate([x, 3.0 * jnp.ones((1, 6, D))], axis=1)
  y_pad, _ = _apply(enc)(params, padded, valid=jnp.arange(16)[None] < 10)
  np.testing.assert_allclose(y_pad[:, :10], y, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("name", mixers.names())
def test_params_carry_known_logical_axes_and_shard(name):
  """Every mixer parameter has logical names the rules know (state_shardings raises otherwise),
  and the new parameter layouts shard on a (2, 2, 2) mesh with the same outputs as unsharded."""
  x, valid = _inputs(b=4, t=8, lengths=(8, 5, 8, 3))
  m = _mixer(name)
  boxed = jax.eval_shape(functools.partial(m.init, valid=valid, train=False),
                         jax.random.key(1), x)
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  shardings = partitioning.state_shardings(boxed, mesh)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda a: isinstance(a, nn.Partitioned))
  assert all(isinstance(a, nn.Partitioned) for a in leaves)
  if name not in ("hyena", "summary_mixing"):
    return  # mha's sharded step is tested in tests/training; fnet has no parameters.
  params = _init(m, x, valid)

  def apply(p, z, v):
    return m.apply(p, z, valid=v, train=False)

  batch = partitioning.batch_sharding(mesh)
  with partitioning.activation_rules(mesh):
    sharded = jax.jit(apply, in_shardings=(shardings, batch, batch))(params, x, valid)
  np.testing.assert_allclose(sharded, jax.jit(apply)(params, x, valid), atol=1e-5)


def test_chunked_attention_equals_one_block_in_values_and_gradients():
  x, valid = _inputs(t=11, lengths=(11, 6))
  whole = _mixer("mha", query_chunk_size=0)
  chunked = _mixer("mha", query_chunk_size=4)  # 3 blocks, the last one padded.
  params = _init(whole, x, valid)

  def loss(m, p):
    return jnp.sum(m.apply(p, x, valid=valid, train=False) ** 2 * valid[..., None])

  np.testing.assert_allclose(_apply(chunked)(params, x, valid=valid),
                             _apply(whole)(params, x, valid=valid), atol=1e-6)
  chex.assert_trees_all_close(jax.grad(functools.partial(loss, chunked))(params),
                              jax.grad(functools.partial(loss, whole))(params), atol=1e-5)


def test_chunked_attention_balances_its_blocks():
  """1,500 queries with at most 1,024 per block: 2 blocks of 750, not 2 of 1,024 (padding)."""
  q = jax.ShapeDtypeStruct((1, 1_500, 2, 8), jnp.float32)
  valid = jax.ShapeDtypeStruct((1, 1_500), jnp.bool_)
  jaxpr = jax.make_jaxpr(functools.partial(mha.chunked_attention, chunk_size=1_024))(
      q, q, q, valid)
  scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
  assert len(scans) == 1 and scans[0].params["length"] == 2
  block_shapes = [v.aval.shape for v in scans[0].invars if len(v.aval.shape) == 5]
  assert block_shapes == [(2, 1, 750, 2, 8)], block_shapes
