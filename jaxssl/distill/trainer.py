"""The distillation loop (trainer="distill"): `training.trainer`'s loop with a frozen teacher.

Differences from the pretraining loop, in order:
  1. the teacher (`distill.teacher`, any jaxssl or converted checkpoint) is loaded into shards
     laid out by the student's logical-axis rules, optionally in bfloat16;
  2. the student (`objective.name = "distill"`) starts from a fresh init whose feature encoder,
     projection, positional conv and first layers are copied from the teacher
     (`distill.init_from_teacher`), unless the run resumes;
  3. the compiled step is `(state, teacher_params, batch) -> (state, metrics)`: it runs the
     teacher's forward (targets, no gradient) and then the generic `train_step.train_step`;
     `state` is donated, the teacher's params are not, so they are unchanged after training;
     with `distill.cache_dir` the targets come from a teacher-output cache (`distill.cache`)
     and the teacher is not run at all;
  4. with a `supernet` section (LightHuBERT), step t trains the subnet `menu[i(seed, t)]` on the
     shared weights, one compiled step per menu entry.
Checkpoints, metrics, preemption and the non-finite guard are the pretraining loop's.
"""
import logging
import os
import time

import flax.linen as nn
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxssl.data import pipeline
from jaxssl.distill import cache as cache_lib
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import supernet as supernet_lib
from jaxssl.distill import teacher as teacher_lib
from jaxssl.training import accounting
from jaxssl.training import checkpointing
from jaxssl.training import flops
from jaxssl.training import metrics as metrics_lib
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step
from jaxssl.training import trainer as base_trainer

NonFiniteError = base_trainer.NonFiniteError


def make_distill_step(mesh, state_sharding, teacher_sharding, batch_sharding, *, rules, teacher,
                      objective, online=True, **static):
  """The jitted distillation step; the state is donated, the teacher's params are not.

  Args:
    mesh: the device mesh.
    state_sharding, teacher_sharding, batch_sharding: NamedSharding trees of the student's
      TrainState, the teacher's params and the batch leaves.
    rules: logical-to-mesh rules.
    teacher: a `teacher.Teacher` (its forward is traced into the step when `online`).
    objective: has `loss(params, batch, rng, *, step, train)` and reads batch["targets"].
    online: run the teacher in the step; False: the batch already holds "targets".
    **static: tx, lr_schedule, grad_accum_steps (as `train_step.train_step`).

  Returns:
    A jitted `(state, teacher_params, batch) -> (state, metrics)`.
  """
  def step(state, teacher_params, batch):
    with partitioning.activation_rules(mesh, rules):
      if online:
        batch = dict(batch, targets=teacher.targets(teacher_params, batch))
      return train_step.train_step(state, batch, objective=objective, **static)

  return jax.jit(step, in_shardings=(state_sharding, teacher_sharding, batch_sharding),
                 out_shardings=(state_sharding, NamedSharding(mesh, P())), donate_argnums=(0,))


def check_teacher(config, teacher):
  """Raises ValueError when the student config does not fit the teacher."""
  d = config.distill
  if teacher.dim != d.target_dim:
    raise ValueError(f"distill.target_dim={d.target_dim} but the teacher {d.teacher!r} is "
                     f"{teacher.dim}-d.")
  if bool(teacher.config.data.get("normalize", False)) != bool(config.data.normalize):
    raise ValueError(f"data.normalize={config.data.normalize} but the teacher {d.teacher!r} was "
                     f"trained with data.normalize={teacher.config.data.get('normalize')}: the "
                     "teacher must see audio scaled as in its pretraining.")


def train_and_evaluate(config, workdir, *, source=None, teacher=None):
  """Distils `config.distill.teacher` into the student of `config` in `workdir` (resumable).

  Args:
    config: a distillation config (configs/distill/*.py): sections data, model, student,
      distill, objective, optim, schedule, mesh, ckpt [, supernet].
    workdir: run directory: ckpt/, metrics.jsonl, config.json (a probe upstream afterwards).
    source: optional data source for the loader (tests).
    teacher: a loaded `teacher.Teacher` on this config's mesh (default: load
      `distill.teacher`).

  Returns:
    The last logged metrics plus "step", "origin" (resume / init_from / scratch) and
    "num_compiled" (compiled steps: one per batch shape and subnet).
  """
  base_trainer._init_distributed(config)  # pylint: disable=protected-access
  workdir = os.fspath(workdir)
  checkpointing.save_config(config, workdir)
  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))
  d = config.distill

  # 1-2. Teacher, student, optimizer, data (online crops or the teacher-output cache).
  if teacher is None:
    teacher = teacher_lib.load_teacher(d.teacher, layers=d.target_layers, mesh=mesh,
                                       rules=rules, dtype=d.teacher_dtype)
  check_teacher(config, teacher)
  objective = objective_lib.DistillObjective(config)
  subnets = supernet_lib.menu(config) if config.get("supernet", {}).get("space", "") else ()
  tx, lr_schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  online = not d.get("cache_dir", "")
  if online:
    loader = pipeline.make_train_loader(
        config.data, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), source=source)
  else:
    loader = cache_lib.CachedLoader(d.cache_dir, config=config)
  batch_sharding = partitioning.batch_sharding(mesh)
  batch_spec = base_trainer._peek_batch_spec(loader, batch_sharding, mesh)  # pylint: disable=protected-access

  # 3. Shardings, then resume > init_from > scratch (+ the teacher's weights).
  boxed = train_state.abstract(objective, tx, batch_spec)
  state_sharding = partitioning.state_shardings(boxed, mesh, rules)
  abstract_state = train_state.with_shardings(boxed, state_sharding)
  ckpt = checkpointing.Checkpointer(workdir, config.ckpt)

  def init_fn():
    state, _ = train_state.create(objective, tx, batch_spec, config.seed, mesh, rules)
    if d.init_from_teacher:
      params, report = objective_lib.init_from_teacher(state.params,
                                                       teacher.params["speech_encoder"])
      logging.info("Student init from the teacher: took %d params, kept %s.",
                   len(report["taken"]), report["kept"])
      state = state.replace(params=jax.device_put(params, state_sharding.params))
    return state

  state, data_state, origin = checkpointing.restore_or_init(ckpt, config.ckpt, abstract_state,
                                                            init_fn)
  if data_state is not None:
    loader.set_state(data_state)
  step = int(jax.device_get(state.step))
  logging.info("Distillation from step %d (%s); student %s params (%s without heads), teacher "
               "%s.", step, origin, f"{objective_lib.num_params(boxed.params):,}",
               f"{objective_lib.num_params(boxed.params, heads=False):,}", d.teacher)

  # 4. One compiled step per (subnet, batch shape).
  writer = metrics_lib.MetricsWriter(workdir, total_steps=config.total_steps, start_step=step,
                                     enabled=jax.process_index() == 0,
                                     accounting=accounting.for_run(config, mesh))
  static = dict(tx=tx, lr_schedule=lr_schedule,
                grad_accum_steps=config.optim.get("grad_accum_steps", 1))
  teacher_params = teacher.params if online else {}
  teacher_sharding = teacher.shardings if online else {}
  step_fns, executables = {}, {}

  def executable_for(index, batch):
    if index not in step_fns:
      obj = objective if index < 0 else supernet_lib.SubnetObjective(config, subnets[index])
      step_fns[index] = make_distill_step(
          mesh, state_sharding, teacher_sharding, batch_sharding, rules=rules, teacher=teacher,
          objective=obj, online=online, **static)
    key = (index,) + tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))
    if key not in executables:
      start = time.perf_counter()
      traced = step_fns[index].trace(abstract_state, teacher_params, batch)
      executables[key] = traced.lower().compile()
      seconds = time.perf_counter() - start
      writer.flops_per_step = flops.program_flops(traced, executables[key],
                                                  num_devices=mesh.size)
      writer.exclude_time(seconds)
      logging.info("Compiled the distillation step (subnet %s) in %.1fs.",
                   subnets[index] if index >= 0 else "-", seconds)
    return executables[key]

  # 5. The pretraining loop, with this step and the subnet logged.
  def step_for(batch, step):
    index = supernet_lib.subnet_for_step(config, step, subnets) if subnets else -1
    compiled = executable_for(index, batch)
    return lambda state, batch: compiled(state, teacher_params, batch)

  def subnet_logged(step):
    return {"train/subnet_index": float(supernet_lib.subnet_for_step(config, step, subnets))}

  last, step, preempted = base_trainer.train_loop(
      config, workdir, state=state, step=step, loader=loader, batch_sharding=batch_sharding,
      step_for=step_for, ckpt=ckpt, writer=writer, source=source,
      log_extras=subnet_logged if subnets else None)
  return dict(last, step=step, origin=origin, num_compiled=len(executables), preempted=preempted)


def dry_run(config):
  """The student's size from abstract shapes (the teacher is not loaded; nothing is compiled).

  Returns:
    dict with num_params (with heads), num_params_without_heads, and for a supernet the size of
    its menu (compiled steps at most) and the parameters of each menu subnet without heads.
  """
  batch = {"audio": jax.ShapeDtypeStruct((1, 16_000), "float32"),
           "valid": jax.ShapeDtypeStruct((1, 16_000), "bool")}

  def count(subnet=None):
    obj = objective_lib.DistillObjective(config, subnet)
    params = nn.unbox(jax.eval_shape(obj.init, jax.random.PRNGKey(0), batch))
    return objective_lib.num_params(params), objective_lib.num_params(params, heads=False)

  total, without = count()
  out = dict(num_params=total, num_params_without_heads=without)
  if config.get("supernet", {}).get("space", ""):
    subnets = supernet_lib.menu(config)
    out["menu_size"] = len(subnets)
    out["subnet_params_without_heads"] = [count(s)[1] for s in subnets]
  return out
