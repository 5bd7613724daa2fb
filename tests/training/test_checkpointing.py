"""Orbax save/restore of the sharded state and data state; resume > init_from > scratch."""
import json

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections as mlc
import numpy as np
import pytest

from configs import common
from jaxssl.training import checkpointing
from jaxssl.training import partitioning
from jaxssl.training import train_state


def _state(mesh, params, step=0):
  shard = NamedSharding(mesh, P("fsdp"))
  repl = NamedSharding(mesh, P())

  def put(x):
    return jax.device_put(x, shard if x.ndim and x.shape[0] % 2 == 0 else repl)

  return train_state.TrainState(
      step=jax.device_put(jnp.int32(step), repl), params=jax.tree.map(put, params),
      opt_state={"count": jax.device_put(jnp.int32(7), repl)},
      rng=jax.device_put(jax.random.PRNGKey(1), repl),
      nonfinite_count=jax.device_put(jnp.int32(0), repl),
      num_skipped=jax.device_put(jnp.int32(2), repl))


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      state)


@pytest.fixture(name="mesh")
def fixture_mesh():
  return partitioning.make_mesh(common.mesh(2, 2, 2))


def test_save_restore_roundtrip_keeps_values_and_shardings(tmp_path, mesh):
  params = {"enc": {"w": jnp.arange(12.0).reshape(4, 3)}, "head": jnp.ones(3)}
  state = _state(mesh, params, step=4)
  ckpt = checkpointing.Checkpointer(tmp_path, common.ckpt(every_steps=2, keep=2))
  assert ckpt.save(4, state, {"step": 4, "grain": "x"})
  assert not ckpt.save(5, state, {"step": 5})  # Off the every_steps grid.
  ckpt.wait()
  restored, data = checkpointing.Checkpointer(tmp_path, common.ckpt()).restore(_abstract(state))
  assert data == {"step": 4, "grain": "x"}
  np.testing.assert_array_equal(restored.params["enc"]["w"], params["enc"]["w"])
  assert restored.params["enc"]["w"].sharding == state.params["enc"]["w"].sharding
  assert int(restored.num_skipped) == 2 and int(restored.opt_state["count"]) == 7


def test_relative_workdir_saves_and_restores(tmp_path, mesh, monkeypatch):
  # orbax refuses relative paths; `--workdir=workdir/demo` must still work (the README's command).
  monkeypatch.chdir(tmp_path)
  state = _state(mesh, {"w": jnp.arange(8.0)}, step=3)
  ckpt = checkpointing.Checkpointer("runs/rel", common.ckpt(every_steps=1))
  assert ckpt.save(3, state, {"step": 3})
  ckpt.wait()
  assert (tmp_path / "runs/rel/ckpt/3").is_dir()
  restored, data = checkpointing.Checkpointer("runs/rel", common.ckpt()).restore(_abstract(state))
  np.testing.assert_array_equal(restored.params["w"], np.arange(8.0))
  assert data == {"step": 3}


def test_resume_beats_init_from_beats_scratch(tmp_path, mesh):
  params = {"w": jnp.ones(4)}
  other = tmp_path / "pretrained"
  ckpt = checkpointing.Checkpointer(other, common.ckpt(every_steps=1))
  ckpt.save(3, _state(mesh, jax.tree.map(lambda x: 5 * x, params), step=3), {"step": 3})
  ckpt.wait()
  fresh = lambda: _state(mesh, params)  # pylint: disable=unnecessary-lambda-assignment
  run = checkpointing.Checkpointer(tmp_path / "run", common.ckpt(every_steps=1))
  state, data, origin = checkpointing.restore_or_init(
      run, common.ckpt(), _abstract(fresh()), fresh)
  assert origin == "scratch" and data is None and float(state.params["w"][0]) == 1.0
  state, data, origin = checkpointing.restore_or_init(
      run, common.ckpt(init_from=str(other)), _abstract(fresh()), fresh)
  assert origin == "init_from" and float(state.params["w"][0]) == 5.0 and int(state.step) == 0
  run.save(1, _state(mesh, jax.tree.map(lambda x: 9 * x, params), step=1), {"step": 1})
  run.wait()
  state, data, origin = checkpointing.restore_or_init(
      run, common.ckpt(init_from=str(other)), _abstract(fresh()), fresh)
  assert origin == "resume" and data == {"step": 1} and float(state.params["w"][0]) == 9.0


def test_init_from_takes_matching_params_only(tmp_path, mesh):
  saved = {"enc": {"w": jnp.full((4, 2), 3.0), "b": jnp.full(2, 3.0)},
           "head": jnp.full(6, 3.0)}
  ckpt = checkpointing.Checkpointer(tmp_path, common.ckpt(every_steps=1))
  ckpt.save(2, _state(mesh, saved, step=2), {})
  ckpt.wait()
  ours = _state(mesh, {"enc": {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)},
                       "head": jnp.zeros(4), "ctc": jnp.zeros(2)}).params
  for path in (tmp_path, tmp_path / "ckpt", tmp_path / "ckpt" / "2"):
    params, report = checkpointing.load_params(path, ours)
    assert sorted(report["taken"]) == ["enc/b", "enc/w"]
    assert report["missing"] == ["ctc"] and report["shape_mismatch"][0].startswith("head")
    np.testing.assert_array_equal(params["enc"]["w"], saved["enc"]["w"])
    np.testing.assert_array_equal(params["head"], np.zeros(4))
    assert params["enc"]["w"].sharding == ours["enc"]["w"].sharding


def test_init_from_missing_path_is_a_clear_error(tmp_path, mesh):
  with pytest.raises(FileNotFoundError, match="ckpt.init_from=.*nowhere.*does not exist"):
    checkpointing.load_params(tmp_path / "nowhere", {"w": jnp.ones(2)})
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
    checkpointing.load_params(tmp_path / "empty", {"w": jnp.ones(2)})


def test_save_config_writes_json(tmp_path):
  config = mlc.ConfigDict(dict(seed=3, optim=common.adamw(lr=1e-3)))
  checkpointing.save_config(config, tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["seed"] == 3 and saved["optim"]["lr"] == 1e-3
