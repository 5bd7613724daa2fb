"""The engine's extension points, used as a fork would: an objective registered from outside the
package, with state of its own that is updated in the step, sharded and resumed exactly."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import common
from jaxssl import objectives
from jaxssl import pretrain
from jaxssl.training import checkpointing
from jaxssl.training import objective as objective_lib
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from tests.training import standin

# A fork's objective, defined and registered outside the package: the stand-in's loss plus an
# exponential moving average of its params (what data2vec's teacher or BYOL keeps).
@dataclasses.dataclass(frozen=True)
class EmaObjective(objective_lib.Objective):
  config: object
  decay: float = 0.75
  base = standin.StandInObjective(dropout_rate=0.0)

  def init(self, rng, batch):
    return self.base.init(rng, batch)

  def init_state(self, params):
    return {"ema": jax.tree.map(jnp.copy, params)}  # Boxed like params: same logical axes.

  def update_state(self, state, params, step):
    del step
    return {"ema": jax.tree.map(lambda e, p: self.decay * e + (1 - self.decay) * p,
                                state["ema"], params)}

  def loss(self, params, batch, rng, *, step, train=True, state=None):
    loss, metrics = self.base.loss(params, batch, rng, step=step, train=train)
    if state:  # Reads its own state in the loss (no gradient flows into it).
      gap = sum(jnp.sum(jnp.square(p - e)) for p, e in zip(
          jax.tree.leaves(params), jax.tree.leaves(state["ema"])))
      metrics = dict(metrics, ema_gap=gap)
    return loss, metrics


objectives.register("toy_ema", EmaObjective)


def _toy_config(total_steps=3):
  c = standin.config(total_steps=total_steps, mesh=(2, 2, 2))
  c.objective.name = "toy_ema"
  c.ckpt = common.ckpt(every_steps=1, keep=3)
  return c


def test_registered_objective_keeps_its_own_state_through_a_resume(tmp_path, monkeypatch):
  with pytest.raises(TypeError, match="must subclass"):
    objectives.register("not_an_objective", object)
  with pytest.raises(ValueError, match=r"objective.name='toy_em'.*Did you mean 'toy_ema'"):
    objectives.get("toy_em")
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  out = pretrain.train_and_evaluate(_toy_config(), straight, source=standin.source())
  assert out["step"] == 3 and out["train/ema_gap"] > 0
  standin.sigterm_after_logging(monkeypatch, at_step=2)
  assert pretrain.train_and_evaluate(_toy_config(), resumed, source=standin.source())["preempted"]
  monkeypatch.undo()
  again = pretrain.train_and_evaluate(_toy_config(), resumed, source=standin.source())
  assert again["origin"] == "resume" and again["step"] == 3
  for name in ("params", "objective_state"):
    jax.tree.map(np.testing.assert_array_equal, standin.saved_item(straight, 3, name),
                 standin.saved_item(resumed, 3, name))
  # The hook ran after the optimizer update, on the updated params: ema_3 = d ema_2 + (1-d) p_3.
  ema2 = standin.saved_item(straight, 2, "objective_state")["ema"]
  ema3 = standin.saved_item(straight, 3, "objective_state")
  want = jax.tree.map(lambda e, p: 0.75 * e + 0.25 * p, ema2,
                      standin.saved_item(straight, 3, "params"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ema3["ema"], want)
  # Sharded by the params' logical axes on the (2, 2, 2) mesh.
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  spec = {"audio": jax.ShapeDtypeStruct((8, 512), jnp.float32),
          "valid": jax.ShapeDtypeStruct((8, 512), jnp.bool_)}
  tx, _ = optimizers.make_optimizer(common.adamw(lr=1e-2),
                                    mlc.ConfigDict(dict(name="constant")), 10)
  boxed = train_state.abstract(EmaObjective(None), tx, spec)
  shardings = partitioning.state_shardings(boxed, mesh, partitioning.LOGICAL_AXIS_RULES)
  assert jax.tree.leaves(shardings.objective_state["ema"]) == jax.tree.leaves(shardings.params)
  assert shardings.params["fc1"]["kernel"].spec != jax.sharding.PartitionSpec()


def test_a_stateless_objective_writes_checkpoints_in_the_format_from_before_objective_state(
    tmp_path):
  """Runs saved before TrainState had `objective_state` resume: an empty one is not stored."""
  mesh = partitioning.make_mesh(common.mesh(), devices=jax.devices()[:1])
  tx, _ = optimizers.make_optimizer(common.adamw(lr=1e-2),
                                    mlc.ConfigDict(dict(name="constant")), 10)
  spec = {"audio": jax.ShapeDtypeStruct((8, 512), jnp.float32),
          "valid": jax.ShapeDtypeStruct((8, 512), jnp.bool_)}
  state, shardings = train_state.create(standin.StandInObjective(), tx, spec, 0, mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path), common.ckpt(every_steps=1, keep=2))
  ckpt.save(1, state, {"step": 1}, force=True)
  ckpt.wait()
  tree = ocp.PyTreeCheckpointer().metadata(
      os.path.join(tmp_path, "ckpt", "1", "state")).item_metadata.tree
  assert set(tree) == {"step", "params", "opt_state", "rng", "nonfinite_count", "num_skipped"}
  restored, data = ckpt.restore(train_state.with_shardings(
      train_state.abstract(standin.StandInObjective(), tx, spec), shardings))
  ckpt.close()
  assert restored.objective_state == {} and data == {"step": 1}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params),
               jax.device_get(state.params))
