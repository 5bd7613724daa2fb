"""Ahead-of-time compilation of a recipe's train step for a TPU pod, from a CPU machine.

  python -m jaxssl.aot --config=configs/pods/wav2vec2_base.py --topology=v5e:4x8 \
      [--config.mesh.fsdp=2 ...] [--mfu=0.4] [--json_out=plan.json] [--nocompile]

With PyPI's `libtpu` installed, `jax.experimental.topologies.get_topology_desc` describes the
devices of any TPU slice (v4, v5e, v5p, v6e) without a TPU, and XLA's TPU compiler compiles for
them. This tool builds the trainer's own step (`pretrain.abstract_step`: same mesh, shardings,
objective, optimizer and donation, abstract inputs only), compiles it for the topology, and
reports per-device memory (arguments, outputs, temporaries) against the chip's HBM, FLOPs per step
(matmuls and convolutions of the traced step, remat recompute included) and a predicted step time
FLOPs / (peak x MFU) at a stated MFU. A state or step that does not fit fails with `DoesNotFit`,
naming the biggest buffers and the mesh / remat / batch changes that shrink them. Compiling the
model for the real chip is how the pod recipes in configs/pods/ are shown to fit (MaxText's
train_compile.py does the same; https://github.com/AI-Hypercomputer/maxtext).
"""
import dataclasses
import json
import math
import os
import re
import sys
import time

# Compiling for a topology needs libtpu's compiler, not a TPU: the local backend stays the CPU
# (no TPU probe), and libtpu's per-machine lock file is skipped so that several compile-only
# processes (tests, other users of this machine) can load it at once. Set before jax loads.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax
from jax.experimental import topologies
from jax.extend import core as jax_core

from jaxssl import cli
from jaxssl import constants
from jaxssl import extras
from jaxssl import main as main_lib
from jaxssl import pretrain
from jaxssl import validate
from jaxssl.training import flops as flops_lib

flags.adopt_module_key_flags(main_lib)  # --config / --workdir in this command's --help.
# pylint: enable=g-import-not-at-top,wrong-import-position

_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "TPU topology, e.g. v5e:2x2, v5e:16x16, v4:2x2x4, v5p:4x4x4, v6e:8x8 "
    "(default: the config's tpu.topology).")
_MFU = flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation for the step-time guess.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Also write the plan as JSON to this path.")
_COMPILE = flags.DEFINE_bool("compile", True, "--nocompile: state and FLOPs only, in seconds.")

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip: HBM and peak dense bf16 matmul FLOP/s (Cloud TPU system-architecture docs)."""
  name: str
  hbm_bytes: int
  peak_flops: float


# Keyed by `device.device_kind` as libtpu reports it.
CHIPS = {
    "TPU v4": Chip("v4", 32 * GIB, 275e12),
    "TPU v5 lite": Chip("v5e", 16 * GIB, 197e12),
    "TPU v5": Chip("v5p", 95 * GIB, 459e12),
    "TPU v6 lite": Chip("v6e", 32 * GIB, 918e12),
}


class DoesNotFit(ValueError):
  """The train state or the compiled step needs more HBM per device than the chip has."""


def topology_devices(name):
  """The devices of TPU topology `name` ("v5e:4x8"), described by libtpu without a TPU.

  Raises:
    ValueError: naming the topology (bad name) or the missing `libtpu` package.
  """
  if not re.fullmatch(r"v\d+[a-z]*:\d+(x\d+){1,2}", name or ""):
    raise ValueError(f"--topology={name!r}: expected <generation>:<chip grid>, e.g. v5e:2x2, "
                     "v5e:16x16, v4:2x2x4, v5p:4x4x4, v6e:8x8.")
  try:
    topology = topologies.get_topology_desc(platform="tpu", topology_name=name)
  except (RuntimeError, ValueError, jax.errors.JaxRuntimeError) as e:
    hint = "" if _has_libtpu() else " " + extras.message("libtpu", "Compiling for a TPU")
    raise ValueError(f"--topology={name!r}: libtpu could not describe it: "
                     f"{str(e).splitlines()[0]}.{hint}") from e
  return list(topology.devices)


def _has_libtpu():
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def _chip_of(devices):
  """(Chip, devices per chip) for a topology's devices."""
  kind = devices[0].device_kind
  if kind not in CHIPS:
    raise ValueError(f"No HBM / peak figures for device kind {kind!r}; known: {sorted(CHIPS)}.")
  chips = {tuple(getattr(d, "coords", (d.id,))) for d in devices}
  return CHIPS[kind], len(devices) // len(chips)


def _leaf_bytes(x):
  """Per-device bytes of one ShapeDtypeStruct with a sharding."""
  shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
  return math.prod(shape) * x.dtype.itemsize


def biggest_state_buffers(abstract_state, k=5):
  """[(path, per-device bytes, global shape, partition spec)] of the k largest state leaves."""
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  rows = [(jax.tree_util.keystr(p, simple=True, separator="/"), _leaf_bytes(x), tuple(x.shape),
           str(getattr(x.sharding, "spec", ""))) for p, x in leaves]
  return sorted(rows, key=lambda r: -r[1])[:k]


def biggest_activations(closed_jaxpr, k=5):
  """[(bytes, "dtype[shape]", where)] of the k largest values the step computes (global shapes).

  Walks the traced step's jaxpr, scans and remat included (a scanned layer's values count once);
  `where` is the flax module path that made the value. Global shapes: the batch dimension splits
  over mesh.data x mesh.fsdp devices. A guide to what fills the temporaries, not an allocation map.
  """
  best = {}

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      where = str(eqn.source_info.name_stack) or eqn.primitive.name
      for v in eqn.outvars:
        shape, dtype = getattr(v.aval, "shape", None), getattr(v.aval, "dtype", None)
        if shape is not None and dtype is not None:
          # One row per module and size: a norm's reshape/square/mul are one buffer's worth.
          size = math.prod(shape) * dtype.itemsize
          best.setdefault((where, size), f"{dtype}{list(shape)} ({eqn.primitive.name})")
      for sub in jax_core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(closed_jaxpr.jaxpr)
  rows = sorted(((b, s, w) for (w, b), s in best.items()), key=lambda r: -r[0])
  return rows[:k]


def _suggestions(config, sizes, state_heavy):
  """Concrete config changes that shrink per-device memory, most effective first."""
  m = config.model
  out = []
  if state_heavy:
    out.append(f"shard the state over more devices: raise mesh.fsdp (now {sizes['fsdp']}; "
               f"'embed' dims shard over it) or mesh.tensor (now {sizes['tensor']}; "
               "'mlp'/'heads' dims)")
  else:
    if not m.get("remat", False):
      out.append("set model.remat=True (recompute each layer's activations in the backward pass)")
    if not m.get("scan_layers", False):
      out.append("set model.scan_layers=True")
    if m.get("dtype", "float32") == "float32":
      out.append("set model.dtype=bfloat16 (activations in bf16; params stay f32)")
    accum = config.optim.get("grad_accum_steps", 1)
    out.append(f"halve the per-device batch: optim.grad_accum_steps={2 * accum} (same global "
               f"batch) or data.batch_size={config.data.batch_size // 2}")
    out.append(f"raise mesh.tensor (now {sizes['tensor']}) to split the wide activations")
  return out


def _fmt(n):
  """Bytes as GiB, or MiB below 1 GiB."""
  return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2 ** 20:.1f} MiB"


def _not_fit_message(what, need, hbm, where, config, sizes, state_heavy, buffers):
  lines = [f"{what} needs {_fmt(need)} per device, more than the {_fmt(hbm)} of HBM of "
           f"each device of {where}. Biggest buffers:"]
  lines += [f"  {b}" for b in buffers]
  lines.append("Try: " + "; or ".join(_suggestions(config, sizes, state_heavy)) + ".")
  return "\n".join(lines)


def plan(config, topology, *, mfu=0.4, objective=None, compile_step=True):
  """Compiles `config`'s train step for a TPU `topology` and predicts its memory and speed.

  Args:
    config: an experiment config (validated here against the topology's device count).
    topology: a topology name ("v5e:4x8") or a list of its devices (`topology_devices`).
    mfu: assumed model FLOPs utilisation for the predicted step time, in (0, 1].
    objective: default `jaxssl.objectives.build(config)`.
    compile_step: False skips XLA (seconds instead of minutes): the state and FLOPs figures
      stay exact, the compiled-memory fields are None and the fit is checked for the state only.

  Returns:
    dict: compiled, topology, chip, num_devices, devices_per_chip, mesh, num_params, batch_shape,
    per-device bytes (state_bytes, argument_bytes, output_bytes, alias_bytes, temp_bytes,
    peak_bytes = arguments + outputs - aliased + temporaries), hbm_bytes (per device),
    hbm_fraction, flops_per_step (all devices, `flops.jaxpr_flops`), flops_per_step_per_device,
    xla_flops_per_step (XLA's cost analysis x devices; undercounts scanned layers), mfu,
    step_sec (predicted), audio_sec_per_step, audio_hours_per_hour (predicted), days_total
    (predicted for config.total_steps), compile_sec.

  Raises:
    DoesNotFit: the state alone (checked before compiling) or the compiled step exceeds HBM;
      the message names the biggest buffers and suggests mesh / remat / batch changes.
    validate.ConfigError: the config does not agree with the topology (batch, mesh).
  """
  if not 0 < mfu <= 1:
    raise ValueError(f"--mfu={mfu} must be in (0, 1].")
  name = topology if isinstance(topology, str) else f"{len(topology)} devices"
  devices = topology_devices(topology) if isinstance(topology, str) else list(topology)
  chip, per_chip = _chip_of(devices)
  hbm, peak = chip.hbm_bytes // per_chip, chip.peak_flops / per_chip
  sizes = validate.mesh_shape(config.mesh, num_devices=len(devices))
  validate.validate(config, num_devices=len(devices),
                    num_processes=len({d.process_index for d in devices}))
  where = f"{name} ({chip.name}, {len(devices)} devices, mesh {sizes})"

  step = pretrain.abstract_step(config, objective=objective, devices=devices)
  state = step["abstract_state"]
  state_bytes = sum(_leaf_bytes(x) for x in jax.tree.leaves(state))
  if state_bytes > hbm:  # No compile needed to know this cannot run.
    rows = [f"{p}: {_fmt(b)} per device of {s} sharded as {spec}"
            for p, b, s, spec in biggest_state_buffers(state)]
    raise DoesNotFit(_not_fit_message("The train state (params + optimizer moments)",
                                      state_bytes, hbm, where, config, sizes, True, rows))
  # FLOPs from the traced step (scans counted in full), spread evenly over the devices.
  traced = step["step_fn"].trace(*step["args"])
  flops = flops_lib.jaxpr_flops(traced.jaxpr)
  flops_dev = flops / len(devices)
  step_sec = flops_dev / (peak * mfu)
  batch, length = step["batch_shape"]
  audio_sec = batch * length / constants.SAMPLE_RATE
  result = dict(
      compiled=compile_step, topology=name, chip=chip.name, num_devices=len(devices),
      devices_per_chip=per_chip, mesh=sizes,
      num_params=sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)),
      batch_shape=step["batch_shape"], state_bytes=state_bytes,
      hbm_bytes=hbm, flops_per_step=flops, flops_per_step_per_device=flops_dev, mfu=mfu,
      step_sec=step_sec, audio_sec_per_step=audio_sec,
      audio_hours_per_hour=audio_sec / step_sec if step_sec else 0.0,
      days_total=step_sec * config.total_steps / 86400)
  if not compile_step:
    return dict(result, argument_bytes=None, output_bytes=None, alias_bytes=None,
                temp_bytes=None, peak_bytes=None, hbm_fraction=state_bytes / hbm,
                xla_flops_per_step=None, compile_sec=0.0)
  start = time.perf_counter()
  try:
    compiled = traced.lower().compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    # XLA's TPU compiler refuses programs whose temporaries exceed HBM ("Ran out of memory on
    # HBM, the total memory required for HLO temporaries (34.46G) exceeds available HBM").
    compiler = str(e).strip().splitlines()[0]
    raise DoesNotFit(_not_fit_message(
        "The compiled train step", _compiler_need(compiler) or hbm, hbm, where, config, sizes,
        False, [f"XLA: {compiler}"] + _activation_rows(traced, sizes))) from None
  compile_sec = time.perf_counter() - start
  mem = compiled.memory_analysis()
  arg, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
  alias, temp = mem.alias_size_in_bytes, mem.temp_size_in_bytes
  peak_bytes = arg + out - alias + temp
  if peak_bytes > hbm:
    heavy = arg > temp
    if heavy:
      rows = [f"{p}: {_fmt(b)} per device" for p, b, _, _ in biggest_state_buffers(state)]
    else:
      rows = _activation_rows(traced, sizes)
    raise DoesNotFit(_not_fit_message(
        f"The compiled train step (arguments {_fmt(arg)}, temporaries {_fmt(temp)})",
        peak_bytes, hbm, where, config, sizes, heavy, rows))
  return dict(result, argument_bytes=arg, output_bytes=out, alias_bytes=alias, temp_bytes=temp,
              peak_bytes=peak_bytes, hbm_fraction=peak_bytes / hbm,
              xla_flops_per_step=flops_lib.xla_flops(compiled) * len(devices),
              compile_sec=compile_sec)


def _activation_rows(traced, sizes):
  """Report lines for the largest values of the traced step (see `biggest_activations`)."""
  shards = sizes["data"] * sizes["fsdp"]
  return [f"{_fmt(b)} {s} (global; batch split over {shards} devices) at {w}"
          for b, s, w in biggest_activations(traced.jaxpr)]


def _compiler_need(message):
  """Bytes the TPU compiler said the program needs ("... temporaries (34.46G) exceeds ..."),
  or None."""
  found = (re.search(r"required for [^(]*\(([\d.]+)([KMGT])?\)", message) or
           re.search(r"Used ([\d.]+)([KMGT])? of", message))
  if not found:
    return None
  scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}.get(found.group(2), 1)
  return int(float(found.group(1)) * scale)


def format_plan(p):
  """The human-readable report `python -m jaxssl.aot` prints."""
  if p["compiled"]:
    memory = [
        f"per-device memory: arguments {_fmt(p['argument_bytes'])} (state "
        f"{_fmt(p['state_bytes'])}), outputs {_fmt(p['output_bytes'])} (aliased "
        f"{_fmt(p['alias_bytes'])}), temporaries {_fmt(p['temp_bytes'])}",
        f"peak {_fmt(p['peak_bytes'])} of {_fmt(p['hbm_bytes'])} HBM "
        f"({100 * p['hbm_fraction']:.0f}%)"]
  else:
    memory = [f"per-device state {_fmt(p['state_bytes'])} of {_fmt(p['hbm_bytes'])} HBM "
              f"({100 * p['hbm_fraction']:.0f}%); not compiled: activations unknown"]
  xla = (f"; XLA's cost analysis says {p['xla_flops_per_step']:.3g} (a scanned layer counted "
         "once)") if p["compiled"] else ""
  return "\n".join([
      f"topology {p['topology']}: {p['num_devices']} devices ({p['chip']}, "
      f"{p['devices_per_chip']} per chip), mesh {p['mesh']}",
      f"params {p['num_params']:,}; batch {p['batch_shape'][0]} x {p['batch_shape'][1]} samples "
      f"({p['audio_sec_per_step'] / 3600:.2f} h of audio per step)",
      *memory,
      f"FLOPs per step {p['flops_per_step']:.3g} (matmuls and convolutions, remat recompute "
      f"included; {p['flops_per_step_per_device']:.3g} per device){xla}",
      f"predicted at MFU {p['mfu']:.2f}: {p['step_sec']:.3f} s/step, "
      f"{p['audio_hours_per_hour']:,.0f} h of audio per hour, {p['days_total']:.1f} days for "
      "the config's total_steps",
      f"compiled in {p['compile_sec']:.1f} s" if p["compiled"] else "not compiled (--nocompile)"])


def main(argv):
  del argv
  config = main_lib._CONFIG.value  # pylint: disable=protected-access
  if config is None:
    raise app.UsageError("--config=configs/<file>.py is required.")
  topology = _TOPOLOGY.value or config.get("tpu", {}).get("topology", "")
  if not topology:
    raise app.UsageError("--topology is required (the config has no tpu.topology).")
  try:
    result = plan(config, topology, mfu=_MFU.value, compile_step=_COMPILE.value)
  except (DoesNotFit, ValueError) as e:  # validate.ConfigError is a ValueError.
    print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(3 if isinstance(e, DoesNotFit) else 2)
  print(format_plan(result))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  cli.run(main)
