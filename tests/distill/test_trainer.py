"""The distillation loop: a frozen teacher in the step, the teacher cache, supernet runs."""
import os
import shutil

import jax
import numpy as np
import pytest

from jaxssl import pretrained
from jaxssl.distill import cache as cache_lib
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import supernet
from jaxssl.distill import teacher as teacher_lib
from jaxssl import pretrain
from jaxssl.evaluation import upstreams
from jaxssl.training import metrics as metrics_lib
from jaxssl.training import partitioning
from tests.distill import tiny
from tests.training import faults


def _copy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def test_distill_run_frozen_teacher_cache_and_upstream(tmp_path):
  path = str(tmp_path / "teacher")
  t_config, t_params = tiny.write_teacher(path)
  config = tiny.student_config(path, layers=1, steps=3)
  mesh = partitioning.make_mesh(config.mesh)
  teacher = teacher_lib.load_teacher(path, layers=(1, 2), mesh=mesh)
  before = _copy(teacher.params)
  half = teacher_lib.load_teacher(path, layers=(1, 2), mesh=mesh, dtype="bfloat16")
  assert {x.dtype.name for x in jax.tree.leaves(half.params)} == {"bfloat16"}
  assert half.config.model.dtype == "bfloat16" and teacher.config.model.dtype == "float32"
  with pytest.raises(ValueError, match="target_layers"):
    teacher_lib.load_teacher(path, layers=(3,), mesh=mesh)  # The tiny teacher has 2 layers.
  workdir = str(tmp_path / "student")
  final = pretrain.train_and_evaluate(
      config, workdir, source=tiny.source(),
      objective=objective_lib.DistillObjective(config, teacher=teacher))
  assert final["step"] == 3 and final["origin"] == "scratch" and final["num_compiled"] == 1
  assert np.isfinite(final["train/loss"]) and 0 < final["train/loss_l1"]
  # The teacher ran in every step and is bitwise unchanged (its params are not donated, and the
  # student's copies of its layers are separate buffers).
  for a, b in zip(jax.tree.leaves(teacher.params), jax.tree.leaves(before)):
    assert not a.is_deleted()
    np.testing.assert_array_equal(np.asarray(a), b)
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert rows[-1]["step"] == 3 and "train/cos_1" in rows[-1]

  # The student is a probe upstream (its config.json and represent()); its only layer started
  # as the teacher's first and has trained since.
  up = upstreams.load(workdir)
  assert up.num_hidden == 2 and up.dim == 32 and up.frame_rate == 50.0
  b = tiny.batch()
  hidden, valid = up(b)
  assert hidden.shape == (2, 2, 24, 32) and valid.shape == (2, 24)

  # Teacher-output cache: exact (float32) targets of the run's own first batches.
  cache_dir = str(tmp_path / "cache")
  meta = cache_lib.build(config, cache_dir, num_batches=3, batches_per_shard=2, dtype="float32",
                         source=tiny.source())
  assert [s["num_batches"] for s in meta["shards"]] == [2, 1] and meta["bytes"] > 0
  loader = cache_lib.CachedLoader(cache_dir, config=config)
  first_epoch = [next(loader) for _ in range(3)]
  assert sorted(float(x["audio"].sum()) for x in first_epoch) == sorted(
      float(x["audio"].sum()) for x in [next(loader) for _ in range(3)])
  x = {k: jax.numpy.asarray(first_epoch[0][k]) for k in ("audio", "valid")}

  # No gradient reaches the teacher through the loss; the cached targets are the teacher's.
  student = pretrained.load_checkpoint(workdir)[1]
  objective = objective_lib.DistillObjective(config)

  @jax.jit
  def teacher_grads_and_targets(tp):
    def loss(tp):
      batch = dict(b, targets=teacher.targets(tp, b))
      return objective.loss(student, batch, jax.random.PRNGKey(0), step=0, train=False)[0]
    return jax.grad(loss)(tp), teacher.targets(tp, x)

  grads, want = teacher_grads_and_targets(teacher.params)
  assert all(float(np.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  np.testing.assert_allclose(first_epoch[0]["targets"], want, rtol=1e-5, atol=1e-5)
  with config.unlocked():
    config.distill.cache_dir = cache_dir
    config.total_steps = 2
  cached = pretrain.train_and_evaluate(
      config, str(tmp_path / "cached"),
      objective=objective_lib.DistillObjective(config, teacher=teacher))
  assert cached["step"] == 2 and np.isfinite(cached["train/loss"])
  with config.unlocked():
    config.data.crop_samples = 9_600
  with pytest.raises(ValueError, match="crop_samples"):
    cache_lib.CachedLoader(cache_dir, config=config)


def test_lighthubert_two_stages_run_in_one_compiled_step_each_and_extract(tmp_path):
  """Stage 1 copies the whole teacher and trains the full supernet; stage 2 starts from it and
  trains a fresh subnet every step with one compiled program; any subnet extracts."""
  path = str(tmp_path / "teacher")
  tiny.write_teacher(path)
  stage1 = str(tmp_path / "stage1")
  c1 = tiny.supernet_config(path, stage=1, steps=2)
  first = pretrain.train_and_evaluate(c1, stage1, source=tiny.source())
  assert first["step"] == 2 and np.isfinite(first["train/loss"])
  assert first["train/subnet_embed_dim"] == 32.0 and first["num_compiled"] == 1
  c2 = tiny.supernet_config(path, stage=2, stage1=stage1, steps=4)
  workdir = str(tmp_path / "supernet")
  final = pretrain.train_and_evaluate(c2, workdir, source=tiny.source())
  assert final["step"] == 4 and np.isfinite(final["train/loss"]) and final["num_compiled"] == 1
  space = supernet.get_space("tiny")
  _, sub_params = supernet.extract(workdir, space.smallest, str(tmp_path / "small"))
  up = upstreams.load(str(tmp_path / "small"))
  assert up.num_hidden == space.smallest.depth + 1 and up.dim == space.smallest.embed_dim
  _, sup_params = pretrained.load_checkpoint(workdir)
  assert objective_lib.num_params(sub_params) < objective_lib.num_params(sup_params)


def test_damaged_distillation_checkpoint_falls_back_and_resumes_exactly(tmp_path):
  """The fault-injection matrix's worst case (silent byte rot) on a distillation workdir: the
  damaged newest checkpoint is set aside and steps 3-4 repeat an undamaged resume from 2."""
  path = str(tmp_path / "teacher")
  tiny.write_teacher(path)
  config = tiny.student_config(path, layers=1, steps=4)
  config.ckpt.every_steps = 2
  straight = str(tmp_path / "straight")
  pretrain.train_and_evaluate(config, straight, source=tiny.source())  # Checkpoints 2 and 4.
  damaged = str(tmp_path / "damaged")
  shutil.copytree(straight, damaged)
  faults.flip_bytes(os.path.join(damaged, "ckpt", "4"), np.random.default_rng(0))
  shutil.rmtree(os.path.join(straight, "ckpt", "4"))  # The undamaged resume from 2.
  runs = [pretrain.train_and_evaluate(config, w, source=tiny.source()) for w in (straight, damaged)]
  assert [r["origin"] for r in runs] == ["resume", "resume"]
  assert "damaged-4" in os.listdir(os.path.join(damaged, "ckpt"))
  rows = [metrics_lib.read_jsonl(os.path.join(w, "metrics.jsonl"))[-1] for w in (straight, damaged)]
  assert rows[0]["step"] == rows[1]["step"] == 4
  for a, b in [rows]:
    np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-6)
