"""The distillation loop: a frozen teacher in the step, the teacher cache, supernet runs."""
import os

import jax
import numpy as np

from jaxssl.distill import cache as cache_lib
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import supernet
from jaxssl.distill import teacher as teacher_lib
from jaxssl.distill import trainer
from jaxssl.evaluation import upstreams
from jaxssl.training import metrics as metrics_lib
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from tests.distill import tiny


def _copy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def test_teacher_gets_no_gradient_and_is_unchanged_by_training_steps(tmp_path):
  path = str(tmp_path / "teacher")
  tiny.write_teacher(path)
  config = tiny.student_config(path, layers=1)
  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_axis_rules(())
  teacher = teacher_lib.load_teacher(path, layers=(1, 2), mesh=mesh, rules=rules)
  before = _copy(teacher.params)
  objective = objective_lib.DistillObjective(config)
  tx, schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  sharding = partitioning.batch_sharding(mesh)
  batch = partitioning.make_global_batch({k: np.asarray(v) for k, v in tiny.batch(8).items()},
                                         sharding)
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  state, shardings = train_state.create(objective, tx, spec, 0, mesh, rules)
  step = trainer.make_distill_step(mesh, shardings, teacher.shardings, sharding, rules=rules,
                                   teacher=teacher, objective=objective, tx=tx,
                                   lr_schedule=schedule)
  student_before = _copy(state.params)
  for _ in range(2):
    state, metrics = step(state, teacher.params, batch)
  assert np.isfinite(metrics["train/loss"]) and metrics["train/skipped_steps"] == 0
  for a, b in zip(jax.tree.leaves(teacher.params), jax.tree.leaves(before)):
    assert not a.is_deleted()  # Not donated.
    np.testing.assert_array_equal(np.asarray(a), b)  # Bitwise unchanged.
  moved = [np.abs(np.asarray(a) - b).max() for a, b in zip(jax.tree.leaves(state.params),
                                                           jax.tree.leaves(student_before))]
  assert max(moved) > 0  # The student did train.

  # No gradient reaches the teacher's params through the loss.
  def loss_of_teacher(tp):
    b = dict(batch, targets=teacher.targets(tp, batch))
    return objective.loss(state.params, b, jax.random.PRNGKey(0), step=0, train=False)[0]

  grads = jax.jit(jax.grad(loss_of_teacher))(teacher.params)
  assert all(float(np.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_distill_run_cache_and_upstream(tmp_path):
  path = str(tmp_path / "teacher")
  t_config, t_params = tiny.write_teacher(path)
  config = tiny.student_config(path, layers=1)
  workdir = str(tmp_path / "student")
  final = trainer.train_and_evaluate(config, workdir, source=tiny.source())
  assert final["step"] == 4 and final["origin"] == "scratch" and final["num_compiled"] == 1
  assert np.isfinite(final["train/loss"]) and 0 < final["train/loss_l1"]
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert rows[-1]["step"] == 4 and "train/cos_1" in rows[-1]
  # The student is a probe upstream: its config.json and represent().
  up = upstreams.load(workdir)
  assert up.num_hidden == 2 and up.dim == 32 and up.frame_rate == 50.0
  hidden, valid = up(tiny.batch())
  assert hidden.shape == (2, 2, 24, 32) and valid.shape == (2, 24)

  # Teacher-output cache: exact (float32) targets of the run's own first batches.
  cache_dir = str(tmp_path / "cache")
  meta = cache_lib.build(config, cache_dir, num_batches=3, batches_per_shard=2, dtype="float32",
                         source=tiny.source())
  assert [s["num_batches"] for s in meta["shards"]] == [2, 1] and meta["bytes"] > 0
  loader = cache_lib.CachedLoader(cache_dir, config=config)
  first_epoch = [next(loader) for _ in range(3)]
  assert sorted(float(b["audio"].sum()) for b in first_epoch) == sorted(
      float(b["audio"].sum()) for b in [next(loader) for _ in range(3)])
  b = first_epoch[0]
  teacher = teacher_lib.from_params(t_config, t_params, layers=(1, 2),
                                    mesh=partitioning.make_mesh(config.mesh))
  want = jax.jit(teacher.targets)(teacher.params, {"audio": b["audio"], "valid": b["valid"]})
  np.testing.assert_allclose(b["targets"], want, rtol=1e-5, atol=1e-5)
  with config.unlocked():
    config.distill.cache_dir = cache_dir
  cached = trainer.train_and_evaluate(config, str(tmp_path / "cached"))
  assert cached["step"] == 4 and np.isfinite(cached["train/loss"])
  with config.unlocked():
    config.data.crop_samples = 9_600
  try:
    cache_lib.CachedLoader(cache_dir, config=config)
    raise AssertionError("a cache of other crops was accepted")
  except ValueError as e:
    assert "crop_samples" in str(e)


def test_supernet_run_trains_a_bounded_menu_and_extracts(tmp_path):
  path = str(tmp_path / "teacher")
  tiny.write_teacher(path)
  config = tiny.supernet_config(path, steps=6)
  workdir = str(tmp_path / "supernet")
  final = trainer.train_and_evaluate(config, workdir, source=tiny.source())
  menu = supernet.menu(config)
  assert final["step"] == 6 and np.isfinite(final["train/loss"])
  assert 1 <= final["num_compiled"] <= len(menu)
  assert final["num_compiled"] == len({supernet.subnet_for_step(config, s, menu)
                                       for s in range(6)})
  sub_config, _ = supernet.extract(workdir, menu[1], str(tmp_path / "small"))
  up = upstreams.load(str(tmp_path / "small"))
  assert up.num_hidden == menu[1].depth + 1 and up.dim == menu[1].embed_dim
  assert trainer.dry_run(sub_config)["num_params_without_heads"] < trainer.dry_run(
      config)["num_params_without_heads"]
