"""The device mesh, the logical-axis rules, and the shardings of the train state and batch.

Parameters carry logical axis names (`nn.with_logical_partitioning`); one table below maps them to
the mesh axes ("data", "fsdp", "tensor"), as in MaxText and Flax lm1b. Shardings are derived from
the abstract state (`jax.eval_shape`), never from real arrays, so a pod-sized model is placed
without first materialising it on one device.
"""
import contextlib
import math

import flax.linen as nn
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")
# The batch is split over both data-parallel axes; "tensor" holds replicas of each example.
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axes (None: replicated). The first matching rule wins (flax semantics).
LOGICAL_AXIS_RULES = (
    # Activations (nn.with_logical_constraint at block boundaries).
    ("act_batch", BATCH_AXES), ("act_time", None), ("act_embed", None),
    ("act_mlp", "tensor"), ("act_heads", "tensor"), ("act_kv", None), ("act_vocab", "tensor"),
    # Parameters. FSDP shards the model dimension; tensor parallelism the wide inner ones.
    ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv", None),
    ("conv_in", None), ("conv_out", "fsdp"), ("conv_kernel", None),
    ("vocab", "tensor"), ("codevectors", None), ("layers", None), ("norm", None),
)


def _as_axes(axes):
  """None, "fsdp" or ("data", "fsdp") -> None or a tuple of mesh axis names."""
  if axes is None:
    return None
  return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_axis_rules(overrides=()):
  """LOGICAL_AXIS_RULES with `overrides` ((name, mesh_axes) pairs, e.g. config.mesh.rules) first."""
  overrides = tuple((str(name), _as_axes(axes)) for name, axes in overrides)
  unknown = [axes for _, axes in overrides if axes and not set(axes) <= set(MESH_AXES)]
  if unknown:
    raise ValueError(f"mesh.rules map to unknown mesh axes {unknown}; valid: {MESH_AXES}.")
  names = {name for name, _ in overrides}
  return overrides + tuple(r for r in LOGICAL_AXIS_RULES if r[0] not in names)


def mesh_shape(mesh_cfg, num_devices):
  """The {data, fsdp, tensor} sizes of `mesh_cfg` on `num_devices`; one size may be -1 (all
  the devices the others leave). Raises ValueError naming the sizes when they do not fit."""
  sizes = [int(mesh_cfg[name]) for name in MESH_AXES]
  auto = [name for name, s in zip(MESH_AXES, sizes) if s == -1]
  bad = [f"mesh.{name}={s}" for name, s in zip(MESH_AXES, sizes) if s == 0 or s < -1]
  if bad or len(auto) > 1:
    raise ValueError(f"Bad mesh sizes {bad or [f'mesh.{a}=-1' for a in auto]}: each must be "
                     f"a positive int, and at most one may be -1.")
  fixed = math.prod(s for s in sizes if s != -1)
  if num_devices % fixed:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs a multiple of {fixed} devices, "
                     f"got {num_devices}.")
  sizes = [num_devices // fixed if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} uses {math.prod(sizes)} devices, "
                     f"but {num_devices} are available; set one axis to -1.")
  return dict(zip(MESH_AXES, sizes))


def batch_shards(sizes):
  """How many ways the batch dimension is split: mesh.data x mesh.fsdp."""
  return math.prod(sizes[a] for a in BATCH_AXES)


def check_batch_size(batch_size, sizes):
  """Raises ValueError unless the global batch divides over the data-parallel shards."""
  if batch_size % batch_shards(sizes):
    raise ValueError(f"The global batch of {batch_size} rows must be a multiple of mesh.data x "
                     f"mesh.fsdp = {batch_shards(sizes)} (the batch is split over both).")


def make_mesh(mesh_cfg, devices=None):
  """A (data, fsdp, tensor) mesh of the sizes `mesh_shape` resolves.

  Args:
    mesh_cfg: the `mesh` section, with integer fields data, fsdp, tensor.
    devices: devices to use (default: all of `jax.devices()`, across processes).

  Returns:
    A `jax.sharding.Mesh` with Auto axis types (GSPMD partitioning, as flax linen expects).
  """
  devices = jax.devices() if devices is None else list(devices)
  sizes = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _mesh_axes_of(names, rules, path):
  """The mesh axes of one parameter's logical names, or an error naming the parameter."""
  known = {name for name, _ in rules}
  missing = [n for n in names if n is not None and n not in known]
  if missing:
    raise ValueError(f"Parameter {path!r} uses logical axis name(s) {missing} that are not in "
                     f"the partitioning rules; add them to LOGICAL_AXIS_RULES or mesh.rules.")
  return nn.logical_to_mesh_axes(names, rules)


def _check_divisible(path, shape, spec, mesh):
  for dim, axes in zip(shape, spec):
    if axes is None:
      continue
    axes = (axes,) if isinstance(axes, str) else axes
    size = math.prod(mesh.shape[a] for a in axes)
    if dim % size:
      raise ValueError(f"Parameter {path!r} of shape {tuple(shape)}: dimension {dim} is sharded "
                       f"over mesh axes {axes} of total size {size} and does not divide; change "
                       f"the mesh or the rule for this logical name.")


def state_shardings(abstract_state, mesh, rules=LOGICAL_AXIS_RULES):
  """NamedShardings for every leaf of a (boxed) abstract state.

  Args:
    abstract_state: a pytree from `jax.eval_shape` whose parameter leaves (and the optimizer
      moments that mirror them) are `nn.Partitioned` boxes with logical names.
    mesh: the device mesh.
    rules: logical-to-mesh rules (`logical_axis_rules()`).

  Returns:
    A pytree with the structure of `nn.unbox(abstract_state)` whose leaves are NamedShardings;
    unboxed leaves (step counters, rng) are replicated.

  Raises:
    ValueError naming the parameter path when a logical name has no rule or a sharded dimension
    does not divide its mesh axes.
  """
  is_box = lambda x: isinstance(x, nn.Partitioned)  # pylint: disable=unnecessary-lambda-assignment

  def leaf_sharding(path, leaf):
    if not is_box(leaf):
      return NamedSharding(mesh, P())
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    spec = _mesh_axes_of(leaf.names, rules, name)
    value = leaf.unbox(apply_constraint=False)
    for sub_path, arr in jax.tree_util.tree_flatten_with_path(value)[0]:
      _check_divisible(name + jax.tree_util.keystr(sub_path), arr.shape, spec, mesh)
    # A box may hold a subtree (e.g. optax's MaskedNode for a frozen param): share one sharding.
    return jax.tree.map(lambda _: NamedSharding(mesh, spec), value)

  return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state, is_leaf=is_box)


@contextlib.contextmanager
def activation_rules(mesh, rules=LOGICAL_AXIS_RULES):
  """Context for tracing a jitted function: `nn.with_logical_constraint` resolves through `rules`
  on `mesh`. Allowed inside `jax.jit` (an abstract mesh), unlike `jax.set_mesh`."""
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
    yield


def batch_sharding(mesh):
  """The sharding of every batch leaf: leading (batch) dimension over ("data", "fsdp")."""
  return NamedSharding(mesh, P(BATCH_AXES))


def make_global_batch(local_batch, sharding):
  """Assembles host-local numpy batches [B/P, ...] into global jax arrays [B, ...].

  Args:
    local_batch: dict of numpy arrays, this process's contiguous rows of the global batch.
    sharding: `batch_sharding(mesh)`.

  Returns:
    dict of `jax.Array`s sharded by `sharding`, with global leading dim B = P * B/P.
  """
  def one(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)
  return jax.tree.map(one, local_batch)


def abstract_batch(local_batch, sharding):
  """ShapeDtypeStructs of the global batch `make_global_batch` would build (for AOT compiles)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((x.shape[0] * jax.process_count(),) + x.shape[1:], x.dtype,
                                     sharding=sharding), local_batch)
