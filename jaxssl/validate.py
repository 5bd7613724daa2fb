"""Config validation: reject inconsistent values with a clear message before anything compiles.

Mistyped field names are caught earlier, by the locked ConfigDict (see main.py); this module checks
that the values agree with each other and with the machine (device count, paths). Every entry
point runs it (`pretrain.train_and_evaluate`, `pretrain.dry_run`, `jaxssl.aot`); an objective
checks its own section when it is built (e.g. `Wav2Vec2Objective`).
"""
import math
import os

import jax

from jaxssl import masking
from jaxssl.data import batching
from jaxssl.models import frontends
from jaxssl.models import variants
from jaxssl.training import partitioning


class ConfigError(ValueError):
  """A config value is inconsistent; the message names the field(s)."""


def _check(cond, msg):
  if not cond:
    raise ConfigError(msg)


def mesh_shape(mesh_cfg, num_devices=None):
  """The (data, fsdp, tensor) sizes (`partitioning.mesh_shape`), as a ConfigError."""
  try:
    return partitioning.mesh_shape(mesh_cfg, jax.device_count() if num_devices is None
                                   else num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def validate(config, num_devices=None, num_processes=None):
  """Raises ConfigError naming the offending field(s) when the config is inconsistent."""
  c = config
  _check(c.total_steps > 0, f"total_steps={c.total_steps} must be positive.")
  d = c.data
  # Objectives without the speech encoder (a fork's) have no model section.
  frames = frontends.frames_for(c.model.frontend, d.crop_samples) if "model" in c else None
  if frames is not None:  # The frontend says how many samples make a frame (the CNN: 400).
    _check(frames >= 1, f"data.crop_samples={d.crop_samples} is shorter than the model's "
           f"receptive field: model.frontend.name={c.model.frontend.name!r} gives no frame "
           f"(the CNN needs {variants.RECEPTIVE_FIELD} samples, 25 ms at 16 kHz).")
  _check(d.batch_size >= 1, f"data.batch_size={d.batch_size} must be positive.")
  sizes = mesh_shape(c.mesh, num_devices)
  batch_shards = partitioning.batch_shards(sizes)
  procs = jax.process_count() if num_processes is None else num_processes
  accum = c.optim.get("grad_accum_steps", 1)
  if d.get("dynamic_batch_sec", 0) > 0:
    unit = batching.batch_unit(math.lcm(d.dynamic_batch_multiple, procs), d.get("batch_groups", 1))
    _check(accum >= 1 and unit % (batch_shards * accum) == 0,
           f"data.dynamic_batch_multiple={d.dynamic_batch_multiple}: dynamic batch sizes are "
           f"multiples of {unit} (with data.batch_groups and {procs} processes), which must "
           f"split into optim.grad_accum_steps={accum} microbatches that each divide over "
           f"mesh.data x mesh.fsdp = {batch_shards} shards; set data.dynamic_batch_multiple="
           f"{batch_shards * accum}.")
  else:
    try:
      partitioning.check_batch_size(d.batch_size, sizes)
    except ValueError as e:
      raise ConfigError(f"data.batch_size={d.batch_size}: {e}") from None
    _check(d.batch_size % procs == 0,
           f"data.batch_size={d.batch_size} is not divisible by the {procs} processes.")
    _check(accum >= 1 and d.batch_size % (batch_shards * accum) == 0,
           f"data.batch_size={d.batch_size} must split into optim.grad_accum_steps={accum} "
           f"microbatches that each divide over {batch_shards} data-parallel shards.")
    groups = d.get("batch_groups", 1)
    _check(groups >= 1 and d.batch_size % groups == 0,
           f"data.batch_size={d.batch_size} does not split into data.batch_groups={groups}.")

  if "model" in c:
    v = variants.get(c.model.variant)
    _check(v.embed_dim % v.num_heads == 0, f"model.variant={c.model.variant!r}: embed_dim "
           f"{v.embed_dim} % heads {v.num_heads} != 0.")
  if "quantizer" in c:
    dim = c.model.final_dim or variants.get(c.model.variant).final_dim
    _check(dim % c.quantizer.num_groups == 0,
           f"quantizer.num_groups={c.quantizer.num_groups} does not divide the final dim {dim}.")
  if "masking" in c:
    m = c.masking
    _check(0.0 <= m.prob <= 1.0, f"masking.prob={m.prob} must be in [0, 1].")
    _check(m.span >= 1, f"masking.span={m.span} must be at least 1.")
  if "masking" in c and frames is not None:
    m = c.masking
    _check(frames > m.span * m.min_spans,
           f"data.crop_samples={d.crop_samples} gives {frames} frames, too few for "
           f"masking.min_spans={m.min_spans} spans of masking.span={m.span} frames.")
    _check(masking.max_spans(frames, m.prob, m.span, m.min_spans) <= frames,
           "masking: more spans than frames.")
  sched = c.schedule
  _check(sched.get("warmup_steps", 0) <= c.total_steps,
         f"schedule.warmup_steps={sched.get('warmup_steps')} exceeds total_steps={c.total_steps}.")
  init_from = c.ckpt.get("init_from", "")
  _check(not init_from or init_from.startswith("gs://") or os.path.exists(init_from),
         f"ckpt.init_from={init_from!r}: no such checkpoint directory.")
  return sizes
