"""Conformer block (models/conformer.py): SpeechBrain's equations, padding, configs, sizes.

The block is checked against a float64 NumPy transcription of SpeechBrain's pre-norm
ConformerEncoderLayer (lobes/models/transformer/Conformer.py) run on each utterance unpadded;
the configs that select it with `model.block="conformer"` build the wav2vec 2.0, HuBERT and
MelHuBERT losses.
"""
import functools
import importlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from configs import common
from configs.mixers import wav2vec2 as w2v2_mixer_config
from jaxssl import objectives
from jaxssl.models import conformer
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import mixers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.training import partitioning

D, F, K = 16, 32, 5
MIXER_KWARGS = {"mha": dict(num_heads=2), "summary_mixing": dict(num_heads=2)}


def _mixer(name="mha"):
  return functools.partial(mixers.get(name), **MIXER_KWARGS[name])


def _block(activation="swish", **kw):
  return conformer.ConformerBlock(mixer=_mixer(), mlp_dim=F, kernel_size=K,
                                  activation=activation, **kw)


def _encoder(mixer="mha", **kw):
  return encoder_lib.Encoder(num_layers=2, mlp_dim=F, mixer=_mixer(mixer), pos_conv_kernel=4,
                             pos_conv_groups=4, block="conformer", conformer_kernel_size=K, **kw)


def _inputs(lengths, t, seed=0):
  x = jax.random.normal(jax.random.key(seed), (len(lengths), t, D))
  return x, jnp.arange(t)[None] < jnp.asarray(lengths)[:, None]


def _init(m, x, valid):
  return nn.unbox(jax.jit(functools.partial(m.init, train=False))(jax.random.key(1), x,
                                                                  valid=valid))


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.unbox(tree)))


# NumPy float64 transcription of SpeechBrain's layer, on one unpadded utterance [T, D].

def _np_act(name, h):
  if name == "swish":
    return h / (1.0 + np.exp(-h))
  return 0.5 * h * (1.0 + special.erf(h / np.sqrt(2.0)))  # torch.nn.GELU (erf).


def _np_ln(h, p, eps=1e-5):
  mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
  return (h - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_linear(h, p):
  return h @ p["dense"]["kernel"] + p["dense"]["bias"]


def _np_ffn(h, p, act):  # PositionalwiseFeedForward: Linear, act, (Dropout), Linear.
  return _np_linear(_np_act(act, _np_linear(h, p["fc1"])), p["fc2"])


def _np_mha(h, p, heads=2):  # Unmasked softmax attention (the utterance is unpadded).
  t, d = h.shape
  q, k, v = (_np_linear(h, p[n]).reshape(t, heads, d // heads) for n in ("query", "key", "value"))
  logits = np.einsum("thd,shd->hts", q, k) / np.sqrt(d // heads)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return _np_linear(np.einsum("hts,shd->thd", w, v).reshape(t, d), p["out"])


def _np_conv_module(h, p, act):
  """ConvolutionModule.forward (non-causal): LN, pointwise conv + GLU, depthwise conv with
  (k - 1) // 2 zeros each side, LN, act, Linear."""
  t, d = h.shape
  z = _np_linear(_np_ln(h, p["layer_norm"]), p["pointwise_in"])
  z = z[:, :d] * special.expit(z[:, d:])
  kernel = p["depthwise_kernel"]
  k = kernel.shape[0]
  zp = np.concatenate([np.zeros((k // 2, d)), z, np.zeros((k // 2, d))])
  out = np.stack([sum(zp[i + j] * kernel[j] for j in range(k)) for i in range(t)])
  out = _np_act(act, _np_ln(out + p["depthwise_bias"], p["conv_layer_norm"]))
  return _np_linear(out, p["pointwise_out"])


def _np_conformer_layer(x, p, act):
  """ConformerEncoderLayer.forward (Conformer.py L475-499) without dropout."""
  x = x + 0.5 * _np_ffn(_np_ln(x, p["ffn1_layer_norm"]), p["ffn1"], act)
  x = x + _np_mha(_np_ln(x, p["self_attn_layer_norm"]), p["self_attn"])
  x = x + _np_conv_module(x, p["conv_module"], act)
  return _np_ln(x + 0.5 * _np_ffn(_np_ln(x, p["ffn2_layer_norm"]), p["ffn2"], act),
                p["final_layer_norm"])


def _randomize(params, seed=3):
  """Every parameter ~ N(0, 0.3^2) (LN scales around 1): no zero bias hides a term."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, a.shape) for k, a in
                                   zip(keys, leaves)])


@pytest.mark.parametrize("activation", ["swish", "gelu"])
def test_block_matches_numpy_speechbrain_layer_on_unpadded_utterances(activation):
  lengths, t = (13, 8), 13
  x, valid = _inputs(lengths, t)
  m = _block(activation)
  params = _randomize(_init(m, x, valid))
  y, _ = jax.jit(functools.partial(m.apply, train=False))(params, x, valid)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  xv = np.asarray(x, np.float64)
  for b, n in enumerate(lengths):
    ref = _np_conformer_layer(xv[b, :n], p, activation)
    np.testing.assert_allclose(y[b, :n], ref, atol=2e-4, rtol=1e-3)
  # Dropout 0 in training is the evaluation map (dropout sits only on the residual branches).
  y_train, _ = jax.jit(functools.partial(m.apply, train=True))(
      params, x, valid, rngs={"dropout": jax.random.key(0)})
  np.testing.assert_allclose(y_train, y, atol=1e-6)


def test_training_dropout_changes_only_the_branches_and_layerdrop_can_skip_the_block():
  x, valid = _inputs((9, 6), 9)
  params = _init(_block(), x, valid)
  m = _block(dropout_rate=0.5, activation_dropout_rate=0.5)
  apply = jax.jit(functools.partial(m.apply, train=True))
  y1, _ = apply(params, x, valid, rngs={"dropout": jax.random.key(0)})
  y2, _ = apply(params, x, valid, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(y1, y2)  # Dropout is on in training.
  dropped = _block(layerdrop_rate=1.0 - 1e-7)
  y, _ = jax.jit(functools.partial(dropped.apply, train=True))(
      params, x, valid, rngs={"layerdrop": jax.random.key(0), "dropout": jax.random.key(0)})
  np.testing.assert_array_equal(y, x)  # Dropped: the block is the identity.


def test_depthwise_conv_equals_a_grouped_conv_and_the_module_never_reads_padding():
  x, valid = _inputs((11, 7), 11)
  kernel = jax.random.normal(jax.random.key(4), (K, D))
  direct = jax.lax.conv_general_dilated(
      x, kernel[:, None, :], (1,), [(K // 2, K // 2)], dimension_numbers=("NWC", "WIO", "NWC"),
      feature_group_count=D)
  np.testing.assert_allclose(conformer.depthwise_conv1d(x, kernel), direct, atol=1e-5)
  with pytest.raises(ValueError, match="model.conformer.kernel_size=4 must be odd"):
    conformer.depthwise_conv1d(x, kernel[:4])

  m = conformer.ConvolutionModule(kernel_size=K)
  params = _randomize(nn.unbox(m.init(jax.random.key(0), x, valid=valid, train=False)))

  def real_sum(z, v):
    y = m.apply(params, z, valid=v, train=False)
    return jnp.sum(y * valid[..., None]), y

  grad, y = jax.jit(jax.grad(real_sum, has_aux=True))(x, valid)
  np.testing.assert_array_equal(y[~valid], 0.0)  # Zero output on padded frames (L327-328).
  np.testing.assert_array_equal(grad[~valid], 0.0)  # Real frames read no padded frame.
  assert float(jnp.abs(grad[1, 6]).sum()) > 0
  # Without the mask (SpeechBrain's depthwise conv sees the padded frames), the frames
  # K // 2 past the last real one feed real outputs: the masking above is what removes that.
  leaky, _ = jax.jit(jax.grad(real_sum, has_aux=True))(x, jnp.ones_like(valid))
  assert float(jnp.abs(leaky[1, 7:7 + K // 2]).sum()) > 0
  np.testing.assert_array_equal(leaky[1, 7 + K // 2:], 0.0)


@pytest.mark.parametrize("mixer", ["mha", "summary_mixing"])
def test_conformer_encoder_is_padding_invariant(mixer):
  """Two padded lengths (and no padding) give the same real frames, in every hidden state."""
  lengths = (10, 6)
  enc = _encoder(mixer)
  x, valid = _inputs(lengths, 10)
  params = _init(enc, x, valid)
  apply = jax.jit(functools.partial(enc.apply, train=False))
  outs = []
  for pad, fill in ((6, 3.0), (13, -7.0)):
    vp = jnp.arange(10 + pad)[None] < jnp.array(lengths)[:, None]
    xp = jnp.concatenate([x, jnp.zeros((2, pad, D))], axis=1)
    outs.append(apply(params, jnp.where(vp[..., None], xp, fill), valid=vp))
  (y1, h1), (y2, h2) = outs
  assert len(h1) == 3
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(y1[b, :n], y2[b, :n], atol=5e-5)
    for a, c in zip(h1, h2):
      np.testing.assert_allclose(a[b, :n], c[b, :n], atol=5e-5)
  y_alone, _ = apply(params, x[1:, :6], valid=jnp.ones((1, 6), bool))
  np.testing.assert_allclose(y1[1, :6], y_alone[0], atol=5e-5)


def test_encoder_final_layer_norm_and_scan_remat_match_the_loop():
  x, valid = _inputs((12, 9), 12)
  loop = _encoder()
  scan = _encoder(scan_layers=True, remat=True)
  p_scan = nn.unbox(scan.init(jax.random.key(1), x, valid=valid, train=False))["params"]
  chex.assert_shape(p_scan["layers"]["conv_module"]["depthwise_kernel"], (2, K, D))
  p_loop = encoder_lib.scan_to_loop(p_scan, 2)
  y_scan, h_scan = scan.apply({"params": p_scan}, x, valid=valid, train=False)
  y_loop, h_loop = loop.apply({"params": p_loop}, x, valid=valid, train=False)
  np.testing.assert_allclose(y_scan, y_loop, atol=1e-5)
  np.testing.assert_allclose(h_scan[1], h_loop[1], atol=1e-5)
  # Pre-LN layout whatever layer_norm_first says; the last hidden state is after the final LN
  # (eps 1e-6, SpeechBrain's ConformerEncoder.norm) of block 2's output.
  y_post_flag, _ = _encoder(layer_norm_first=False).apply({"params": p_loop}, x, valid=valid,
                                                          train=False)
  np.testing.assert_array_equal(y_post_flag, y_loop)
  _, h_inner = loop.apply({"params": p_loop}, x, valid=valid, train=False,
                          capture_intermediates=True, mutable=["intermediates"])[1][
                              "intermediates"]["layer_01"]["__call__"][0]
  ln = nn.LayerNorm(epsilon=1e-6).apply({"params": p_loop["layer_norm"]}, h_inner)
  np.testing.assert_allclose(y_loop, ln, atol=1e-5)
  np.testing.assert_allclose(h_loop[-1], y_loop)
  g = jax.grad(lambda p: scan.apply({"params": p}, x, valid=valid, train=False)[0].sum())(p_scan)
  g_loop = jax.grad(lambda p: loop.apply({"params": p}, x, valid=valid, train=False)[0].sum())(
      p_loop)
  chex.assert_trees_all_close(encoder_lib.scan_to_loop(g, 2), g_loop, atol=1e-5)


def test_parameter_count_in_closed_form():
  """d = 128, ffn f = 512, kernel k = 31, 3 layers (the demo variant), mha: by hand."""
  d, f, k, layers_, pos_k, pos_g = 128, 512, 31, 3, 32, 8
  ln = 2 * d
  ffn = ln + (d * f + f) + (f * d + d)                      # LN + fc1 + fc2
  mha = ln + 4 * (d * d + d)                                # LN + q, k, v, out
  conv = ln + (d * 2 * d + 2 * d) + (k * d + d) + ln + (d * d + d)
  layer = 2 * ffn + mha + conv + ln                         # + final_layer_norm
  pos_conv = pos_k * (d // pos_g) * d + pos_k + d           # weight_v, weight_g, bias
  expected = layers_ * layer + pos_conv + ln                # + the encoder's final LN
  # 256 + 66,048 + 65,664; 256 + 66,048; 256 + 33,024 + 4,096 + 256 + 16,512.
  assert (ffn, mha, conv) == (131_968, 66_304, 54_144)
  assert layer == 384_640 and pos_conv == 65_696
  c = w2v2_mixer_config.get_config("mixer=mha,runlocal")
  with c.unlocked():
    c.model.variant = "demo"
    c.model.block = "conformer"
  assert variants.get("demo") == variants.Variant(layers_, d, f, 4, conv_dim=64, final_dim=64,
                                                  pos_conv_kernel=pos_k, pos_conv_groups=pos_g)
  enc = wav2vec2_model.speech_encoder_from_config(c.model)()
  shapes = jax.eval_shape(functools.partial(enc.init, train=False), jax.random.key(0),
                          jnp.zeros((1, 8_000)), valid=jnp.ones((1, 24), bool))
  assert _count(shapes["params"]["encoder"]) == expected == 1_219_872


def _loss_shapes(c, batch):
  obj = objectives.build(c)
  params = jax.eval_shape(obj.init, jax.random.key(1), batch)
  layer = params.get("speech_encoder", params)["encoder"]["layer_00"]
  loss, grads = jax.eval_shape(jax.value_and_grad(
      lambda p, b: obj.loss(p, b, jax.random.key(2), step=0)[0]), nn.unbox(params), batch)
  assert loss.shape == ()
  chex.assert_trees_all_equal_shapes(grads, nn.unbox(params))
  return obj, params, layer


def _batch(s, hubert):
  batch = dict(audio=jax.ShapeDtypeStruct((2, s), jnp.float32),
               valid=jax.ShapeDtypeStruct((2, s), jnp.bool_))
  if hubert:
    n = s // 160 + 1
    batch.update(labels=jax.ShapeDtypeStruct((2, n), jnp.int32),
                 labels_valid=jax.ShapeDtypeStruct((2, n), jnp.bool_))
  return batch


@pytest.mark.parametrize("module,arg", [
    ("configs.wav2vec2.demo", "runlocal"),
    ("configs.hubert.demo", "runlocal"),
    ("configs.hubert.melhubert", "runlocal"),
    ("configs.distill.demo", "runlocal"),
])
def test_recipes_with_one_config_line_build_a_conformer_loss(module, arg):
  """wav2vec 2.0, HuBERT, MelHuBERT and a DistilHuBERT student: abstract loss and gradients."""
  c = importlib.import_module(module).get_config(arg)
  with c.unlocked():
    c.model.block = "conformer"
  batch = _batch(8_000, "hubert" in module)
  if module.startswith("configs.distill"):
    n, d_t = len(c.distill.target_layers), c.distill.target_dim
    batch["targets"] = jax.ShapeDtypeStruct((2, n, variants.frames_for(8_000), d_t), jnp.float32)
  _, _, layer = _loss_shapes(c, batch)
  assert {"ffn1", "ffn2", "conv_module", "self_attn", "final_layer_norm"} <= set(layer)


def test_a_conformer_loss_and_its_gradients_are_finite():
  """A real MelHuBERT (mel frontend: the cheapest to compile) loss and gradient step."""
  c = importlib.import_module("configs.hubert.melhubert").get_config("runlocal")
  with c.unlocked():
    c.model.block = "conformer"
    c.model.conformer.activation = "gelu"
  s = 4_000
  n = s // 160 + 1
  batch = dict(audio=jax.random.normal(jax.random.key(0), (2, s)),
               valid=jnp.arange(s)[None] < jnp.array([[s], [3_000]]),
               labels=jax.random.randint(jax.random.key(1), (2, n), 0, 8),
               labels_valid=jnp.arange(n)[None] < jnp.array([[n], [19]]))
  obj = objectives.build(c)
  params = nn.unbox(jax.jit(obj.init)(jax.random.key(1), batch))
  loss, grads = jax.jit(jax.value_and_grad(
      lambda p: obj.loss(p, batch, jax.random.key(2), step=0)[0]))(params)
  assert np.isfinite(float(loss)) and float(loss) > 0
  chex.assert_tree_all_finite(grads)
  conv = grads["speech_encoder"]["encoder"]["layer_00"]["conv_module"]
  assert float(jnp.abs(conv["depthwise_kernel"]).sum()) > 0


def test_summary_mixing_conformer_is_one_more_config_line():
  c = w2v2_mixer_config.get_config("mixer=summary_mixing,runlocal")
  with c.unlocked():
    c.model.block = "conformer"
  _, _, layer = _loss_shapes(c, _batch(8_000, False))
  assert "summary_proj" in layer["self_attn"] and "query" not in layer["self_attn"]
  assert "depthwise_kernel" in layer["conv_module"]


def test_config_fields_and_their_errors():
  m = common.wav2vec2_model("tiny")
  assert m.block == "transformer" and m.conformer.to_dict() == conformer.CONFIG_DEFAULTS
  enc = wav2vec2_model.speech_encoder_from_config(m).keywords["make_encoder"].keywords
  assert enc["block"] == "transformer"
  old = common.wav2vec2_model("tiny")  # A config saved before `block` existed.
  with old.unlocked():
    del old["block"], old["conformer"]
  assert conformer.encoder_kwargs(old)["block"] == "transformer"
  m = common.wav2vec2_model("tiny", block="conformer", conformer=dict(kernel_size=7,
                                                                      activation="gelu"))
  enc = wav2vec2_model.speech_encoder_from_config(m).keywords["make_encoder"].keywords
  assert (enc["block"], enc["conformer_kernel_size"], enc["conformer_activation"]) == (
      "conformer", 7, "gelu")
  with pytest.raises(ValueError, match=r"model.conformer.activation='relu'"):
    wav2vec2_model.speech_encoder_from_config(common.wav2vec2_model(
        "tiny", block="conformer", conformer=dict(activation="relu")))
  with pytest.raises(ValueError, match=r"model.conformer.kernel is not a Conformer field"):
    conformer.encoder_kwargs(common.wav2vec2_model("tiny", conformer=dict(kernel=3)))
  x, valid = _inputs((4,), 4)
  with pytest.raises(ValueError, match=r"model.block='branchformer'"):
    encoder_lib.Encoder(num_layers=1, mlp_dim=F, mixer=_mixer(), pos_conv_kernel=4,
                        pos_conv_groups=4, block="branchformer").init(
                            jax.random.key(0), x, valid=valid, train=False)


def test_params_carry_logical_axes_and_shard_on_a_2x2x2_mesh():
  x, valid = _inputs((8, 5, 8, 3), 8)
  m = _block()
  boxed = jax.eval_shape(functools.partial(m.init, train=False), jax.random.key(1), x, valid)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda a: isinstance(a, nn.Partitioned))
  assert leaves and all(isinstance(a, nn.Partitioned) for a in leaves)
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  shardings = partitioning.state_shardings(boxed, mesh)  # Raises on an unknown logical name.
  params = _randomize(_init(m, x, valid))

  def apply(p, z, v):
    return m.apply(p, z, v, train=False)[0]

  batch = partitioning.batch_sharding(mesh)
  with partitioning.activation_rules(mesh):
    sharded = jax.jit(apply, in_shardings=(shardings, batch, batch))(params, x, valid)
  np.testing.assert_allclose(sharded, jax.jit(apply)(params, x, valid), atol=1e-5)


def test_bfloat16_conformer_block_keeps_its_dtype_and_stays_close_to_float32():
  x, valid = _inputs((9, 6), 9)
  params = _init(_block(), x, valid)
  y32, _ = jax.jit(functools.partial(_block().apply, train=False))(params, x, valid)
  bf16 = _block(dtype=jnp.bfloat16)
  y16, _ = jax.jit(functools.partial(bf16.apply, train=False))(params, x.astype(jnp.bfloat16),
                                                                valid)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32)[valid], y32[valid], atol=0.1)
