"""The pure train step and its jitted, sharded, donating wrapper (MaxText / Flax lm1b style).

One call does: per-step rng from (state.rng, step) -> the objective's `prepare` (e.g. teacher
targets from the step's constants) -> loss and grads (optionally accumulated over microbatches with
`lax.scan`, static shapes) -> optax update -> the objective's `update_state` (e.g. an EMA of the
params) -> a non-finite loss or gradient norm keeps the old params, optimizer and objective state
(fairseq skips fp16-overflow steps the same way) and counts the skip. Nothing leaves the device: the
engine fetches metrics only when it logs them.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from jaxssl.training import partitioning


def _microbatches(batch, num):
  """[B, ...] -> [num, B/num, ...], microbatch i = rows i, i+num, ...

  Strided rather than contiguous rows: with the batch dim sharded over devices, every device then
  holds B/(num·devices) rows of *every* microbatch, so no microbatch sits on a subset of devices.
  """
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f"optim.grad_accum_steps={num} must divide the global batch size "
                       f"{x.shape[0]}.")
    return x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def loss_and_grads(params, batch, rng, *, objective, step, grad_accum_steps=1, state=None):
  """Mean loss, metrics and gradients over `grad_accum_steps` microbatches of `batch`.

  Args:
    params: unboxed parameters.
    batch: dict of global arrays [B, ...].
    rng: uint32 [2] key of this step.
    objective: a `training.objective.Objective`.
    step: int32 [] current step (schedules inside the objective, e.g. Gumbel temperature).
    grad_accum_steps: microbatches per step; 1 = the plain full-batch gradient.
    state: the objective's own state (read, not differentiated).

  Returns:
    (loss [], metrics dict of [], grads like params). With accumulation these are the means of
    the microbatch values (the mean of per-microbatch means, as fairseq's update_freq).
  """
  grad_fn = jax.value_and_grad(
      functools.partial(objective.loss, step=step, train=True, state=state), has_aux=True)
  if grad_accum_steps == 1:
    (loss, metrics), grads = grad_fn(params, batch, rng)
    return loss, metrics, grads

  def body(carry, inputs):
    index, micro = inputs
    micro = jax.tree.map(lambda x: nn.with_logical_constraint(x, ("act_batch",)), micro)
    (loss, metrics), grads = grad_fn(params, micro, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

  micro = _microbatches(batch, grad_accum_steps)
  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(lambda: grad_fn(params, first, rng))
  (loss_shape, metrics_shape), grads_shape = shapes
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       (loss_shape, metrics_shape, grads_shape))
  total, _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro))
  return jax.tree.map(lambda x: x / grad_accum_steps, total)


def train_step(state, batch, *, objective, tx, lr_schedule, grad_accum_steps=1, constants=None):
  """One optimizer step; skips the update when the loss or gradient is not finite.

  Args:
    state: a `train_state.TrainState` (donated by `make_train_step`).
    batch: dict of global arrays, e.g. audio float32 [B, S], valid bool [B, S].
    constants: the objective's frozen inputs (`Objective.constants`, e.g. teacher params).
    objective: the objective (bound statically).
    tx: the optax transformation.
    lr_schedule: `count -> lr`, for the logged learning rate.
    grad_accum_steps: microbatches per step (static).

  Returns:
    (new_state, metrics): metrics is a dict "train/<name>" -> float32 [], replicated.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  batch = objective.prepare(constants, batch)
  loss, metrics, grads = loss_and_grads(state.params, batch, rng, objective=objective,
                                        step=state.step, grad_accum_steps=grad_accum_steps,
                                        state=state.objective_state)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  objective_state = objective.update_state(state.objective_state, params, state.step)
  # jnp.where, not a cond: both branches are cheap elementwise work, and a skipped step must
  # leave params and Adam moments bitwise unchanged.
  def keep_if_bad(new, old):
    return jnp.where(finite, new, old)

  nonfinite = jnp.where(finite, 0, state.nonfinite_count + 1)
  num_skipped = state.num_skipped + (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=jax.tree.map(keep_if_bad, params, state.params),
      opt_state=jax.tree.map(keep_if_bad, opt_state, state.opt_state),
      objective_state=jax.tree.map(keep_if_bad, objective_state, state.objective_state),
      nonfinite_count=nonfinite, num_skipped=num_skipped)
  metrics = dict(metrics)
  metrics.update(
      loss=loss, grad_norm=grad_norm, param_norm=optax.tree.norm(new_state.params),
      # The schedule advances with optax's count, i.e. with applied (not skipped) updates.
      learning_rate=lr_schedule(state.step - state.num_skipped),
      nonfinite_count=nonfinite, skipped_steps=num_skipped)
  return new_state, {f"train/{k}": jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def make_train_step(mesh, state_sharding, batch_sharding, *,
                    rules=partitioning.LOGICAL_AXIS_RULES, constants_sharding=None, **static):
  """`train_step` jitted with explicit shardings and the state donated.

  Args:
    mesh: the device mesh.
    state_sharding: NamedSharding tree of the TrainState (`partitioning.state_shardings`).
    batch_sharding: NamedSharding of the batch leaves (`partitioning.batch_sharding`).
    rules: logical-to-mesh rules for the activation constraints inside the model.
    constants_sharding: NamedSharding tree of the objective's constants ({} without any).
    **static: objective, tx, lr_schedule, grad_accum_steps.

  Returns:
    A jitted `(state, constants, batch) -> (state, metrics)`; `state` is donated (its buffers
    are reused), `constants` is not.
  """
  constants_sharding = {} if constants_sharding is None else constants_sharding

  def step(state, constants, batch):
    with partitioning.activation_rules(mesh, rules):
      return train_step(state, batch, constants=constants, **static)

  return jax.jit(step, in_shardings=(state_sharding, constants_sharding, batch_sharding),
                 out_shardings=(state_sharding, NamedSharding(mesh, P())),
                 donate_argnums=(0,))
