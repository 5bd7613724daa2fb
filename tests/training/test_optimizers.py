"""Schedules against their closed forms; AdamW + clipping by hand; frozen params hold no state."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from configs.distill import distilhubert
from jaxssl.training import optimizers


def _values(schedule, steps):
  return np.array([float(schedule(t)) for t in steps])


def test_warmup_poly_matches_fairseq_polynomial_decay():
  s = optimizers.make_schedule(dict(name="warmup_poly", warmup_steps=10, power=2.0, end_lr=0.1),
                               lr=1.0, total_steps=110)
  expected = [0.0, 0.5, 1.0, 0.1 + 0.9 * 0.5**2, 0.1 + 0.9 * 0.9**2, 0.1, 0.1]
  np.testing.assert_allclose(_values(s, [0, 5, 10, 60, 20, 110, 500]), expected, rtol=1e-6)


def test_warmup_longer_than_the_run_stays_in_warmup():
  s = optimizers.make_schedule(dict(name="warmup_poly", warmup_steps=60), lr=1.0, total_steps=4)
  np.testing.assert_allclose(_values(s, [0, 3, 4]), [0.0, 0.05, 4 / 60], rtol=1e-6)


def test_tri_stage_phases_from_ratios_and_steps():
  s = optimizers.make_schedule(
      dict(name="tri_stage", phase_ratio=(0.1, 0.4, 0.5), init_lr_scale=0.01,
           final_lr_scale=0.05), lr=2.0, total_steps=100)
  expected = [0.02, 0.02 + (2.0 - 0.02) * 5 / 10, 2.0, 2.0, 2.0 * 20**-0.5, 0.1, 0.1]
  np.testing.assert_allclose(_values(s, [0, 5, 10, 49, 75, 100, 300]), expected, rtol=1e-5)
  by_steps = optimizers.make_schedule(
      dict(name="tri_stage", warmup_steps=10, hold_steps=40, decay_steps=50,
           init_lr_scale=0.01, final_lr_scale=0.05), lr=2.0, total_steps=100)
  np.testing.assert_allclose(_values(by_steps, range(0, 120, 7)),
                             _values(s, range(0, 120, 7)), rtol=1e-6)


def test_constant_with_warmup():
  s = optimizers.make_schedule(dict(name="constant", warmup_steps=4), lr=0.5, total_steps=10)
  np.testing.assert_allclose(_values(s, [0, 2, 4, 9]), [0.0, 0.25, 0.5, 0.5])


@pytest.mark.parametrize("cfg,match", [
    (dict(name="inverse_sqrt"), "choose from .*constant.*cosine.*tri_stage.*warmup_poly"),
    (dict(name="warmup_poly", warmup_step=3), "warmup_step"),
    (dict(name="warmup_poly", warmup_steps=-1), "warmup_steps must be >= 0"),
    (dict(name="tri_stage", phase_ratio=(0.5, 0.6, 0.1)), "phase_ratio"),
])
def test_bad_schedule_config_names_the_field(cfg, match):
  with pytest.raises(ValueError, match=match):
    optimizers.make_schedule(cfg, lr=1.0, total_steps=100)


def test_unknown_optimizer_lists_valid_names():
  optim = common.adamw(lr=1e-3)
  optim.name = "sgd"
  with pytest.raises(ValueError, match="adamw"):
    optimizers.make_optimizer(optim, dict(name="constant"), 10)


def test_adamw_step_with_clipping_matches_closed_form():
  # eps=1 makes Adam's first update g/(|g|+1) depend on the clipped magnitude.
  optim = common.adamw(lr=0.1, weight_decay=0.5, clip_norm=1.0, eps=1.0)
  tx, _ = optimizers.make_optimizer(optim, dict(name="constant"), total_steps=10)
  params = {"w": jnp.array([1.0, 2.0])}
  grads = {"w": jnp.array([3.0, 4.0])}  # Norm 5 -> clipped to [0.6, 0.8].
  updates, _ = tx.update(grads, tx.init(params), params)
  g = np.array([0.6, 0.8])
  expected = -0.1 * (g / (g + 1.0) + 0.5 * np.array([1.0, 2.0]))
  np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)


def test_frozen_params_get_no_update_and_no_moments():
  optim = common.adamw(lr=0.1)
  optim.trainable = "encoder/.*"
  tx, _ = optimizers.make_optimizer(optim, dict(name="constant"), total_steps=10)
  params = {"encoder": {"w": jnp.ones((3, 4))}, "head": {"w": jnp.ones((5, 6)),
                                                          "b": jnp.ones(6)}}
  state = tx.init(params)
  # Adam keeps mu and nu for the 12 trainable values only (plus scalar counts).
  sizes = [x.size for x in jax.tree.leaves(state)]
  assert sum(s for s in sizes if s > 1) == 2 * 12, sizes
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["head"]["w"], params["head"]["w"])
  assert float(jnp.max(jnp.abs(new["encoder"]["w"] - 1.0))) > 0.05


def test_trainable_regex_matching_nothing_is_an_error():
  optim = common.adamw(lr=0.1)
  optim.trainable = "decoder/.*"
  tx, _ = optimizers.make_optimizer(optim, dict(name="constant"), total_steps=10)
  with pytest.raises(ValueError, match="decoder.*matches no parameter"):
    tx.init({"encoder": {"w": jnp.ones(2)}})


def test_demo_config_builds():
  from configs.wav2vec2 import demo  # pylint: disable=g-import-not-at-top
  c = demo.get_config()
  _, schedule = optimizers.make_optimizer(c.optim, c.schedule, c.total_steps)
  assert math.isclose(float(schedule(c.schedule.warmup_steps)), c.optim.lr, rel_tol=1e-6)
  assert float(schedule(c.total_steps)) == pytest.approx(c.schedule.end_lr)


def test_distilhubert_decays_all_but_biases_at_s3prls_effective_rate():
  """s3prl's parameter groups: weight decay 0.01 on every weight whose name holds none of "bias",
  "LayerNorm.bias", "LayerNorm.weight" (its LayerNorms are named layer_norm, so their scales are
  decayed), 0 on the biases; the YAML's 1e-6 is overridden. With zero gradients Adam moves
  nothing, so one update is exactly -lr * wd * p on the decayed params and 0 elsewhere."""
  optim = distilhubert.get_config("runlocal").optim
  assert (optim.weight_decay, optim.no_decay) == (0.01, r".*/bias")
  params = {"encoder": {"layer_00": {"fc1": {"kernel": jnp.full((3, 4), 2.0),
                                             "bias": jnp.full((4,), 2.0)},
                                     "final_layer_norm": {"scale": jnp.full((4,), 2.0),
                                                          "bias": jnp.full((4,), 2.0)}}}}
  tx, _ = optimizers.make_optimizer(optim, {"name": "constant", "warmup_steps": 0}, 10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  layer = updates["encoder"]["layer_00"]
  decayed = -optim.lr * 0.01 * 2.0
  np.testing.assert_allclose(layer["fc1"]["kernel"], decayed, rtol=1e-6)
  np.testing.assert_allclose(layer["final_layer_norm"]["scale"], decayed, rtol=1e-6)
  np.testing.assert_array_equal(layer["fc1"]["bias"], 0.0)
  np.testing.assert_array_equal(layer["final_layer_norm"]["bias"], 0.0)
  # Without `no_decay` every parameter decays (and the state keeps its unmasked structure).
  plain = dict(optim, no_decay="")
  tx, _ = optimizers.make_optimizer(plain, {"name": "constant", "warmup_steps": 0}, 10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["encoder"]["layer_00"]["fc1"]["bias"], decayed, rtol=1e-6)


def test_lr_groups_scale_their_params_steps_as_a_torch_param_group_lr():
  """safari gives Hyena's positional embedding lr 1e-5 and its filter 1e-3: each group's AdamW
  step (decay included) equals the step of an optimizer whose lr is the group's, at every point
  of the schedule; other params take optim.lr."""
  rs = np.random.default_rng(0)
  params = {"filter_fn": {"pos_emb": jnp.asarray(rs.normal(size=(5, 3)), jnp.float32),
                          "dense": jnp.asarray(rs.normal(size=(3, 4)), jnp.float32)},
            "out_proj": jnp.asarray(rs.normal(size=(4, 2)), jnp.float32)}
  grads = jax.tree.map(lambda x: jnp.asarray(rs.normal(size=x.shape), jnp.float32), params)
  sched = {"name": "warmup_poly", "warmup_steps": 2, "power": 1.0, "end_lr": 0.0}
  base = dict(name="adamw", lr=2e-3, weight_decay=0.01, clip_norm=0.0,
              lr_groups=((r".*/pos_emb", 1e-5), (r"filter_fn/.*", 1e-3)))

  def steps(optim):
    tx, _ = optimizers.make_optimizer(optim, sched, 10)
    state, out = tx.init(params), []
    for _ in range(3):
      u, state = tx.update(grads, state, params)
      out.append(u)
    return out

  grouped = steps(base)
  for lr, pick in ((1e-5, lambda t: t["filter_fn"]["pos_emb"]),
                   (1e-3, lambda t: t["filter_fn"]["dense"]), (2e-3, lambda t: t["out_proj"])):
    plain = steps(dict(base, lr=lr, lr_groups=()))
    for a, b in zip(grouped, plain):
      np.testing.assert_allclose(pick(a), pick(b), rtol=1e-5, atol=1e-12)
  with pytest.raises(ValueError, match=r"\(regex, lr > 0\) pairs"):
    optimizers.make_optimizer(dict(base, lr_groups=((r".*", 0.0),)), sched, 10)
