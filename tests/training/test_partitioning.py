"""Mesh construction, logical-axis shardings and their errors, global batch assembly."""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from configs import common
from jaxssl.training import partitioning
from tests.training import standin


def test_make_mesh_fills_the_auto_axis():
  mesh = partitioning.make_mesh(common.mesh(data=-1, fsdp=2, tensor=1))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 3


@pytest.mark.parametrize("sizes,match", [
    ((3, 1, 1), "multiple of 3"),
    ((-1, -1, 1), "at most one may be -1"),
    ((2, 2, 1), "set one axis to -1"),
    ((0, 1, 1), "mesh.data=0"),
])
def test_make_mesh_errors(sizes, match):
  with pytest.raises(ValueError, match=match):
    partitioning.make_mesh(common.mesh(*sizes))


def _abstract_params(names, shape):
  init = nn.with_logical_partitioning(nn.initializers.zeros, names)
  return {"enc": jax.eval_shape(lambda: {"w": init(jax.random.PRNGKey(0), shape)})}


def test_state_shardings_follow_the_rules():
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  tree = {"params": _abstract_params(("embed", "mlp"), (4, 6)),
          "count": jax.ShapeDtypeStruct((), jnp.int32)}
  shardings = partitioning.state_shardings(tree, mesh)
  assert shardings["params"]["enc"]["w"].spec == P("fsdp", "tensor")
  assert shardings["count"].spec == P()
  overridden = partitioning.state_shardings(
      tree, mesh, partitioning.logical_axis_rules((("embed", None),)))
  assert overridden["params"]["enc"]["w"].spec == P(None, "tensor")


def test_unknown_logical_name_error_names_the_param():
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  with pytest.raises(ValueError, match=r"'params/enc/w'.*\['bogus'\]"):
    partitioning.state_shardings({"params": _abstract_params(("bogus", "mlp"), (4, 6))}, mesh)


def test_indivisible_dim_error_names_the_param():
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  with pytest.raises(ValueError, match=r"'params/enc/w' of shape \(3, 6\).*dimension 3"):
    partitioning.state_shardings({"params": _abstract_params(("embed", "mlp"), (3, 6))}, mesh)


def test_rules_override_to_unknown_mesh_axis_is_an_error():
  with pytest.raises(ValueError, match="unknown mesh axes"):
    partitioning.logical_axis_rules((("embed", "model"),))


def test_stand_in_params_get_logical_shardings():
  """Every logical name the stand-in (and the real models) use has a rule."""
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  batch = {"audio": jax.ShapeDtypeStruct((8, 64), jnp.float32),
           "valid": jax.ShapeDtypeStruct((8, 64), jnp.bool_)}
  params = jax.eval_shape(standin.StandInObjective().init, jax.random.PRNGKey(0), batch)
  shardings = partitioning.state_shardings(params, mesh)
  assert shardings["conv"]["kernel"].spec == P(None, None, "fsdp")
  assert shardings["fc2"]["kernel"].spec == P("tensor", "fsdp")


def test_make_global_batch_shards_the_leading_dim():
  mesh = partitioning.make_mesh(common.mesh(2, 2, 2))
  sharding = partitioning.batch_sharding(mesh)
  local = {"audio": np.arange(8 * 6, dtype=np.float32).reshape(8, 6),
           "speaker": np.arange(8, dtype=np.int32)}
  batch = partitioning.make_global_batch(local, sharding)
  assert batch["audio"].sharding == sharding
  # 4 batch shards (data x fsdp), each replicated over "tensor".
  assert {s.data.shape for s in batch["audio"].addressable_shards} == {(2, 6)}
  np.testing.assert_array_equal(np.asarray(batch["speaker"]), local["speaker"])
  spec = partitioning.abstract_batch(local, sharding)
  assert spec["audio"].shape == (8, 6) and spec["audio"].sharding == sharding
