"""BEST-RQ (jaxssl/objectives/best_rq.py, jaxssl/models/frontends/fbank_conv.py, configs/best_rq):
the frozen random-projection quantizer, SpeechBrain's masking with noise, the conv frontend's
frames and padding, the loss at init, the base config's parameter count and Noam's schedule (the
real sharded trainer: test_sharded_equality.py)."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.best_rq import base
from configs.best_rq import demo
from jaxssl import objectives
from jaxssl import validate
from jaxssl.data import batching
from jaxssl.models import frontends
from jaxssl.models.frontends import fbank_conv
from jaxssl.objectives import best_rq
from jaxssl.training import optimizers


@pytest.fixture(scope="module")
def tiny():
  c = demo.get_config("runlocal")
  obj = objectives.build(c)
  rs = np.random.default_rng(0)
  s = 16_000
  batch = dict(audio=jnp.asarray(rs.standard_normal((8, s)), jnp.float32),
               valid=jnp.ones((8, s), bool))
  params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
  return c, obj, params, batch


def test_quantizer_is_a_function_of_its_seed_and_picks_the_nearest_code():
  q = best_rq.make_quantizer(1000)
  again = best_rq.make_quantizer(1000)
  other = best_rq.make_quantizer(1001)
  assert q["projection"].shape == (320, 16) and q["codebook"].shape == (8192, 16)
  for k in q:
    np.testing.assert_array_equal(q[k], again[k])
    assert not np.allclose(q[k], other[k])
  # Xavier-uniform bound sqrt(6 / (320 + 16)); unit-norm codes.
  bound = math.sqrt(6 / 336)
  p = np.asarray(q["projection"])
  assert np.abs(p).max() <= bound and np.abs(p).max() > 0.95 * bound
  np.testing.assert_allclose(np.linalg.norm(q["codebook"], axis=-1), 1.0, rtol=1e-5)
  # SpeechBrain's forward: argmin of the l2 distance between normalise(x P) and the codes.
  x = np.random.default_rng(0).standard_normal((3, 50, 320)).astype(np.float32)
  z = x.astype(np.float64) @ p
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  dist = np.linalg.norm(np.asarray(q["codebook"], np.float64)[None, None] - z[:, :, None], axis=-1)
  got = np.asarray(best_rq.quantize(jnp.asarray(x), q))
  np.testing.assert_array_equal(got, dist.argmin(-1))
  assert not np.array_equal(got, np.asarray(best_rq.quantize(jnp.asarray(x), other)))


def test_quantizer_gets_no_gradient_and_the_loss_starts_at_log_k(tiny):
  c, obj, params, batch = tiny
  state = obj.init_state(params)

  def loss_fn(p, q):
    return obj.loss(p, batch, jax.random.key(1), step=0, train=True, state={"quantizer": q})

  (loss, m), (gp, gq) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(
      params, state["quantizer"])
  # torch's Linear init on unit-variance (final LayerNorm) inputs: logits of variance 1/3 for
  # any width, so the expected cross-entropy is about log K + 1/6.
  assert float(loss) == pytest.approx(np.log(8192) + 1 / 6, abs=0.1)
  assert 0.4 < float(m["masked_fraction"]) < 0.8
  assert 1 < float(m["target_codes_used"]) <= 8192
  assert float(m["target_perplexity"]) <= float(m["target_codes_used"]) + 1e-3
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(gq))
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(gp)]
  assert all(np.isfinite(norms)) and sum(norms) > 0
  # No state: the same quantizer, rebuilt from objective.quantizer_seed.
  loss2, _ = jax.jit(lambda p: obj.loss(p, batch, jax.random.key(1), step=0))(params)
  assert float(loss2) == pytest.approx(float(loss), rel=1e-6)


def test_masks_chunks_of_the_shortest_row_per_group_with_noise():
  # Group 0: two rows of 200 fbank frames: floor(0.15 * 200 + u) = 30 of its 50 chunks, always.
  # Group 1: rows of 103 and 400 frames: the mask comes from the shortest (25 chunks).
  lengths = jnp.array([200, 200, 103, 400])
  counts0, counts1, firsts = [], [], []
  for i in range(200):
    m = np.asarray(best_rq.chunk_mask(jax.random.key(i), lengths, 100, prob=0.15, groups=2))
    np.testing.assert_array_equal(m[0], m[1])
    np.testing.assert_array_equal(m[2], m[3])
    assert not m[0, 50:].any() and not m[2, 25:].any()
    counts0.append(m[0].sum())
    counts1.append(m[2].sum())
    firsts.append(m[0, 0])
  assert set(counts0) == {30}  # 60% of the 50 stacked frames (0.15 x mask_length 4).
  # 0.15 * 103 = 15.45: 15 or 16 chunks, 16 with probability 0.45.
  assert set(counts1) <= {15, 16} and 0.33 < np.mean(np.array(counts1) == 16) < 0.57
  assert 0.45 < np.mean(firsts) < 0.75  # Each chunk: 30 / 50.
  # At least one chunk, even for a short row.
  assert np.asarray(best_rq.chunk_mask(jax.random.key(0), jnp.array([5]), 4, prob=0.15)).sum() == 1

  obj = objectives.build(demo.get_config("runlocal"))
  feats = jax.random.normal(jax.random.key(0), (4, 100, 320))
  masked = best_rq.chunk_mask(jax.random.key(1), lengths, 100, prob=0.15, groups=2)
  out = np.asarray(obj.corrupt(jax.random.key(2), feats, masked))
  mk = np.asarray(masked)
  np.testing.assert_array_equal(out[~mk], np.asarray(feats)[~mk])
  noise = out[mk]
  assert noise.size > 25_000
  assert abs(noise.mean()) < 3e-3 and noise.std() == pytest.approx(0.1, rel=0.02)


def test_fbank_matches_a_numpy_transcription_of_speechbrain():
  rs = np.random.default_rng(0)
  audio = rs.standard_normal(4_000).astype(np.float32) * 0.1
  got = np.asarray(fbank_conv.sb_fbank(jnp.asarray(audio[None]), n_mels=80))[0]
  x = np.pad(audio.astype(np.float64), 200)
  t = 1 + 4_000 // 160
  frames = np.stack([x[i * 160:i * 160 + 400] for i in range(t)])
  win = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 400)
  power = np.abs(np.fft.rfft(frames * win, axis=-1)) ** 2
  mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 82)
  hz = 700 * (10 ** (mel / 2595) - 1)
  freqs = np.linspace(0, 8000, 201)
  fb = np.zeros((201, 80))
  for j in range(80):
    slope = (freqs - hz[j + 1]) / (hz[j + 1] - hz[j])
    fb[:, j] = np.maximum(0, np.minimum(slope + 1, 1 - slope))
  db = 10 * np.log10(np.maximum(power @ fb, 1e-10))
  want = np.maximum(db, db.max() - 80.0)
  assert got.shape == (t, 80)
  np.testing.assert_allclose(got, want, atol=2e-3)


_MODULE = fbank_conv.FbankConv()
_apply = jax.jit(lambda p, a, v: _MODULE.apply({"params": p}, a, v))


@functools.cache
def _conv_params():
  """FbankConv's params (their shapes do not depend on the audio's length)."""
  return nn.unbox(jax.jit(_MODULE.init)(jax.random.key(0), jnp.zeros((1, 3_200)))["params"])


def _conv_apply(num_samples, seed, params=None, pad_to=None):
  """(params, FbankConv output) of `num_samples` samples of noise, zero-padded to `pad_to`."""
  audio = jnp.asarray(np.random.default_rng(seed).standard_normal((1, num_samples)), jnp.float32)
  if params is None:
    params = _conv_params()
  if pad_to:
    audio = jnp.pad(audio, ((0, 0), (0, pad_to - num_samples)))
  valid = jnp.arange(audio.shape[1])[None] < num_samples
  return params, _apply(params, audio, valid)


def test_frontend_frames_follow_the_40_ms_hop_and_ignore_padding():
  fe = ml_collections.ConfigDict(dict(name="fbank_conv"))
  assert frontends.hop(fe) == 640
  params = None
  for s in (3_000, 3_199, 3_200, 7_777):
    want = -(-(1 + s // 160) // 4)
    assert frontends.frames_for(fe, s) == want
    assert frontends.frames_for(fe, s + 640) == want + 1
    params, out = _conv_apply(s, s, params)
    assert out.shape == (1, want, 640)
    _, padded = _conv_apply(s, s, params, pad_to=12_000)
    assert padded.shape == (1, frontends.frames_for(fe, 12_000), 640)
    np.testing.assert_allclose(padded[0, :want], out[0], atol=1e-5)
    np.testing.assert_array_equal(padded[0, want:], 0.0)


def test_conv_block_matches_speechbrain_reflect_padding_and_layer_norm():
  """One utterance through a torch transcription of ConvolutionFrontEnd (Conv2d 'same' =
  reflect-pad 1, stride 2; LayerNorm over (mel, channels); LeakyReLU) with the same weights."""
  torch = pytest.importorskip("torch")
  params, out = _conv_apply(6_240, 0)  # 40 fbank frames: a multiple of 4.
  audio = jnp.asarray(np.random.default_rng(0).standard_normal((1, 6_240)), jnp.float32)
  feats = np.asarray(fbank_conv.stacked_fbank(audio)).reshape(1, 40, 80)
  x = torch.tensor(feats)[..., None]  # [B, T, F, C]
  for i in range(2):
    p = params[f"conv_{i}"]
    h = x.permute(0, 3, 2, 1)  # sb Conv2d: transpose(1, -1) -> [B, C, F, T].
    h = torch.nn.functional.pad(h, (1, 1, 1, 1), mode="reflect")
    w = torch.tensor(np.asarray(p["kernel"])).permute(3, 2, 1, 0)  # HWIO (t, f) -> O I F T.
    h = torch.nn.functional.conv2d(h, w, torch.tensor(np.asarray(p["bias"])), stride=2)
    h = h.permute(0, 3, 2, 1)  # [B, T, F, C]
    n = params[f"norm_{i}"]
    h = torch.nn.functional.layer_norm(h, h.shape[2:], torch.tensor(np.asarray(n["scale"])),
                                       torch.tensor(np.asarray(n["bias"])), eps=1e-5)
    x = torch.nn.functional.leaky_relu(h, 0.01)
  want = x.reshape(1, 10, -1).numpy()
  np.testing.assert_allclose(np.asarray(out), want, atol=1e-4)


def test_noam_schedule_is_speechbrains():
  f = optimizers.make_schedule(dict(name="noam", warmup_steps=25_000), 8e-4, 300_000)
  assert float(f(0)) == pytest.approx(8e-4)  # SpeechBrain's first update: the optimizer's lr.
  for t in (1, 100, 24_999, 25_000, 25_001, 100_000, 300_000):
    want = 8e-4 * 25_000 ** 0.5 * min(t ** -0.5, t * 25_000 ** -1.5)
    assert float(f(t)) == pytest.approx(want, rel=1e-5)
  assert float(f(25_000)) == pytest.approx(8e-4, rel=1e-5)  # The peak.
  with pytest.raises(ValueError, match="warmup_steps must be > 0"):
    optimizers.make_schedule(dict(name="noam", warmup_steps=0), 8e-4, 10)


def _closed_form_params():
  """BEST-RQ base by hand: d = 576, FFN m = 2048, 12 layers, 8192 codes, conv kernel 31."""
  d, m, k, v, layers = 576, 2048, 31, 8192, 12
  frontend = (9 * 1 * 128 + 128) + 2 * 40 * 128 + (9 * 128 * 32 + 32) + 2 * 20 * 32
  proj = 640 * d + d
  pos_conv = 128 * (d // 16) * d + 128 + d      # weight_v, weight_g (per tap), bias.
  ffn = 2 * d + (d * m + m) + (m * d + d)        # LayerNorm, fc1, fc2.
  attn = 2 * d + 4 * (d * d + d)                 # LayerNorm, q / k / v / out.
  conv = 2 * d + (d * 2 * d + 2 * d) + (k * d + d) + 2 * d + (d * d + d)
  layer = 2 * ffn + attn + conv + 2 * d          # + the layer's final LayerNorm.
  head = d * v + v
  return frontend + proj + pos_conv + layers * layer + 2 * d + head


def test_base_parameter_count_and_config():
  c = base.get_config()
  obj = objectives.build(c)
  shapes = jax.eval_shape(obj.init, jax.random.key(0), batching.dummy_batch())
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert n == _closed_form_params() == 92_709_536
  assert c.model.block == "conformer" and c.model.conformer.activation == "gelu"
  assert (c.optim.lr, c.optim.b2, c.optim.eps, c.optim.weight_decay) == (8e-4, 0.98, 1e-9, 0.01)
  assert c.schedule.name == "noam" and c.schedule.warmup_steps == 25_000
  # SpeechBrain's 8 GPUs x 2 accumulated 400 s batches: 16 mask blocks of one update, side by
  # side (strided microbatches would split each block).
  assert c.total_steps == 300_000 and c.optim.grad_accum_steps == 1
  assert c.data.dynamic_batch_sec == 400 * 8 * 2 and c.data.batch_groups == 16
  assert c.data.split == "train_clean_100+train_clean_360+train_other_500"
  with c.unlocked():
    c.model.frontend.name = "mel"
  with pytest.raises(ValueError, match="model.frontend.name='fbank_conv'"):
    objectives.build(c)
  small = base.get_config("runlocal")  # Builds (a dict variant once broke shrink_for_cpu).
  validate.validate(small, num_devices=1, num_processes=1)
  assert small.model.variant == "tiny" and small.model.block == "conformer"
