"""The training engine: one setup and one loop for every job that trains something.

Pretraining, distillation, fine-tuning (CTC or utterance level, with or without PEFT) and probe
training all call `train`; each job brings an objective (`training.objective.Objective`), an
optimizer, a loader and callbacks, and gets the same run behaviour once:

  1. processes and mesh: `jax.distributed.initialize` (when config.distributed asks), the
     (data, fsdp, tensor) mesh and the logical-axis rules;
  2. the loader (this host's rows of every global batch), the objective's constants (e.g. a
     teacher's weights) and the batch contract, peeked from the first batch;
  3. abstract state -> shardings -> resume > init_from > scratch (checkpointing.py), exactly:
     model, optimizer, objective state, data iterator and callback state;
  4. the step, compiled ahead of time once per (objective variant, batch shape), so it cannot
     silently recompile; its FLOPs feed the throughput and cost readouts;
  5. the loop: global batch -> step (under `jax_transfer_guard("disallow")`); metrics reach the
     host every `log_every_steps` (metrics.jsonl, TensorBoard, the progress bar with its ETA);
     callbacks (evals, dev selection) run after the step; checkpoints every `ckpt.every_steps`,
     at the end and on SIGTERM (a preempted TPU VM); a run of non-finite steps stops it without
     saving, so the last checkpoint stays the last good one.

`dry_run(config, objective)` builds the same step from abstract shapes only and reports its cost.
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
from jaxssl import constants
from jaxssl.data import pipeline
from jaxssl.training import accounting
from jaxssl.training import checkpointing
from jaxssl.training import flops
from jaxssl.training import metrics as metrics_lib
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step


class NonFiniteError(RuntimeError):
  """Raised when `max_consecutive_nonfinite` steps in a row had a non-finite loss or gradient."""


class Callback:
  """Runs after every step, before that step's checkpoint; its state is checkpointed.

  Subclasses override `after_step` and, when they keep something a resume needs (the best dev
  score so far), `get_state` / `set_state` (JSON-serialisable values). `name` keys that state.
  """
  name = "callback"

  def after_step(self, step, state, writer):
    """`step`: steps taken; `state`: the TrainState after them; `writer`: the MetricsWriter."""

  def get_state(self):
    return None

  def set_state(self, state):
    del state


def train(config, workdir, *, objective, tx, lr_schedule, make_loader, callbacks=(),
          checkpoints=True, progress=True, devices=None):
  """Trains `objective` in `workdir`, resuming from its newest intact checkpoint if any.

  Args:
    config: the job's ConfigDict: total_steps, log_every_steps, seed, mesh, ckpt (every_steps,
      keep, init_from), optional optim.grad_accum_steps, max_consecutive_nonfinite,
      distributed, accounting, model.dtype.
    workdir: run directory: ckpt/, metrics.jsonl, TensorBoard events, config.json.
    objective: a `training.objective.Objective`.
    tx, lr_schedule: the optax transformation and its learning-rate schedule (logged).
    make_loader: `() -> loader`, called after the processes are initialised; the loader yields
      this host's rows of each global batch and has get_state / set_state / close.
    callbacks: `Callback`s, run in order after each step.
    checkpoints: False trains without saving or resuming (a probe inside pretraining evals).
    progress: show the progress bar.
    devices: the mesh's devices (default: all of `jax.devices()`).

  Returns:
    dict: the last logged metrics (host floats) plus "step", "preempted" (SIGTERM stopped the
    run after saving), "origin" (resume / init_from / scratch), "num_compiled" and "state" (the
    final TrainState).

  Raises:
    NonFiniteError: after `config.max_consecutive_nonfinite` skipped steps in a row.
    checkpointing.CheckpointError: the workdir's checkpoints are all damaged, or belong to
      another config.
  """
  # 1. Processes, mesh, sharding rules.
  init_distributed(config)
  workdir = os.fspath(workdir)
  checkpointing.save_config(config, workdir)
  mesh = partitioning.make_mesh(config.mesh, devices=devices)
  rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))

  # 2. Loader, constants, the batch contract.
  loader = make_loader()
  consts, consts_sharding = objective.constants(mesh, rules)
  batch_sharding = partitioning.batch_sharding(mesh)
  batch_spec = peek_batch_spec(loader, batch_sharding, mesh)

  # 3. Shardings from abstract shapes, then resume > init_from > scratch.
  boxed = train_state.abstract(objective, tx, batch_spec)
  state_sharding = partitioning.state_shardings(boxed, mesh, rules)
  abstract_state = train_state.with_shardings(boxed, state_sharding)

  def init_fn():
    state, _ = train_state.create(objective, tx, batch_spec, config.seed, mesh, rules)
    params = objective.initial_params(state.params, consts)
    return state.replace(params=jax.device_put(params, state_sharding.params))

  ckpt = checkpointing.Checkpointer(workdir, config.ckpt) if checkpoints else None
  if ckpt is None:
    state, data_state, origin = init_fn(), None, "scratch"
  else:
    state, data_state, origin = checkpointing.restore_or_init(ckpt, config.ckpt, abstract_state,
                                                              init_fn)
  if data_state is not None:
    loader.set_state(data_state)
    for callback in callbacks:
      callback.set_state(data_state.get("callbacks", {}).get(callback.name))
  step = int(jax.device_get(state.step))
  if progress:
    cli.say(f"{origin} at step {step} of {config.total_steps}; {num_params(boxed.params):,} "
            f"params; mesh {dict(mesh.shape)} over {jax.process_count()} process(es).")

  # 4. The step, compiled ahead of time once per (variant, batch shape).
  writer = metrics_lib.MetricsWriter(workdir, total_steps=config.total_steps, start_step=step,
                                     enabled=jax.process_index() == 0, progress=progress,
                                     accounting=accounting.for_run(config, mesh))
  steps = _CompiledSteps(objective, writer, mesh=mesh, rules=rules, abstract_state=abstract_state,
                         state_sharding=state_sharding, batch_sharding=batch_sharding,
                         consts=consts, consts_sharding=consts_sharding, tx=tx,
                         lr_schedule=lr_schedule,
                         grad_accum_steps=config.get("optim", {}).get("grad_accum_steps", 1))

  # 5. The loop.
  preemption = _Preemption(sync_every=config.log_every_steps)
  max_nonfinite = config.get("max_consecutive_nonfinite", 10)
  last, stop = {}, False
  try:
    while step < config.total_steps:
      local = next(loader)
      batch = partitioning.make_global_batch(local, batch_sharding)
      compiled = steps.for_step(step, batch)
      # Everything the step needs is already on device; a host transfer here is a bug.
      with jax.transfer_guard("disallow"):
        state, step_metrics = compiled(state, consts, batch)
      step += 1
      writer.step_done(_audio_seconds(local))
      final = step == config.total_steps
      nonfinite = None
      if step % config.log_every_steps == 0 or final:
        scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        last = writer.write(step, scalars | objective.log_extras(step - 1))
        nonfinite = int(scalars["train/nonfinite_count"])
        _check_nonfinite(nonfinite, step, max_nonfinite, ckpt)
      for callback in callbacks:
        callback.after_step(step, state, writer)
      stop = preemption.requested(step)
      if ckpt is not None and (step % config.ckpt.every_steps == 0 or final or stop):
        if nonfinite is None:  # Never save a state inside a diverged stretch.
          nonfinite = int(jax.device_get(step_metrics["train/nonfinite_count"]))
          _check_nonfinite(nonfinite, step, max_nonfinite, ckpt)
        ckpt.save(step, state, _data_state(loader, callbacks), force=True)
      if stop:
        logging.warning("SIGTERM: saved a checkpoint at step %d and stopped.", step)
        break
  finally:
    if ckpt is not None:
      ckpt.wait()  # Pending async saves finish, on success and on error alike.
      ckpt.close()
    writer.close()
    preemption.close()
    loader.close()
  return dict(last, step=step, preempted=stop, origin=origin, num_compiled=len(steps),
              state=state)


class _CompiledSteps:
  """The jitted step per objective variant, compiled once per (variant, batch shape)."""

  def __init__(self, objective, writer, *, mesh, rules, abstract_state, state_sharding,
               batch_sharding, consts, consts_sharding, **static):
    self.objective, self.writer, self.mesh = objective, writer, mesh
    self.abstract_state, self.consts = abstract_state, consts
    self._make = lambda obj: train_step.make_train_step(
        mesh, state_sharding, batch_sharding, rules=rules, constants_sharding=consts_sharding,
        objective=obj, **static)
    self._jitted, self._compiled, self._flops = {}, {}, {}

  def __len__(self):
    return len(self._compiled)

  def for_step(self, step, batch):
    variant = self.objective.variant(step)
    if variant not in self._jitted:
      self._jitted[variant] = self._make(self.objective.specialize(variant))
    key = (variant,) + tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))
    if key not in self._compiled:
      start = time.perf_counter()
      traced = self._jitted[variant].trace(self.abstract_state, self.consts, batch)
      self._compiled[key] = traced.lower().compile()
      seconds = time.perf_counter() - start
      self._flops[key] = flops.program_flops(traced, self._compiled[key],
                                             num_devices=self.mesh.size)
      self.writer.exclude_time(seconds)  # Throughput readouts leave compile time out.
      logging.info("Compiled the train step (variant %s) for batch %s in %.1fs (%.3g "
                   "FLOPs/step).", variant, {k: s for k, s, _ in key[1:]}, seconds,
                   self._flops[key])
    self.writer.flops_per_step = self._flops[key]  # This step's program: its FLOPs count.
    return self._compiled[key]


def _data_state(loader, callbacks):
  """The checkpoint's JSON item: the loader's state, plus each callback's under "callbacks"."""
  kept = {c.name: c.get_state() for c in callbacks}
  kept = {name: state for name, state in kept.items() if state is not None}
  return dict(loader.get_state(), **({"callbacks": kept} if kept else {}))


def init_distributed(config):
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


def peek_batch_spec(loader, sharding, mesh):
  """The global batch's ShapeDtypeStructs, from the next batch; the loader is rewound."""
  state = loader.get_state()
  local = next(loader)
  loader.set_state(state)
  spec = partitioning.abstract_batch(local, sharding)
  partitioning.check_batch_size(next(iter(spec.values())).shape[0], dict(mesh.shape))
  return spec


def _audio_seconds(local):
  """Real (unpadded) audio seconds in the global batch, from this host's rows (0 without)."""
  if "audio" not in local:
    return 0.0  # Probe batches hold features, not audio.
  return float(np.sum(local["valid"])) * jax.process_count() / constants.SAMPLE_RATE


def num_params(params):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def _check_nonfinite(count, step, limit, ckpt):
  if count < limit:
    return
  first = step - count + 1
  message = (f"Stopping at step {step}: the loss or gradients were non-finite for {count} "
             f"consecutive steps (steps {first}..{step}; max_consecutive_nonfinite={limit}). "
             "Those updates were skipped and this state is not saved; ")
  latest = ckpt.latest_step() if ckpt is not None else None
  resumed = ckpt.restored_step if ckpt is not None else None
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


def abstract_step(config, objective, *, tx, lr_schedule, devices=None):
  """The jitted train step and its abstract inputs, from shapes only (nothing is allocated).

  `dry_run` and `jaxssl.aot` compile exactly this; `train` builds the same pieces around a
  real loader.

  Args:
    config: the experiment config; the batch is `pipeline.nominal_batch_shape` (fixed crops:
      data.batch_size x data.crop_samples; dynamic batching: the longest crop's bucket).
    objective: the objective (its constants must be {}: the dry run loads no teacher).
    tx, lr_schedule: the optimizer and its schedule.
    devices: the mesh's devices (default all of `jax.devices()`); e.g. the devices of a TPU
      topology description, to compile for a pod from a CPU machine.

  Returns:
    dict with mesh, step_fn (jitted, state donated), abstract_state (ShapeDtypeStructs with
    their shardings), batch_spec (the loader's batch contract: audio/valid float32/bool [B, S],
    language/speaker int32 [B]), args (what `step_fn.trace(*args)` takes: the abstract state,
    no constants, the batch spec), batch_shape and boxed (the abstract state with logical
    axes).
  """
  mesh = partitioning.make_mesh(config.mesh, devices=devices)
  rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))
  batch_sharding = partitioning.batch_sharding(mesh)
  processes = len({d.process_index for d in devices}) if devices else jax.process_count()
  size, length = pipeline.nominal_batch_shape(config.data, processes)
  batch_spec = {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sharding) for k, s, d in (
      ("audio", (size, length), np.float32), ("valid", (size, length), np.bool_),
      ("language", (size,), np.int32), ("speaker", (size,), np.int32))}
  boxed = train_state.abstract(objective, tx, batch_spec)
  state_sharding = partitioning.state_shardings(boxed, mesh, rules)
  step_fn = train_step.make_train_step(
      mesh, state_sharding, batch_sharding, rules=rules, objective=objective, tx=tx,
      lr_schedule=lr_schedule, grad_accum_steps=config.optim.get("grad_accum_steps", 1))
  abstract_state = train_state.with_shardings(boxed, state_sharding)
  return dict(mesh=mesh, step_fn=step_fn, batch_spec=batch_spec, boxed=boxed,
              batch_shape=(size, length), abstract_state=abstract_state,
              args=(abstract_state, {}, batch_spec))


def dry_run(step):
  """Compiles the train step of `abstract_step(...)` from abstract shapes only; trains nothing.

  Returns:
    dict with num_params, flops_per_step (all devices), flops_per_step_per_device,
    compile_sec, state_bytes (all devices, unsharded total), temp_bytes_per_device
    (XLA's scratch estimate, -1 if unknown), mesh (axis sizes) and batch_shape.
  """
  mesh, boxed = step["mesh"], step["boxed"]
  start = time.perf_counter()
  traced = step["step_fn"].trace(*step["args"])
  compiled = traced.lower().compile()
  compile_sec = time.perf_counter() - start
  per_device = flops.program_flops(traced, compiled, num_devices=mesh.size) / mesh.size
  memory = compiled.memory_analysis()
  return dict(
      num_params=num_params(boxed.params),
      flops_per_step=per_device * mesh.size,
      flops_per_step_per_device=per_device,
      compile_sec=compile_sec,
      state_bytes=sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(boxed)),
      temp_bytes_per_device=getattr(memory, "temp_size_in_bytes", -1) if memory else -1,
      mesh=dict(mesh.shape),
      batch_shape=step["batch_shape"])
