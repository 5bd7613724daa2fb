"""Shared pieces of the speed benchmarks: configs, compiled jaxssl steps, timing, result files.

The benchmarks (train_step, vs_pytorch, inference_rtf, params_macs, gpu_suite) all build their
models from the experiment configs under configs/ exactly as `python -m jaxssl.main` does
(objectives.build(config)), on one device, and time them with the same rules:
  - wall-clock and process CPU seconds per call; the median over repeats is reported. CPU time
    counts the work of all threads and not the time other processes hold the cores, so on the
    shared 2-core machine it is the steadier figure (both are reported);
  - competing implementations are interleaved (A B, B A, ...) in one process, so that load
    changes hit both alike, and compared as ratios;
  - FLOPs come from XLA's cost analysis of the compiled program; MFU = FLOPs / time / the peak
    of jaxssl.training.accounting (measured once per device kind, cached).
Wav2vec 2.0: https://arxiv.org/abs/2006.11477 .
"""
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import cli
from jaxssl import constants
from jaxssl import objectives
from jaxssl.training import accounting
from jaxssl.training import flops
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step

CONFIG_ROOT = "configs"
# Config files whose arguments select different models: every value is one more table row.
# (Configs are otherwise discovered automatically: every configs/**/*.py with get_config whose
# objective is registered and trains without constants, i.e. without a distillation teacher.)
SWEEPS = {
    "mixers/wav2vec2.py": [f"mixer={m},recipe=base" for m in
                           ("mha", "summary_mixing", "fnet", "hyena")],
    "mixers/hubert.py": [f"mixer={m},recipe=base" for m in
                         ("mha", "summary_mixing", "fnet", "hyena")],
    "hubert/base.py": ["iteration=1", "iteration=2"],
    "hubert/demo.py": ["iteration=1", "iteration=2"],
}


def load_config(path, arg=None):
  """`get_config(arg)` of a config file (as `--config=path:arg` loads it)."""
  return cli.load_config_file(f"{path}:{arg}" if arg else path)


def discover_configs(root=CONFIG_ROOT):
  """[(name, path, arg, config)] of every pretraining config under `root`, sweeps expanded.

  name is "family/file[:arg]". Files without get_config, or that fail to build, are skipped
  (with the error in the returned list's `config` slot as an Exception) so one broken config
  does not hide the others.
  """
  out = []
  for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
    rel = os.path.relpath(path, root)
    if os.path.basename(path) in ("__init__.py", "common.py"):
      continue
    with open(path) as f:
      if "def get_config" not in f.read():
        continue
    for arg in SWEEPS.get(rel, [None]):
      name = rel[:-3] + (f":{arg}" if arg else "")
      try:
        config = load_config(path, arg)
      except Exception as e:  # pylint: disable=broad-except
        out.append((name, path, arg, e))
        continue
      if is_pretraining(config):
        out.append((name, path, arg, config))
  return out


def is_pretraining(config):
  name = config.get("objective", {}).get("name", "")
  return name in objectives.REGISTRY and not objectives.get(name).has_constants


def resized(config, *, batch_size, seconds, dtype=None):
  """A copy of `config` on one device with a fixed batch of `batch_size` x `seconds` crops
  (fairseq-style dynamic batches off, the whole batch one group)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.batch_size = batch_size
    c.data.dynamic_batch_sec = 0.0
    c.data.batch_groups = 1
    c.data.crop_samples = int(seconds * constants.SAMPLE_RATE)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    if dtype:
      c.model.dtype = dtype
    if "mixer" in c.model and "max_frames" in c.model.mixer:  # Hyena's positions: this crop.
      from jaxssl.models import variants  # pylint: disable=g-import-not-at-top
      c.model.mixer.max_frames = max(variants.frames_for(c.data.crop_samples), 1)
  return c


def synthetic_batch(config, seed=0):
  """A host batch of the config's shape: noise audio (all valid) and, if needed, k-means labels."""
  b, s = config.data.batch_size, config.data.crop_samples
  rng = np.random.default_rng(seed)
  batch = {"audio": (0.1 * rng.standard_normal((b, s))).astype(np.float32),
           "valid": np.ones((b, s), bool)}
  if config.data.get("labels", ""):
    from jaxssl.data import labels as labels_lib  # pylint: disable=g-import-not-at-top
    k = config.objective.num_clusters
    k = min(k) if isinstance(k, (tuple, list)) else k
    t = labels_lib.labels_per_crop(s, config.data.label_rate)
    batch["labels"] = rng.integers(0, k, (b, t)).astype(np.int32)
    batch["labels_valid"] = np.ones((b, t), bool)
  return batch


def num_params(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def peak_memory_bytes(compiled, device):
  """Peak device memory of a compiled program: the allocator's peak on GPU/TPU, else XLA's
  estimate (arguments + outputs + scratch - donated aliases)."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  m = compiled.memory_analysis()
  if m is None:
    return -1
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


class JaxTrainStep:
  """The config's compiled train step on one device, with its state and a synthetic batch.

  `run()` takes one step (state donated and replaced) and blocks. Attributes: flops (per step),
  compile_sec, num_params, audio_sec (real audio per batch), memory_bytes.
  """

  def __init__(self, config, seed=0):
    device = jax.devices()[0]
    self.config = config
    mesh = partitioning.make_mesh(config.mesh, devices=[device])
    rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))
    objective = objectives.build(config)
    tx, lr = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
    sharding = partitioning.batch_sharding(mesh)
    host = synthetic_batch(config, seed)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in host.items()}
    self.state, shardings = train_state.create(objective, tx, spec, seed, mesh, rules)
    step = train_step.make_train_step(
        mesh, shardings, sharding, rules=rules, objective=objective, tx=tx, lr_schedule=lr,
        grad_accum_steps=config.optim.get("grad_accum_steps", 1))
    start = time.perf_counter()
    traced = step.trace(self.state, {}, spec)
    self.compiled = traced.lower().compile()
    self.compile_sec = time.perf_counter() - start
    self.flops = flops.program_flops(traced, self.compiled, num_devices=mesh.size)
    self.num_params = num_params(self.state.params)
    self.batch = {k: jax.device_put(v, sharding) for k, v in host.items()}
    self.audio_sec = float(host["valid"].sum()) / constants.SAMPLE_RATE
    self.metrics = None
    self.run()  # First call: allocations and thread pools warm up outside the timings.
    self.memory_bytes = peak_memory_bytes(self.compiled, device)

  def run(self):
    self.state, self.metrics = self.compiled(self.state, {}, self.batch)
    jax.block_until_ready(self.metrics)


def measure_train_step(name, config, *, batch_size, seconds, reps, dtype="", tiny=False):
  """One row: the config's train step timed `reps` times after a warm-up step."""
  c = resized(config, batch_size=batch_size, seconds=seconds, dtype=dtype or None)
  if tiny:
    with c.unlocked():
      c.model.variant = "tiny"
  step = JaxTrainStep(c)
  times = interleaved({"step": step.run}, reps)["step"]
  wall, cpu = median(times["wall"]), median(times["cpu"])
  peak = accounting.peak_flops(dtype=c.model.dtype)
  return dict(
      config=name, dtype=c.model.dtype, batch=f"{batch_size} x {seconds:g} s",
      params=step.num_params, gflops_per_step=step.flops / 1e9, compile_sec=step.compile_sec,
      step_wall=wall, step_cpu=cpu, audio_sec_per_sec=step.audio_sec / wall,
      mfu=step.flops / wall / peak,
      mfu_cpu_time=step.flops / (cpu / (os.cpu_count() or 1)) / peak,
      memory_gb=step.memory_bytes / 2**30, peak_flops=peak, times=times,
      loss=float(step.metrics["train/loss"]))


class JaxForward:
  """The config's encoder forward pass (`objective.represent`, no dropout) on [B, S] audio."""

  def __init__(self, config, seed=0):
    objective = objectives.build(config)
    host = synthetic_batch(config, seed)
    batch = {k: jnp.asarray(v) for k, v in host.items()}
    params = jax.jit(objective.init)(jax.random.PRNGKey(seed), batch)
    # The encoder's parameters (what inference runs), not the pretraining heads.
    self.num_params = num_params(params.get("speech_encoder", params))
    fn = jax.jit(lambda p, b: objective.represent(p, b)[0])
    start = time.perf_counter()
    traced = fn.trace(params, batch)
    self.compiled = traced.lower().compile()
    self.compile_sec = time.perf_counter() - start
    self.flops = flops.program_flops(traced, self.compiled)
    self.params, self.batch = params, batch
    self.audio_sec = float(host["valid"].sum()) / constants.SAMPLE_RATE
    self.run()

  def run(self):
    jax.block_until_ready(self.compiled(self.params, self.batch))


def timed(fn):
  """(wall seconds, process CPU seconds) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(fns, reps):
  """Times every fn of `fns` (name -> callable) `reps` times, alternating the order each round.

  Returns:
    name -> dict(wall=[...], cpu=[...]) in seconds.
  """
  out = {name: dict(wall=[], cpu=[]) for name in fns}
  names = list(fns)
  for r in range(reps):
    for name in (names if r % 2 == 0 else names[::-1]):
      wall, cpu = timed(fns[name])
      out[name]["wall"].append(wall)
      out[name]["cpu"].append(cpu)
  return out


def median(xs):
  return float(statistics.median(xs)) if xs else float("nan")


def machine():
  """What the numbers were measured on: CPU model, cores, load, accelerator, versions."""
  info = dict(
      date=datetime.datetime.now().isoformat(timespec="seconds"),
      cpu=_cpu_model(), cpu_cores=os.cpu_count(), load_average=list(os.getloadavg()),
      python=platform.python_version(), jax=jax.__version__, backend=jax.default_backend(),
      device_kind=jax.devices()[0].device_kind, num_devices=jax.device_count())
  for mod in ("torch", "transformers"):
    try:
      info[mod] = __import__(mod).__version__
    except ImportError:
      pass
  return info


def _cpu_model():
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    return platform.processor() or "unknown"


def markdown_table(columns, rows):
  """A markdown table; floats are printed with 3 significant digits."""
  def fmt(v):
    if isinstance(v, float):
      return "n/a" if not np.isfinite(v) else f"{v:.3g}"
    return str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def write_results(stem, payload, markdown, plot=None):
  """Writes stem.json (payload), stem.md (markdown) and, if `plot` (a path -> None function)
  is given, stem.png. An empty stem writes nothing (print-only runs)."""
  if not stem:
    return
  os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
  with open(stem + ".json", "w") as f:
    json.dump(payload, f, indent=1, default=float)
  with open(stem + ".md", "w") as f:
    f.write(markdown.rstrip() + "\n")
  if plot is not None:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    plot(stem + ".png")
