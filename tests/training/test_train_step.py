"""The sharded train step: mesh-independence, gradient accumulation, skipped non-finite steps."""
import functools

import jax
import ml_collections as mlc
import numpy as np

from configs import common
from jaxssl.training import flops
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step
from tests.training import standin


def _batch(batch_size=8, length=256, seed=0, all_valid=False):
  rng = np.random.default_rng(seed)
  audio = rng.standard_normal((batch_size, length)).astype(np.float32)
  lengths = np.full(batch_size, length) if all_valid else rng.integers(length // 2, length + 1,
                                                                       batch_size)
  valid = np.arange(length)[None, :] < lengths[:, None]
  return {"audio": audio * valid, "valid": valid,
          "language": np.zeros(batch_size, np.int32), "speaker": np.zeros(batch_size, np.int32)}


def _setup(mesh_sizes, objective, *, grad_accum_steps=1, devices=None, trainable=".*"):
  mesh = partitioning.make_mesh(common.mesh(*mesh_sizes), devices=devices)
  optim = common.adamw(lr=1e-2, clip_norm=1.0, trainable=trainable)
  tx, schedule = optimizers.make_optimizer(optim, mlc.ConfigDict(dict(name="constant")), 10)
  batch_sharding = partitioning.batch_sharding(mesh)
  local = _batch()
  spec = partitioning.abstract_batch(local, batch_sharding)
  state, shardings = train_state.create(objective, tx, spec, 0, mesh)
  step = train_step.make_train_step(mesh, shardings, batch_sharding, objective=objective, tx=tx,
                                    lr_schedule=schedule, grad_accum_steps=grad_accum_steps)
  return mesh, state, step, batch_sharding


def _grads(mesh, state, batch, objective, grad_accum_steps=1):
  fn = functools.partial(train_step.loss_and_grads, objective=objective, step=state.step,
                         grad_accum_steps=grad_accum_steps)
  with jax.set_mesh(mesh):
    return jax.device_get(jax.jit(fn)(state.params, batch, jax.random.PRNGKey(3)))


def test_sharded_step_matches_one_device():
  objective = standin.StandInObjective(dropout_rate=0.1)
  results = []
  for sizes, devices in (((1, 1, 1), jax.devices()[:1]), ((2, 2, 2), None)):
    mesh, state, step, batch_sharding = _setup(sizes, objective, devices=devices)
    batch = partitioning.make_global_batch(_batch(), batch_sharding)
    loss, _, grads = _grads(mesh, state, batch, objective)
    new_state, metrics = step(state, {}, batch)
    results.append((loss, grads, jax.device_get(new_state.params), jax.device_get(metrics)))
    if sizes == (2, 2, 2):  # The params really are split: fc1 kernel [16, 32] over fsdp x tensor.
      shard = new_state.params["fc1"]["kernel"].addressable_shards[0].data
      assert shard.shape == (8, 16)
  (loss1, grads1, params1, m1), (loss8, grads8, params8, m8) = results
  np.testing.assert_allclose(loss1, loss8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads1, grads8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               params1, params8)
  for k in m1:
    np.testing.assert_allclose(m1[k], m8[k], rtol=1e-5, err_msg=k)
  assert m1["train/loss"] > 0 and m1["train/learning_rate"] == np.float32(1e-2)


def test_grad_accumulation_matches_full_batch():
  # No dropout and all-valid rows: the mean of microbatch means is the full-batch mean.
  objective = standin.StandInObjective(dropout_rate=0.0)
  mesh, state, _, batch_sharding = _setup((2, 2, 2), objective)
  batch = partitioning.make_global_batch(_batch(all_valid=True), batch_sharding)
  loss1, m1, grads1 = _grads(mesh, state, batch, objective, grad_accum_steps=1)
  loss4, m4, grads4 = _grads(mesh, state, batch, objective, grad_accum_steps=4)
  np.testing.assert_allclose(loss1, loss4, rtol=1e-5)
  np.testing.assert_allclose(m1["valid_frac"], m4["valid_frac"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               grads1, grads4)


def test_nonfinite_step_is_skipped_bitwise():
  objective = standin.StandInObjective(nan_steps=(1, 2))
  _, state, step, batch_sharding = _setup((2, 2, 2), objective)

  def batch():
    return partitioning.make_global_batch(_batch(), batch_sharding)

  state, _ = step(state, {}, batch())  # Step 0: fine.
  before = jax.device_get((state.params, state.opt_state))
  state, m = step(state, {}, batch())  # Step 1: NaN loss.
  after = jax.device_get((state.params, state.opt_state))
  jax.tree.map(np.testing.assert_array_equal, before, after)
  assert (float(m["train/nonfinite_count"]), float(m["train/skipped_steps"])) == (1.0, 1.0)
  state, m = step(state, {}, batch())  # Step 2: NaN again.
  assert (float(m["train/nonfinite_count"]), float(m["train/skipped_steps"])) == (2.0, 2.0)
  state, m = step(state, {}, batch())  # Step 3: fine; the run of NaNs ends.
  assert (float(m["train/nonfinite_count"]), float(m["train/skipped_steps"])) == (0.0, 2.0)
  assert int(state.step) == 4
  changed = jax.tree.map(lambda a, b: np.any(a != b), before[0], jax.device_get(state.params))
  assert all(jax.tree.leaves(changed))


def test_compiled_step_has_an_xla_flops_estimate():
  objective = standin.StandInObjective()
  _, state, step, batch_sharding = _setup((-1, 1, 1), objective)
  spec = partitioning.abstract_batch(_batch(), batch_sharding)
  compiled = step.lower(state, {}, spec).compile()
  assert flops.xla_flops(compiled) > 1e4


def test_frozen_params_stay_fixed_and_hold_no_moments_on_the_mesh():
  objective = standin.StandInObjective()
  _, state, step, batch_sharding = _setup((2, 2, 2), objective, trainable="fc1/.*")
  # Adam moments exist for fc1 only (16*32 + 32 values, twice), sharded like fc1 itself.
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
  assert sum(x.size for x in moments) == 2 * (16 * 32 + 32)
  before = jax.device_get(state.params)
  state, _ = step(state, {}, partitioning.make_global_batch(_batch(), batch_sharding))
  after = jax.device_get(state.params)
  for name in ("conv", "fc2"):
    jax.tree.map(np.testing.assert_array_equal, before[name], after[name])
  assert np.any(before["fc1"]["kernel"] != after["fc1"]["kernel"])
