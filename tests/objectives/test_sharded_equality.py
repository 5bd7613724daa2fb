"""BEST-RQ and data2vec 2.0 through the real trainer on the (data 2, fsdp 2, tensor 2) mesh of the
8 fake CPU devices: one sharded step equals the same step on one device.

Each test trains its `:runlocal` demo recipe for 2 steps on one device (a 1 x 1 x 1 mesh), saving
both steps; the step-1 checkpoint is then resumed on the (2, 2, 2) mesh, which takes step 2 from
the same state (params, Adam moments, objective state, data position, rng): both meshes take the
same step. Loss, updated params and objective state (BEST-RQ's frozen quantizer, data2vec 2.0's
EMA teacher, which the resume must carry over) agree to float32 rounding, the sharded program
summing in another order. Measured: losses to 4.5e-7 and gradient norms to 1.7e-7 relative;
params to 1.4e-7 (BEST-RQ) and 8.9e-8 (data2vec 2.0) absolute after steps of ~lr (2e-3, 1e-3),
but for BEST-RQ's attention key biases (up to 1.7e-5, see `_assert_same_step`); the teacher to
1.2e-7 (1 ulp of its ALiBi scales, ~1); the quantizer bitwise. (Exact same-mesh resumes of an
objective's state, through SIGTERM: tests/training/test_engine.py.)
"""
import os
import shutil

import jax
import numpy as np

from configs import common
from configs.best_rq import demo as best_rq_demo
from configs.data2vec2 import demo as data2vec2_demo
from jaxssl import objectives
from jaxssl import pretrain
from jaxssl.data import sources
from jaxssl.objectives import best_rq
from jaxssl.training import engine
from jaxssl.training import metrics as metrics_lib
from jaxssl.training import optimizers
from tests.training import standin

PARAM_ATOL = 1e-5  # ~x100 the differences measured, x100 below the steps (~lr).


def _config(demo):
  """The demo recipe at its `:runlocal` size: 2 steps of synthetic audio, a checkpoint a step."""
  c = demo.get_config("runlocal")
  with c.unlocked():
    c.total_steps, c.log_every_steps, c.data.name = 2, 1, "synthetic"
    c.ckpt = common.ckpt(every_steps=1, keep=3)
  return c


def _source():
  return sources.SyntheticSource(32, seed=0, min_samples=6_000, max_samples=12_000)


def _with_mesh(config, *sizes):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.mesh = common.mesh(*sizes)
  return config


def _two_steps_on_one_device(config, workdir):
  """Trains `config` for its 2 steps on a 1 x 1 x 1 mesh (the engine, as `pretrain` calls it)."""
  source = _source()
  config = pretrain.with_data_facts(_with_mesh(config, 1, 1, 1), source)
  objective = objectives.build(config)
  tx, schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  out = engine.train(config, workdir, objective=objective, tx=tx, lr_schedule=schedule,
                     make_loader=lambda: objective.make_loader(config, source=source),
                     progress=False, devices=jax.devices()[:1])
  assert out["origin"] == "scratch" and out["step"] == 2 and out["train/skipped_steps"] == 0
  leaf = jax.tree.leaves(out["state"].params)[0]
  assert {s.device for s in leaf.addressable_shards} == {jax.devices()[0]}


def _step_2_on_the_mesh(one_workdir, config, workdir):
  """Resumes the one-device run's step-1 checkpoint on the (2, 2, 2) mesh for step 2."""
  os.makedirs(os.path.join(workdir, "ckpt"))
  shutil.copytree(os.path.join(one_workdir, "ckpt", "1"), os.path.join(workdir, "ckpt", "1"))
  out = pretrain.train_and_evaluate(_with_mesh(config, 2, 2, 2), workdir, source=_source())
  assert out["origin"] == "resume" and out["step"] == 2 and out["train/skipped_steps"] == 0
  return out


def _max_diff(a, b):
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _is_key_bias(path):
  return jax.tree_util.keystr(path, simple=True, separator="/").endswith("key/dense/bias")


def _assert_same_step(one_workdir, sharded_workdir, lr):
  """Step 2 of both runs (metrics.jsonl, ckpt/2); returns their objective states after it."""
  rows = [metrics_lib.read_jsonl(os.path.join(w, "metrics.jsonl"))[-1]
          for w in (one_workdir, sharded_workdir)]
  assert rows[0]["step"] == rows[1]["step"] == 2
  for k in ("train/loss", "train/grad_norm", "train/masked_fraction"):
    np.testing.assert_allclose(rows[1][k], rows[0][k], rtol=5e-6, err_msg=k)
  before = standin.saved_item(one_workdir, 1, "params")
  single, sharded = (standin.saved_item(w, 2, "params") for w in (one_workdir, sharded_workdir))
  assert jax.tree.structure(sharded) == jax.tree.structure(single)
  assert _max_diff(sharded, before) > 0.5 * lr  # Adam moved the params by ~lr.

  def close(path, a, b):
    # A key bias adds q.b to every logit of a query: softmax cancels it, so its gradient is 0
    # up to rounding, and Adam scales that noise to steps of up to ~lr on either mesh.
    atol = 2 * lr if _is_key_bias(path) else PARAM_ATOL
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=jax.tree_util.keystr(path))

  jax.tree_util.tree_map_with_path(close, sharded, single)
  return tuple(standin.saved_item(w, 2, "objective_state") for w in (one_workdir,
                                                                      sharded_workdir))


def test_best_rq_sharded_trainer_step_equals_one_device(tmp_path):
  c = _config(best_rq_demo)
  one, sharded = str(tmp_path / "one"), str(tmp_path / "sharded")
  _two_steps_on_one_device(c, one)
  final = _step_2_on_the_mesh(one, c, sharded)
  assert abs(final["train/loss_masked"] - (np.log(8192) + 1 / 6)) < 0.5
  assert 0.3 < final["train/masked_fraction"] < 0.9
  single, saved = _assert_same_step(one, sharded, c.optim.lr)
  # The quantizer was saved with the state and no step changed it, on either mesh.
  want = best_rq.make_quantizer(c.objective.quantizer_seed)
  for k in ("projection", "codebook"):  # (Up to the last bit of the jitted normalisation.)
    np.testing.assert_array_equal(saved["quantizer"][k], single["quantizer"][k])
    np.testing.assert_allclose(saved["quantizer"][k], want[k], rtol=1e-6, atol=1e-7)


def test_data2vec2_sharded_step_and_teacher_equal_one_device_after_a_resume(tmp_path):
  c = _config(data2vec2_demo)
  with c.unlocked():
    c.schedule.warmup_steps = 0  # lr > 0 from step 1: then the teacher is not the student.
  one, sharded = str(tmp_path / "one"), str(tmp_path / "sharded")
  _two_steps_on_one_device(c, one)
  out = _step_2_on_the_mesh(one, c, sharded)
  assert np.isfinite(out["train/loss"]) and out["train/target_var"] > 0.3
  assert 0.3 < out["train/masked_fraction"] < 0.5
  single, saved = _assert_same_step(one, sharded, c.optim.lr)
  row = metrics_lib.read_jsonl(os.path.join(one, "metrics.jsonl"))[-1]
  np.testing.assert_allclose(out["train/target_var"], row["train/target_var"], rtol=5e-6)
  assert jax.tree.structure(saved["teacher"]) == jax.tree.structure(single["teacher"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               saved["teacher"], single["teacher"])
  # The teacher after step 2 (update_state at step 1, tau(2)) from the one saved at step 1.
  t1 = standin.saved_item(one, 1, "objective_state")["teacher"]
  p1 = standin.saved_item(one, 1, "params")["encoder"]
  p2 = standin.saved_item(sharded, 2, "params")["encoder"]
  tau = 0.99 + 0.009 * 2 / 400
  want = jax.tree.map(lambda e, p: tau * e + (1 - tau) * p, t1, p2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               saved["teacher"], want)
  assert _max_diff(saved["teacher"], t1) > 1e-6  # (1 - tau) x the student's step.
  # A resume that lost the teacher (rebuilt it from the student) would be off by ~tau |t1 - p1|.
  assert _max_diff(t1, p1) > 0.5 * c.optim.lr
