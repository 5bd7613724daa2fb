"""The pretraining loop: data -> one compiled sharded step -> metrics -> checkpoints.

Read it top to bottom; it is meant to be forked per project rather than grown with flags
(big_vision's train.py, Flax's lm1b). The flow:

  1. processes and mesh: `jax.distributed.initialize` (when config.distributed asks), the
     (data, fsdp, tensor) mesh and the logical-axis rules;
  2. objective, optimizer, data loader (this host's rows of every global batch);
  3. abstract state -> shardings -> resume > init_from > scratch (checkpointing.py);
  4. the step is compiled ahead of time once per batch shape (one shape for fixed crops), so it
     cannot silently recompile; its FLOPs feed the throughput readout;
  5. the loop: global batch -> step (under `jax_transfer_guard("disallow")`); metrics come to
     the host only every `log_every_steps`; checkpoints every `ckpt.every_steps`, at the end,
     and on SIGTERM (a preempted TPU VM); a run of non-finite steps stops it without saving.

`dry_run(config)` builds the same step from abstract shapes only and reports its size and cost.
"""
import logging
import math
import os
import signal
import threading
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from jaxssl import cli
from jaxssl import objectives
from jaxssl.data import pipeline
from jaxssl.evaluation import evaluate as evals_lib
from jaxssl.training import accounting
from jaxssl.training import checkpointing
from jaxssl.training import flops
from jaxssl.training import metrics as metrics_lib
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step


class NonFiniteError(RuntimeError):
  """Raised when `max_consecutive_nonfinite` steps in a row had a non-finite loss or gradient."""


def train_and_evaluate(config, workdir, *, objective=None, source=None):
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  Args:
    config: the experiment ConfigDict (sections: data, model, ..., optim, schedule, mesh, ckpt).
    workdir: run directory: ckpt/, metrics.jsonl, TensorBoard events, config.json.
    objective: default `jaxssl.objectives.build(config)`.
    source: optional data source for the loader (e.g. `sources.SyntheticSource`).

  Returns:
    The last logged metrics (host floats, "train/..." and "perf/...") plus "step" and
    "preempted" (True when SIGTERM stopped the run after saving a checkpoint).

  Raises:
    NonFiniteError: after `config.max_consecutive_nonfinite` skipped steps in a row; the bad
      state is not saved, so the last checkpoint stays the last good one.
    checkpointing.CheckpointError: the workdir's checkpoints are all damaged, or belong to
      another config.
  """
  # 1. Processes, mesh, sharding rules.
  _init_distributed(config)
  workdir = os.fspath(workdir)
  checkpointing.save_config(config, workdir)
  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))

  # 2. Objective, optimizer, data; the evals' data is checked now, not at the first eval.
  objective = objectives.build(config) if objective is None else objective
  tx, lr_schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  loader = pipeline.make_train_loader(
      config.data, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), source=source)
  evals_lib.check_pretraining_evals(config, source=source)
  batch_sharding = partitioning.batch_sharding(mesh)
  batch_spec = _peek_batch_spec(loader, batch_sharding, mesh)

  # 3. Shardings from abstract shapes, then resume > init_from > scratch.
  boxed = train_state.abstract(objective, tx, batch_spec)
  state_sharding = partitioning.state_shardings(boxed, mesh, rules)
  abstract_state = train_state.with_shardings(boxed, state_sharding)
  ckpt = checkpointing.Checkpointer(workdir, config.ckpt)
  state, data_state, origin = checkpointing.restore_or_init(
      ckpt, config.ckpt, abstract_state,
      lambda: train_state.create(objective, tx, batch_spec, config.seed, mesh, rules)[0])
  if data_state is not None:
    loader.set_state(data_state)
  step = int(jax.device_get(state.step))
  cli.say(f"{origin} at step {step} of {config.total_steps}; {_num_params(boxed.params):,} "
          f"params; mesh {dict(mesh.shape)} over {jax.process_count()} process(es).")

  # 4. The step, compiled ahead of time once per batch shape.
  # Cost readouts (MFU against a peak measured once per device kind, FLOPs, energy).
  writer = metrics_lib.MetricsWriter(workdir, total_steps=config.total_steps, start_step=step,
                                     enabled=jax.process_index() == 0,
                                     accounting=accounting.for_run(config, mesh))
  step_fn = train_step.make_train_step(
      mesh, state_sharding, batch_sharding, rules=rules, objective=objective, tx=tx,
      lr_schedule=lr_schedule, grad_accum_steps=config.optim.get("grad_accum_steps", 1))
  executables = {}

  def executable_for(batch):
    key = tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))
    if key not in executables:
      start = time.perf_counter()
      traced = step_fn.trace(abstract_state, batch)
      executables[key] = traced.lower().compile()
      seconds = time.perf_counter() - start
      writer.flops_per_step = flops.program_flops(traced, executables[key],
                                                  num_devices=mesh.size)
      writer.exclude_time(seconds)  # Throughput readouts leave compile time out.
      logging.info("Compiled the train step for batch %s in %.1fs (%.3g FLOPs/step).",
                   {k: s for k, s, _ in key}, seconds, writer.flops_per_step)
    return executables[key]

  # 5. The loop.
  def step_for(batch, step):
    del step  # One step for every position in the run.
    return executable_for(batch)

  last, step, preempted = train_loop(config, workdir, state=state, step=step, loader=loader,
                                     batch_sharding=batch_sharding, step_for=step_for, ckpt=ckpt,
                                     writer=writer, source=source)
  return dict(last, step=step, preempted=preempted)


def train_loop(config, workdir, *, state, step, loader, batch_sharding, step_for, ckpt, writer,
               source=None, log_extras=None):
  """Step 5 of the flow above, shared with the distillation loop (`distill/trainer.py`).

  Args:
    config: the experiment config (total_steps, log_every_steps, ckpt, evals,
      max_consecutive_nonfinite).
    workdir: the run directory (the pretraining evals write there).
    state: the TrainState to continue from, at step `step`.
    step: the number of steps already taken.
    loader: yields this host's rows of each global batch; `get_state` is checkpointed.
    batch_sharding: the NamedSharding of the batch leaves.
    step_for: `(global batch, step) -> compiled (state, batch) -> (state, metrics)`, the step
      that runs at position `step` (compiling it on first use).
    ckpt: the run's `checkpointing.Checkpointer`; closed on exit, pending saves waited for.
    writer: the run's `metrics.MetricsWriter`; closed on exit.
    source: optional data source, passed to the pretraining evals.
    log_extras: optional `step -> dict` of host scalars logged with the metrics of the step that
      ran at position `step`.

  Returns:
    (the last logged metrics, the number of steps taken, whether SIGTERM stopped the run).
  """
  preemption = _Preemption(sync_every=config.log_every_steps)
  max_nonfinite = config.get("max_consecutive_nonfinite", 10)
  last, stop = {}, False
  try:
    while step < config.total_steps:
      local = next(loader)
      batch = partitioning.make_global_batch(local, batch_sharding)
      compiled = step_for(batch, step)
      # Everything the step needs is already on device; a host transfer here is a bug.
      with jax.transfer_guard("disallow"):
        state, step_metrics = compiled(state, batch)
      step += 1
      writer.step_done(_audio_seconds(local))
      final = step == config.total_steps
      nonfinite = None
      if step % config.log_every_steps == 0 or final:
        scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        if log_extras is not None:
          scalars |= log_extras(step - 1)
        last = writer.write(step, scalars)
        nonfinite = int(scalars["train/nonfinite_count"])
        _check_nonfinite(nonfinite, step, max_nonfinite, ckpt)
      stop = preemption.requested(step)
      if step % config.ckpt.every_steps == 0 or final or stop:
        if nonfinite is None:  # Never save a state inside a diverged stretch.
          nonfinite = int(jax.device_get(step_metrics["train/nonfinite_count"]))
          _check_nonfinite(nonfinite, step, max_nonfinite, ckpt)
        ckpt.save(step, state, loader.get_state(), force=True)
      if evals_lib.evals_due(config, step):  # Probes on the live model: quality vs compute.
        evals_lib.run_pretraining_evals(config, state.params, step=step, workdir=workdir,
                                        writer=writer, source=source)
      if stop:
        logging.warning("SIGTERM: saved a checkpoint at step %d and stopped.", step)
        break
  finally:
    ckpt.wait()  # Pending async saves finish, on success and on error alike.
    ckpt.close()
    writer.close()
    preemption.close()
    loader.close()
  return last, step, stop


def _init_distributed(config):
  """`jax.distributed.initialize` from config.distributed (coordinator "" = single process).

  coordinator "auto" lets JAX detect the cluster (TPU pods, SLURM); "host:port" with
  num_processes and process_id sets it explicitly (e.g. several processes on one machine).
  """
  dist = config.get("distributed", None)
  if not dist or not dist.get("coordinator", "") or jax.distributed.is_initialized():
    return
  if dist.coordinator == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(dist.coordinator, num_processes=dist.num_processes,
                               process_id=dist.process_id)


def _peek_batch_spec(loader, sharding, mesh):
  """The global batch's ShapeDtypeStructs, from the next batch; the loader is rewound."""
  state = loader.get_state()
  local = next(loader)
  loader.set_state(state)
  spec = partitioning.abstract_batch(local, sharding)
  batch_size = spec["audio"].shape[0]
  shards = math.prod(mesh.shape[a] for a in partitioning.BATCH_AXES)
  if batch_size % shards:
    raise ValueError(f"data.batch_size={batch_size} must be a multiple of mesh.data * mesh.fsdp "
                     f"= {shards} (the batch is split over both).")
  return spec


def _audio_seconds(local):
  """Real (unpadded) audio seconds in the global batch, from this host's rows."""
  return float(np.sum(local["valid"])) * jax.process_count() / pipeline.SAMPLE_RATE


def _num_params(params):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def _check_nonfinite(count, step, limit, ckpt):
  if count < limit:
    return
  first = step - count + 1
  message = (f"Stopping at step {step}: the loss or gradients were non-finite for {count} "
             f"consecutive steps (steps {first}..{step}; max_consecutive_nonfinite={limit}). "
             "Those updates were skipped and this state is not saved; ")
  latest, resumed = ckpt.latest_step(), ckpt.restored_step
  if resumed is not None and latest == resumed:
    # Nothing saved since the resume: the resumed state itself may be what went wrong.
    older = [s for s in ckpt.steps() if s < resumed]
    message += (f"the run diverged {first - resumed} steps after resuming from step {resumed}, "
                "so that checkpoint may be bad: " + (
                    f"move ckpt/{resumed} aside to resume from step {older[0]}." if older
                    else "no earlier checkpoint is left; start a new workdir."))
  elif latest is None:
    message += "no checkpoint was saved; start again with a lower learning rate."
  else:
    message += f"the last checkpoint (step {latest}) holds the last good state."
  raise NonFiniteError(message)


class _Preemption:
  """SIGTERM sets a flag; the loop saves and stops at the next step boundary.

  With several processes each may see the signal at a different step, so they agree through
  an all-gather every `sync_every` steps (a host round trip, hence not every step).
  """

  def __init__(self, sync_every):
    self.sync_every = sync_every
    self.flag = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.flag.set())

  def requested(self, step):
    if jax.process_count() == 1:
      return self.flag.is_set()
    if step % self.sync_every:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.flag.is_set()))
    return bool(np.max(flags))

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def abstract_step(config, *, objective=None, devices=None):
  """The jitted train step and its abstract inputs, from shapes only (nothing is allocated).

  `dry_run` and `jaxssl.aot` compile exactly this; `train_and_evaluate` builds the same pieces
  around a real loader.

  Args:
    config: the experiment config; the batch is `pipeline.nominal_batch_shape` (fixed crops:
      data.batch_size x data.crop_samples; dynamic batching: the longest crop's bucket).
    objective: default `jaxssl.objectives.build(config)`.
    devices: the mesh's devices (default all of `jax.devices()`); e.g. the devices of a TPU
      topology description, to compile for a pod from a CPU machine.

  Returns:
    dict with mesh, step_fn (jitted, state donated), abstract_state (ShapeDtypeStructs with
    their shardings), batch_spec (the loader's batch contract: audio/valid float32/bool [B, S],
    language/speaker int32 [B]) and boxed (the abstract state with logical-axis boxes).
  """
  mesh = partitioning.make_mesh(config.mesh, devices=devices)
  rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))
  objective = objectives.build(config) if objective is None else objective
  tx, lr_schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  batch_sharding = partitioning.batch_sharding(mesh)
  processes = len({d.process_index for d in devices}) if devices else jax.process_count()
  size, length = pipeline.nominal_batch_shape(config.data, processes)
  # The loader's contract (pipeline.make_train_loader); shapes only.
  batch_spec = {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sharding) for k, s, d in (
      ("audio", (size, length), np.float32), ("valid", (size, length), np.bool_),
      ("language", (size,), np.int32), ("speaker", (size,), np.int32))}
  boxed = train_state.abstract(objective, tx, batch_spec)
  state_sharding = partitioning.state_shardings(boxed, mesh, rules)
  step_fn = train_step.make_train_step(
      mesh, state_sharding, batch_sharding, rules=rules, objective=objective, tx=tx,
      lr_schedule=lr_schedule, grad_accum_steps=config.optim.get("grad_accum_steps", 1))
  return dict(mesh=mesh, step_fn=step_fn, batch_spec=batch_spec, boxed=boxed,
              batch_shape=(size, length), abstract_state=train_state.with_shardings(boxed, state_sharding))


def dry_run(config, *, objective=None):
  """Builds and compiles the train step from abstract shapes only; trains nothing.

  Args:
    config: the experiment config (the batch: see `abstract_step`).
    objective: default `jaxssl.objectives.build(config)`.

  Returns:
    dict with num_params, flops_per_step (all devices), flops_per_step_per_device,
    compile_sec, state_bytes (all devices, unsharded total), temp_bytes_per_device
    (XLA's scratch estimate, -1 if unknown), mesh (axis sizes) and batch_shape.
  """
  step = abstract_step(config, objective=objective)
  mesh, boxed = step["mesh"], step["boxed"]
  start = time.perf_counter()
  traced = step["step_fn"].trace(step["abstract_state"], step["batch_spec"])
  compiled = traced.lower().compile()
  compile_sec = time.perf_counter() - start
  per_device = flops.program_flops(traced, compiled, num_devices=mesh.size) / mesh.size
  memory = compiled.memory_analysis()
  return dict(
      num_params=_num_params(boxed.params),
      flops_per_step=per_device * mesh.size,
      flops_per_step_per_device=per_device,
      compile_sec=compile_sec,
      state_bytes=sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(boxed)),
      temp_bytes_per_device=getattr(memory, "temp_size_in_bytes", -1) if memory else -1,
      mesh=dict(mesh.shape),
      batch_shape=step["batch_shape"])
