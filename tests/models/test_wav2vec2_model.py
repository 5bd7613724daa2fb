"""wav2vec 2.0 model: exact parameter counts, frame arithmetic, encoder switches and invariances."""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from configs import common
from jaxssl import objectives
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import layers
from jaxssl.models import mixers
from jaxssl.models import quantizer as quantizer_lib
from jaxssl.models import variants
from jaxssl.models.frontends import cnn
from jaxssl.models.mixers import mha


def _config(variant, **model_overrides):
  c = mlc.ConfigDict()
  c.model = common.wav2vec2_model(variant, **model_overrides)
  c.quantizer = dict(num_groups=2, num_vars=320, temp=(2.0, 0.5, 0.999995))
  c.masking = dict(prob=0.65, span=10, min_spans=2)
  c.objective = dict(name="wav2vec2", num_negatives=100, cross_sample_negatives=0,
                     logit_temp=0.1, diversity_weight=0.1, feature_penalty_weight=10.0)
  return c


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(tree)))


LV60 = dict(layer_norm_first=True,
            frontend=dict(name="cnn", mode="layer_norm", conv_bias=True, feature_grad_mult=1.0))


@pytest.mark.parametrize("variant,overrides,total,encoder_only", [
    ("base", {}, 95_044_608, 94_371_712),
    ("large", dict(layer_norm_first=True), 317_380_864, 315_428_992),
    ("large", LV60, 317_390_592, 315_438_720),
])
def test_parameter_counts_match_fairseq(variant, overrides, total, encoder_only):
  obj = objectives.build(_config(variant, **overrides))
  batch = dict(audio=jax.ShapeDtypeStruct((1, 16_000), jnp.float32),
               valid=jax.ShapeDtypeStruct((1, 16_000), jnp.bool_))
  params = jax.eval_shape(obj.init, jax.random.key(0), batch)  # Abstract: nothing allocated.
  assert _count(params) == total
  assert _count(params["speech_encoder"]) == encoder_only
  assert _count(params["speech_encoder"]["feature_extractor"]) == (
      4_200_448 + (7 * 2 * 512 - 1024 + 7 * 512 if overrides.get("frontend") else 0))


def test_frames_for_matches_the_conv_stack():
  fe = cnn.ConvFeatureEncoder(conv_dim=4)
  lengths = [400, 401, 719, 720, 1000, 16_000, 16_001, 250_000]
  # The conv stack's output shapes, traced abstractly (running it eagerly compiles every op of
  # every length).
  audio = lambda n: jax.ShapeDtypeStruct((1, n), jnp.float32)
  params = jax.eval_shape(fe.init, jax.random.key(0), audio(400))
  for n in lengths:
    out = jax.eval_shape(fe.apply, params, audio(n))
    assert out.shape[1] == variants.frames_for(n)
  # floor((250000 - 400) / 320) + 1 = 781, which the conv stack above confirms.
  assert variants.frames_for(250_000) == 781
  assert variants.frames_for(399) == 0
  np.testing.assert_array_equal(variants.frames_for(np.array(lengths)),
                                [variants.frames_for(n) for n in lengths])


def _encoder(**kw):
  mixer = functools.partial(mixers.get("mha"), num_heads=2)
  return encoder_lib.Encoder(num_layers=2, mlp_dim=32, mixer=mixer, pos_conv_kernel=8,
                             pos_conv_groups=4, **kw)


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_encoder_is_padding_invariant(layer_norm_first):
  enc = _encoder(layer_norm_first=layer_norm_first)
  x = jax.random.normal(jax.random.key(0), (1, 20, 16))
  params = enc.init(jax.random.key(1), x, valid=jnp.ones((1, 20), bool), train=False)
  y, hidden = enc.apply(params, x, valid=jnp.ones((1, 20), bool), train=False)
  assert len(hidden) == 3
  padded = jnp.concatenate([x, 5.0 * jnp.ones((1, 7, 16))], axis=1)
  valid = jnp.arange(27)[None] < 20
  y_pad, _ = enc.apply(params, padded, valid=valid, train=False)
  np.testing.assert_allclose(y_pad[:, :20], y, atol=1e-5)


def test_scan_and_remat_match_the_loop():
  x = jax.random.normal(jax.random.key(0), (2, 12, 16))
  valid = jnp.arange(12)[None] < jnp.array([[12], [9]])
  loop = _encoder()
  scan = _encoder(scan_layers=True, remat=True)
  p_scan = scan.init(jax.random.key(1), x, valid=valid, train=False)["params"]
  chex.assert_shape(p_scan["layers"]["ffn"]["fc1"]["dense"]["kernel"].value, (2, 16, 32))
  p_loop = encoder_lib.scan_to_loop(nn.unbox(p_scan), 2)
  y_scan, h_scan = scan.apply({"params": p_scan}, x, valid=valid, train=False)
  y_loop, h_loop = loop.apply({"params": p_loop}, x, valid=valid, train=False)
  np.testing.assert_allclose(y_scan, y_loop, atol=1e-5)
  np.testing.assert_allclose(h_scan[1], h_loop[1], atol=1e-5)
  back = encoder_lib.loop_to_scan(p_loop, 2)
  chex.assert_trees_all_close(back, nn.unbox(p_scan))
  g_scan = jax.grad(lambda p: scan.apply({"params": p}, x, valid=valid, train=False)[0].sum())(
      p_scan)
  g_loop = jax.grad(lambda p: loop.apply({"params": p}, x, valid=valid, train=False)[0].sum())(
      p_loop)
  chex.assert_trees_all_close(encoder_lib.scan_to_loop(nn.unbox(g_scan), 2), g_loop, atol=1e-5)


def test_positional_conv_weight_norm_starts_at_v():
  pc = encoder_lib.PositionalConv(kernel_size=8, groups=4)
  x = jax.random.normal(jax.random.key(0), (1, 10, 16))
  p = nn.unbox(pc.init(jax.random.key(1), x)["params"])
  chex.assert_shape(p["weight_g"], (8, 1, 1))  # One gain per kernel tap (torch dim=2).
  np.testing.assert_allclose(p["weight_g"][:, 0, 0],
                             np.linalg.norm(p["weight_v"], axis=(1, 2)), rtol=1e-6)
  assert pc.apply({"params": p}, x).shape == x.shape  # SamePad drops the extra frame.


def test_grad_multiply_scales_only_the_gradient():
  x = jnp.arange(3.0)
  np.testing.assert_allclose(layers.grad_multiply(x, 0.1), x)
  g = jax.grad(lambda v: (layers.grad_multiply(v, 0.1) ** 2).sum())(x)
  np.testing.assert_allclose(g, 0.1 * 2 * x, rtol=1e-6)
  assert float(jnp.abs(jax.grad(lambda v: layers.grad_multiply(v, 0.0).sum())(x)).sum()) == 0.0


def test_feature_encoder_modes_and_bad_mode():
  x = jax.random.normal(jax.random.key(0), (2, 1200))
  for mode, bias in (("default", False), ("layer_norm", True)):
    fe = cnn.ConvFeatureEncoder(conv_dim=8, mode=mode, conv_bias=bias)
    params = fe.init(jax.random.key(1), x)["params"]
    norms = sorted(k for k in params if k.startswith("norm"))
    assert norms == (["norm_0"] if mode == "default" else [f"norm_{i}" for i in range(7)])
    assert ("bias" in params["conv_3"]) == bias
    y = fe.apply({"params": params}, x)
    chex.assert_shape(y, (2, variants.frames_for(1200), 8))
    chex.assert_tree_all_finite(y)
  with pytest.raises(ValueError, match="Unknown feature encoder mode 'group'"):
    cnn.ConvFeatureEncoder(mode="group").init(jax.random.key(0), x)


def test_demo_config_resizes_the_model():
  from configs.wav2vec2 import demo  # pylint: disable=g-import-not-at-top
  assert demo.get_config().model.variant == "demo"
  batch = dict(audio=jax.ShapeDtypeStruct((1, 16_000), jnp.float32),
               valid=jax.ShapeDtypeStruct((1, 16_000), jnp.bool_))
  count = lambda arg: _count(jax.eval_shape(
      objectives.build(demo.get_config(arg)).init, jax.random.key(0), batch))
  d = 128  # One pre-LN block of the demo width: q, k, v, out; FFN 4d; two LayerNorms.
  block = 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * 2 * d
  assert count("layers=6") - count("") == 3 * block
  v = variants.get(demo.get_config("width=256,conv=128").model.variant)
  assert (v.num_layers, v.embed_dim, v.mlp_dim, v.conv_dim) == (3, 256, 1024, 128)


def test_group_norm_over_valid_frames_equals_fairseq_unpadded_and_ignores_padding():
  """fairseq's Fp32GroupNorm(C, C) on an unpadded batch is flax's GroupNorm with one group per
  channel; with a sample mask, a padded row's valid frames equal the unpadded row's."""
  fe = cnn.ConvFeatureEncoder(conv_dim=8, mode="default")
  x = jax.random.normal(jax.random.key(0), (2, 4000))
  params = jax.jit(fe.init)(jax.random.key(1), x)["params"]
  conv0 = nn.Conv(8, (10,), (5,), padding="VALID", use_bias=False)
  h = conv0.apply({"params": params["conv_0"]}, x[..., None])
  gn = nn.GroupNorm(num_groups=8, epsilon=1e-5).apply({"params": params["norm_0"]}, h)
  ours = cnn.ChannelNorm().apply({"params": params["norm_0"]}, h, jnp.ones(h.shape[:2], bool))
  np.testing.assert_allclose(ours, gn, rtol=1e-5, atol=1e-5)

  n = 2500
  padded = x.at[0, n:].set(0.0)
  audio_valid = jnp.arange(4000)[None] < jnp.array([[n], [4000]])
  apply = jax.jit(fe.apply)  # One program per shape (eager, every op compiles per shape).
  y = apply({"params": params}, padded, audio_valid)
  alone = apply({"params": params}, x[:1, :n])
  t = variants.frames_for(n)
  np.testing.assert_allclose(y[0, :t], alone[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y[1], apply({"params": params}, x[1:])[0], rtol=1e-5, atol=1e-5)
  unmasked = apply({"params": params}, padded)  # Statistics over the padded length.
  assert float(jnp.abs(unmasked[0, :t] - alone[0]).max()) > 1e-3


def test_attention_dropout_draws_a_mask_per_batch_element_and_head():
  """fairseq drops [B*H, T, T] probabilities independently; a broadcast [T, T] mask would make
  every head of every row see the same dropped keys."""
  b, t, h, d = 2, 6, 3, 4
  ones = jnp.ones((b, t, h, d))  # Equal logits: uniform attention.
  v = jnp.broadcast_to(jnp.eye(t)[None, :, None, :], (b, t, h, t))
  out = mha.heads_first_attention(ones, ones, v, jnp.ones((b, t), bool),
                                  dropout_rng=jax.random.key(0), dropout_rate=0.5)
  # With uniform attention and v = identity over keys, out[b, q, h, k] = keep[b, h, q, k] / (T/2).
  kept = np.asarray(out) > 0
  assert not np.array_equal(kept[0, :, 0], kept[0, :, 1])  # Heads differ.
  assert not np.array_equal(kept[0], kept[1])  # Batch elements differ.
  assert 0.35 < kept.mean() < 0.65


def test_quantizer_perplexities_are_per_block_of_rows():
  """data.batch_groups > 1: perplexities of each block (fairseq: each GPU's batch), their mean
  logged and the diversity term weighted by each block's masked frames."""
  q = quantizer_lib.GumbelQuantizer(num_groups=2, num_vars=8, vq_dim=4)
  x = jax.random.normal(jax.random.key(0), (12, 5))
  w = jnp.array([1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1], jnp.float32)
  params = q.init(jax.random.key(1), x, weights=w, temperature=1.0, train=False)
  _, whole = q.apply(params, x, weights=w, temperature=1.0, train=False)
  _, blocks = q.apply(params, x, weights=w, temperature=1.0, train=False, groups=3)
  per_block = [q.apply(params, x[4 * i:4 * i + 4], weights=w[4 * i:4 * i + 4], temperature=1.0,
                       train=False)[1] for i in range(3)]
  np.testing.assert_allclose(blocks["prob_perplexity"],
                             np.mean([m["prob_perplexity"] for m in per_block]), rtol=1e-6)
  np.testing.assert_allclose(blocks["code_perplexity"],
                             np.mean([m["code_perplexity"] for m in per_block]), rtol=1e-6)
  share = np.array([3, 3, 3]) / 9.0
  np.testing.assert_allclose(blocks["diversity"],
                             sum(s * m["diversity"] for s, m in zip(share, per_block)), rtol=1e-6)
  np.testing.assert_allclose(whole["diversity"], (16 - whole["prob_perplexity"]) / 16, rtol=1e-6)
  assert float(blocks["prob_perplexity"]) < float(whole["prob_perplexity"])  # Fewer frames each.
