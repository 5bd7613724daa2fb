"""The train state: a flat pytree of global arrays that orbax saves and the train step donates.

Parameters are initialised directly into their shards: `jax.eval_shape` gives the boxed abstract
state, `partitioning.state_shardings` turns its logical names into NamedShardings, and one jitted
init with those `out_shardings` creates params and optimizer state on the mesh (so optax's `count`
is a global array, which a multi-process orbax save requires).
"""
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.training import partitioning


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator state.

  Attributes:
    step: int32 [], number of train steps taken (skipped non-finite steps included).
    params: the model parameters (unboxed), sharded by their logical axes.
    opt_state: the optax state; its `count`s advance only on applied updates.
    rng: uint32 [2], the run's base key; step t uses `fold_in(rng, t)`, so a resumed run draws
      the same dropout / masking noise as an uninterrupted one.
    nonfinite_count: int32 [], consecutive steps whose loss or gradient was not finite.
    num_skipped: int32 [], all skipped (non-finite) steps so far.
    objective_state: the objective's own pytree (`Objective.init_state`; {} for most), updated
      by `Objective.update_state` inside the step, sharded and checkpointed like params.
  """
  step: jax.Array
  params: dict
  opt_state: dict
  rng: jax.Array
  nonfinite_count: jax.Array
  num_skipped: jax.Array
  objective_state: dict = flax.struct.field(default_factory=dict)


def _zeros_batch(batch_spec):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch_spec)


def init(rng, *, objective, tx, batch_spec):
  """Builds a TrainState with *boxed* params (logical names kept) from a key.

  Args:
    rng: uint32 [2] key; split into the parameter-init key and the run's training key.
    objective: a `training.objective.Objective`.
    tx: the optax transformation.
    batch_spec: dict of ShapeDtypeStructs of one global batch (values are never read).

  Returns:
    A TrainState whose params, Adam moments and objective state are `nn.Partitioned` boxes.
  """
  init_rng, train_rng = jax.random.split(rng)
  params = objective.init(init_rng, _zeros_batch(batch_spec))
  # Init from the boxed tree, so the moments that mirror params carry the same logical names.
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=train_rng, nonfinite_count=jnp.zeros((), jnp.int32),
                    num_skipped=jnp.zeros((), jnp.int32),
                    objective_state=objective.init_state(params))


def abstract(objective, tx, batch_spec):
  """The boxed abstract TrainState (shapes, dtypes, logical names); allocates nothing."""
  spec = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), batch_spec)
  return jax.eval_shape(lambda k: init(k, objective=objective, tx=tx, batch_spec=spec),
                        jax.random.PRNGKey(0))


def with_shardings(abstract_state, shardings):
  """Unboxed ShapeDtypeStructs carrying their shardings: a restore / AOT-compile target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      nn.unbox(abstract_state), shardings)


def create(objective, tx, batch_spec, rng, mesh, rules=partitioning.LOGICAL_AXIS_RULES):
  """Initialises a sharded TrainState from scratch.

  Args:
    objective: a `training.objective.Objective`.
    tx: the optax transformation.
    batch_spec: dict of ShapeDtypeStructs of one global batch, e.g. audio float32 [B, S].
    rng: an int seed or a uint32 [2] key.
    mesh: the device mesh.
    rules: logical-to-mesh rules.

  Returns:
    (state, shardings): the unboxed TrainState laid out on `mesh`, and its NamedSharding tree.
  """
  key = np.asarray(jax.random.PRNGKey(rng) if isinstance(rng, int) else rng)
  shardings = partitioning.state_shardings(abstract(objective, tx, batch_spec), mesh, rules)
  spec = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), batch_spec)
  # The key enters as a constant: a host array argument would not be a global array on a pod.
  def init_fn():
    with partitioning.activation_rules(mesh, rules):
      return nn.unbox(init(jnp.asarray(key), objective=objective, tx=tx, batch_spec=spec))

  return jax.jit(init_fn, out_shardings=shardings)(), shardings
