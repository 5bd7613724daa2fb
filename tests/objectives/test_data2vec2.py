"""data2vec 2.0 (jaxssl/objectives/data2vec2.py, configs/data2vec2): the EMA teacher and its tau
schedule, the targets against NumPy, the student's blindness to masked frames, one teacher pass
shared by the clones, ALiBi and the base config's parameter count (the real sharded trainer and a
resume with the teacher state: test_sharded_equality.py)."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.data2vec2 import base
from configs.data2vec2 import demo
from jaxssl import objectives
from jaxssl.data import batching
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import layers
from jaxssl.objectives import data2vec2
from jaxssl.training import optimizers


@pytest.fixture(scope="module")
def tiny():
  c = demo.get_config("runlocal")
  obj = objectives.build(c)
  rs = np.random.default_rng(0)
  s = 8_000
  audio = rs.standard_normal((4, s)).astype(np.float32)
  valid = np.ones((4, s), bool)
  valid[3, 5_000:] = False  # One padded utterance.
  batch = dict(audio=jnp.asarray(audio * valid), valid=jnp.asarray(valid))
  params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
  return c, obj, params, batch


def test_ema_follows_the_closed_form_and_the_linear_tau_schedule(tiny):
  _, obj, _, _ = tiny
  # fairseq get_annealed_rate(0.999, 0.99999, n, 75k): linear in n, then constant.
  for n in (0, 1, 30_000, 75_000, 90_000):
    tau = 0.999 + (0.99999 - 0.999) * min(n / 75_000, 1.0)
    got = float(data2vec2.ema_decay_rate(n, 0.999, 0.99999, 75_000))
    assert got == pytest.approx(1 - tau, rel=1e-5, abs=1e-12)
  e = obj.config.objective.ema
  assert (e.decay, e.end_decay, e.anneal_end_step) == (0.99, 0.999, 400)
  rs = np.random.default_rng(0)
  tree = lambda: {"a": rs.standard_normal((3, 4)).astype(np.float32),
                  "b": {"c": rs.standard_normal(5).astype(np.float32)}}
  t0, p1, p2 = tree(), tree(), tree()
  s1 = obj.update_state({"teacher": t0}, {"encoder": p1, "decoder": tree()}, 99)
  s2 = obj.update_state(s1, {"encoder": p2}, 100)
  tau = lambda n: 0.99 + (0.999 - 0.99) * min(n / 400, 1.0)
  # The update after step s uses tau(s + 1) (fairseq's set_num_updates(num_updates + 1)).
  want = jax.tree.map(lambda a, b, c: tau(101) * (tau(100) * a + (1 - tau(100)) * b)
                      + (1 - tau(101)) * c, t0, p1, p2)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6),
               s2["teacher"], want)
  assert set(s2) == {"teacher"}


def _np_instance_norm(x, valid):
  x = x.astype(np.float64)
  out = np.empty_like(x)
  for b in range(x.shape[0]):
    v = x[b, valid[b]]
    out[b] = (x[b] - v.mean(0)) / np.sqrt(v.var(0) + 1e-5)
  return out


def test_targets_are_the_mean_of_the_top_k_instance_normed_ffn_outputs(tiny):
  c, obj, params, batch = tiny
  valid = obj.frame_valid(batch["valid"])
  feats = jax.jit(obj.local_features)(params, batch)
  targets = jax.jit(obj.teacher_targets)(params["encoder"], feats, valid)
  # The FFN outputs of every block (before their residual and LayerNorm), captured from Flax.
  _, inter = jax.jit(lambda p, f: obj.encoder().apply(
      {"params": p}, f, valid=valid, train=False,
      capture_intermediates=lambda m, _: isinstance(m, layers.FeedForward),
      mutable=["intermediates"]))(params["encoder"], feats)
  ffn = [np.asarray(inter["intermediates"][f"layer_{i:02d}"]["ffn"]["__call__"][0])
         for i in range(2)]
  k = c.objective.average_top_k_layers
  v = np.asarray(valid)
  assert not v[3].all() and v[0].all()
  want = np.mean([_np_instance_norm(y, v) for y in ffn[-k:]], axis=0)
  np.testing.assert_allclose(np.asarray(targets), want, atol=2e-4)
  # Not the block outputs (the hidden states after the LayerNorm).
  _, hidden = jax.jit(lambda p, f: obj.encoder(ffn_targets=False).apply(
      {"params": p}, f, valid=valid, train=False))(params["encoder"], feats)
  other = np.mean([_np_instance_norm(np.asarray(y), v) for y in hidden[-k:]], axis=0)
  assert np.abs(other - want).max() > 0.1
  # Top-1 of a 2-layer stack is only the last layer.
  one = data2vec2.make_targets([jnp.asarray(y) for y in ffn], valid, 1)
  np.testing.assert_allclose(np.asarray(one), _np_instance_norm(ffn[1], v), atol=2e-4)


def test_masks_have_a_static_count_and_the_student_keeps_only_unmasked_frames():
  valid = jnp.asarray(np.arange(100)[None] < np.array([[100], [100], [100], [60]]))
  t, k = 100, data2vec2.num_kept(100, 0.5, 5)
  assert k == 100 - 41  # floor(0.40951 * 100 + 0.5) masked.
  for seed in range(5):
    masked, keep = data2vec2.draw_mask(jax.random.key(seed), valid, prob=0.5, span=5)
    masked, keep, v = np.asarray(masked), np.asarray(keep), np.asarray(valid)
    assert keep.shape == (4, k) and masked.shape == (4, t)
    np.testing.assert_array_equal(masked.sum(-1), [41, 41, 41, 25])  # floor(0.41 L + 0.5).
    assert not (masked & ~v).any()
    for r in range(4):
      assert len(set(keep[r])) == k and not masked[r, keep[r]].any()
      unmasked = set(np.flatnonzero(v[r] & ~masked[r]))
      assert unmasked <= set(keep[r])  # Every unmasked frame is kept (then padding).
    assert not np.array_equal(masked[0], masked[1])


def test_the_student_never_sees_masked_frames(tiny):
  _, obj, params, batch = tiny
  valid = jnp.repeat(obj.frame_valid(batch["valid"]), 2, axis=0)
  feats = jax.random.normal(jax.random.key(3), valid.shape + (32,))
  masked, keep = data2vec2.draw_mask(jax.random.key(4), valid, prob=0.5, span=5)
  w = jax.random.normal(jax.random.key(5), feats.shape)

  def out(f):  # Training mode: dropout, LayerDrop and the decoder's noise all drawn.
    return obj.student_predictions(params, f, valid, masked, keep, jax.random.key(6),
                                   train=True)

  grad = np.asarray(jax.jit(jax.grad(lambda f: jnp.sum(out(f) * w)))(feats))
  m, v = np.asarray(masked), np.asarray(valid)
  assert m.sum() > 50
  assert np.abs(grad[m]).max() == 0.0  # Exactly: masked features reach no output.
  per_frame = np.abs(grad).sum(-1)
  assert (per_frame[v & ~m] > 0).all()  # Every unmasked valid frame does.
  # Same predictions whatever the masked frames hold.
  noisy = jnp.where(masked[..., None], 100.0 * jax.random.normal(jax.random.key(7),
                                                                 feats.shape), feats)
  fwd = jax.jit(out)
  np.testing.assert_array_equal(np.asarray(fwd(feats)), np.asarray(fwd(noisy)))
  # And the teacher's path gives the loss no gradient through the local features: the loss
  # gradient of the local encoder equals the one with the targets frozen beforehand (only the
  # local encoder's gradient is taken: a smaller program than every parameter's).
  local_grad = lambda: jax.jit(jax.grad(lambda le, p: obj.loss(
      dict(p, local_encoder=le), batch, jax.random.key(8), step=0, train=False)[0]))(
          params["local_encoder"], params)
  g_full = local_grad()
  targets = jax.jit(lambda p: obj.teacher_targets(p["encoder"], obj.local_features(p, batch),
                                                  obj.frame_valid(batch["valid"])))(params)
  orig = obj.teacher_targets
  try:
    object.__setattr__(obj, "teacher_targets", lambda *a: targets)
    g_frozen = local_grad()
  finally:
    object.__delattr__(obj, "teacher_targets")
  assert obj.teacher_targets.__func__ is orig.__func__
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               g_full, g_frozen)  # (Up to float noise: the frozen targets came from a 2nd jit.)


def test_clones_share_one_teacher_pass(tiny, monkeypatch):
  c, obj, params, batch = tiny
  calls = {"teacher": [], "student": []}
  teacher, student = (data2vec2.Data2Vec2Objective.teacher_targets,
                      data2vec2.Data2Vec2Objective.student_predictions)

  def count_teacher(self, p, feats, valid):
    calls["teacher"].append(feats.shape)
    out = teacher(self, p, feats, valid)
    calls["targets"] = out
    return out

  def count_student(self, p, feats, valid, masked, keep, rng, *, train):
    calls["student"].append((feats.shape, keep.shape))
    calls["masked"] = masked
    return student(self, p, feats, valid, masked, keep, rng, train=train)

  monkeypatch.setattr(data2vec2.Data2Vec2Objective, "teacher_targets", count_teacher)
  monkeypatch.setattr(data2vec2.Data2Vec2Objective, "student_predictions", count_student)
  state = obj.init_state(params)

  @jax.jit
  def run(p, s):  # The student's masks leave the trace as an output.
    loss, m = obj.loss(p, batch, jax.random.key(1), step=0, state=s)
    return loss, m, calls["masked"]

  loss, m, masked = run(params, state)
  b, t, cl = 4, 24, c.objective.clone_batch
  assert cl == 2
  assert calls["teacher"] == [(b, t, 32)]  # Once, on the B utterances.
  assert calls["student"] == [((b * cl, t, 32), (b * cl, data2vec2.num_kept(t, 0.5, 5)))]
  masked = np.asarray(masked)
  assert all(not np.array_equal(masked[2 * i], masked[2 * i + 1]) for i in range(b))
  assert np.isfinite(float(loss)) and float(m["target_var"]) > 0.3
  assert float(m["ema_decay"]) == pytest.approx(0.99 + 0.009 / 400, rel=1e-6)


def test_represent_does_not_depend_on_the_padded_length(tiny):
  """Probes and extraction pad: every layer's states on real frames equal the unpadded ones
  (the 5-layer positional encoder zeroes padding before each of its convs)."""
  _, obj, params, batch = tiny
  row = dict(audio=batch["audio"][3:, :5_000], valid=batch["valid"][3:, :5_000])
  _, short, v_short = jax.jit(obj.represent)(params, row)
  _, padded, _ = jax.jit(obj.represent)(params, {k: x[3:] for k, x in batch.items()})
  t = int(v_short.sum())
  for a, b in zip(short, padded):
    np.testing.assert_allclose(np.asarray(b)[0, :t], np.asarray(a)[0, :t], atol=2e-5)


def test_alibi_bias_and_slopes_are_fairseqs():
  # get_slopes(8) = 2^-1 ... 2^-8; 12 heads: the 8 of a power of two, then every other of 16.
  np.testing.assert_allclose(encoder_lib.alibi_slopes(8), [2.0 ** -i for i in range(1, 9)])
  s16 = [2.0 ** (-0.5 * i) for i in range(1, 17)]
  np.testing.assert_allclose(encoder_lib.alibi_slopes(12), [2.0 ** -i for i in range(1, 9)]
                             + s16[0::2][:4])
  pos = jnp.array([[0, 2, 7]])
  scale = jnp.array([1.0, -3.0])  # A negative learned scale is clamped to 0.
  bias = np.asarray(encoder_lib.alibi_bias(pos, [0.5, 0.25], scale))
  np.testing.assert_allclose(bias[0, 0], -0.5 * np.abs(np.subtract.outer([0, 2, 7], [0, 2, 7])))
  np.testing.assert_array_equal(bias[0, 1], 0.0)


def _closed_form_params():
  """data2vec 2.0 BASE by hand (base_audio_only_task.yaml): D = 768, 12 AltBlocks, FFN 3072."""
  d, c = 768, 512
  cnn = 10 * c + 4 * 3 * c * c + 2 * 2 * c * c + 7 * 2 * c   # No conv bias, LN after each conv.
  project = 2 * c + c * d + d                                # LayerNorm(512), Linear(512, 768).
  k = max(3, 95 // 5)                                        # 19.
  pos = 5 * (k * (d // 16) * d + d)                          # Conv1d with bias; LN no affine.
  context_ln = 2 * d
  alibi = 12                                                 # One learned scale per head.
  block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
  dec = (7 * (d // 16) * 384 + 384) + 3 * (7 * (384 // 16) * 384 + 384) + (384 * d + d)
  return cnn + project + pos + context_ln + alibi + 12 * block + dec


def test_base_parameter_count_and_config():
  c = base.get_config()
  shapes = jax.eval_shape(objectives.build(c).init, jax.random.key(0), batching.dummy_batch())
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert n == _closed_form_params() == 93_783_308
  o = c.objective
  assert (o.clone_batch, o.average_top_k_layers, o.loss_scale, o.mask_noise_std) == (8, 8, 0.0,
                                                                                      0.01)
  assert (o.ema.decay, o.ema.end_decay, o.ema.anneal_end_step) == (0.999, 0.99999, 75_000)
  assert dict(o.decoder) == dict(dim=384, kernel_size=7, groups=16, num_layers=4,
                                 input_dropout=0.1)
  assert (c.masking.prob, c.masking.span, c.masking.min_spans) == (0.5, 5, 1)
  assert (c.optim.lr, c.optim.b2, c.optim.eps, c.optim.weight_decay) == (7.5e-4, 0.98, 1e-6, 0.01)
  assert c.schedule.name == "cosine" and c.schedule.warmup_steps == 8_000
  assert c.total_steps == 400_000 and c.data.crop_samples == 320_000 and c.data.normalize
  assert c.model.layerdrop_rate == 0.05 and c.model.frontend.mode == "layer_norm"
  # fairseq's cosine: linear warmup from 0, then half a cosine to 0 at max_update.
  f = optimizers.make_schedule(c.schedule, 7.5e-4, 400_000)
  assert float(f(0)) == 0.0 and float(f(4_000)) == pytest.approx(3.75e-4)
  assert float(f(8_000)) == pytest.approx(7.5e-4)
  assert float(f(204_000)) == pytest.approx(3.75e-4, rel=1e-4)
  assert float(f(400_000)) == pytest.approx(0.0, abs=1e-10)
  with c.unlocked():
    c.objective.average_top_k_layers = 13
  with pytest.raises(ValueError, match="objective.average_top_k_layers=13"):
    objectives.build(c)
