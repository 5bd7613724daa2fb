"""Cost accounting for training runs: FLOPs, model FLOPs utilisation, device time and energy.

Self-supervised speech models are compared by how much compute they need for a given quality,
so every run logs its cost beside its losses (the practice of Strubell et al. 2019,
https://arxiv.org/abs/1906.02243, and Patterson et al. 2021, https://arxiv.org/abs/2104.10350):

- FLOPs per step: XLA's cost analysis of the compiled train step (all devices), with the
  iterations of scanned layers it counts once added back (`flops.program_flops`). It counts the
  program as compiled, so rematerialised forward passes count too (hardware FLOPs, an upper bound
  on model FLOPs when `model.remat` is on).
- MFU: achieved FLOP/s over the peak FLOP/s of the devices, the peak being *measured* once per
  device kind with a large matmul in the run's compute dtype (`measure_peak_flops`) and cached in
  `$JAXSSL_CACHE_DIR/peak_flops.json` (default `~/.cache/jaxssl`). A measured peak is what the
  chip really sustains on a matmul, so MFU reads as "fraction of the best this chip does".
- Cumulative FLOPs and device-hours (wall-clock since the run started, compiles and checkpoints
  included, times the number of devices; on CPU a whole host counts as one device).
- Energy: device-hours x device power x PUE, in kWh, and CO2e = kWh x grid intensity. The power is
  the board power (TDP) of the device kind from `DEVICE_WATTS`, an upper bound on the average
  draw; set the real figure when it is known. Defaults: PUE 1.1 (a hyperscale data centre) and
  475 gCO2e/kWh (IEA 2019 world average electricity).

Settings come from an optional `accounting` config section (keys of `DEFAULTS`), else from the
environment (JAXSSL_DEVICE_WATTS, JAXSSL_PUE, JAXSSL_GRID_GCO2_PER_KWH, JAXSSL_PEAK_FLOPS), else the
defaults. Every logged value starts with "perf/", as the throughput readouts do, because it depends
on timing (a resumed run is compared to an uninterrupted one without them).
"""
import json
import logging
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp

# Board power (TDP) per chip in watts, matched as a lowercase substring of `device_kind`; first
# match wins, so more specific names come first. CPU: per host, for the 2-core machines this
# project measures on (about 10 W per core); set device_watts for bigger hosts.
DEVICE_WATTS = (
    ("h200", 700.0),      # H200 SXM.
    ("h100 pcie", 350.0),
    ("h100", 700.0),      # H100 SXM.
    ("a100", 400.0),      # A100 SXM.
    ("v100", 300.0),      # V100 SXM2 (fairseq's wav2vec 2.0 runs).
    ("l4", 72.0),
    ("t4", 70.0),
    ("tpu v4", 192.0),    # Jouppi et al. 2023, max per chip.
    ("cpu", 20.0),
)
FALLBACK_WATTS = 300.0

DEFAULTS = dict(
    device_watts=0.0,          # 0: from DEVICE_WATTS by device kind.
    pue=1.1,                   # Data-centre overhead: facility energy / device energy.
    grid_gco2_per_kwh=475.0,   # Grid carbon intensity.
    peak_flops=0.0,            # Per device; 0: measured (and cached) for the device kind.
)
_ENV = dict(device_watts="JAXSSL_DEVICE_WATTS", pue="JAXSSL_PUE",
            grid_gco2_per_kwh="JAXSSL_GRID_GCO2_PER_KWH", peak_flops="JAXSSL_PEAK_FLOPS")


def settings(config=None):
  """The accounting settings: config.accounting > environment variables > DEFAULTS.

  Raises:
    ValueError: naming the key, for an unknown key or a value that is not a number >= 0.
  """
  out = dict(DEFAULTS)
  for key, var in _ENV.items():
    if os.environ.get(var, ""):
      out[key] = _number(os.environ[var], f"environment variable {var}")
  section = config.get("accounting", None) if config is not None else None
  for key, value in (section or {}).items():
    if key not in DEFAULTS:
      raise ValueError(f"Unknown accounting.{key}; valid keys: {sorted(DEFAULTS)}.")
    out[key] = _number(value, f"accounting.{key}")
  return out


def _number(value, where):
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{where}={value!r} is not a number.") from None
  if not math.isfinite(x) or x < 0:
    raise ValueError(f"{where}={value!r} must be a finite number >= 0.")
  return x


def device_watts(device_kind):
  """Board power of one device of `device_kind` (e.g. "NVIDIA H100 80GB HBM3") in watts."""
  kind = device_kind.lower()
  return next((w for name, w in DEVICE_WATTS if name in kind), FALLBACK_WATTS)


def default_peak_dtype(platform):
  """The default dtype of the peak: float32 on CPU (what CPU runs compute in: a bf16 BASE step
  is slower there even though AMX bf16 matmuls are not), bfloat16 on accelerators."""
  return jnp.float32 if platform == "cpu" else jnp.bfloat16


def measure_peak_flops(device=None, dtype=None, size=None, repeats=3, matmuls=4):
  """Best sustained FLOP/s of one device on chained square matmuls.

  Args:
    device: a jax device (default `jax.devices()[0]`).
    dtype: operand dtype (default `default_peak_dtype`); accumulation is float32.
    size: matrix side (default 2048 on CPU, 8192 on accelerators: large enough to saturate;
      about 1 s on a 2-core CPU, well under 1 s on a GPU).
    repeats: timed calls; the fastest counts (the others lost time to something else).
    matmuls: matmuls per call, chained so that none can be skipped, to amortise dispatch.

  Returns:
    FLOP/s (2 * size**3 per matmul). On CPU, where other processes often share the cores, the
    larger of the wall-clock rate and the rate per CPU-second times the core count (what the
    host does when nothing else runs; CPU time is what a contended run still gets per FLOP).
  """
  device = device or jax.devices()[0]
  dtype = jnp.dtype(dtype or default_peak_dtype(device.platform))
  size = size or (2048 if device.platform == "cpu" else 8192)
  scale = 1.0 / math.sqrt(size)  # Keeps the chain's values O(1).

  @jax.jit
  def chain(a, b):
    def body(_, x):
      return jnp.dot(x, b, preferred_element_type=jnp.float32).astype(dtype) * scale
    return jax.lax.fori_loop(0, matmuls, body, a)

  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = jax.device_put(jax.random.normal(key_a, (size, size), dtype), device)
  b = jax.device_put(jax.random.normal(key_b, (size, size), dtype), device)
  chain(a, b).block_until_ready()  # Compile and warm up.
  wall = cpu = math.inf
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    chain(a, b).block_until_ready()
    wall = min(wall, time.perf_counter() - start)
    cpu = min(cpu, time.process_time() - start_cpu)
  flops = 2.0 * size**3 * matmuls
  if device.platform == "cpu" and cpu > 0:
    return max(flops / wall, flops / cpu * (os.cpu_count() or 1))
  return flops / wall


def cache_path():
  root = os.environ.get("JAXSSL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "jaxssl")
  return os.path.join(root, "peak_flops.json")


def device_key(device, dtype):
  """Cache key of a device kind: platform, kind, dtype (and core count on CPU)."""
  key = f"{device.platform}|{device.device_kind}|{jnp.dtype(dtype).name}"
  return key + f"|{os.cpu_count()}cpus" if device.platform == "cpu" else key


def peak_flops(device=None, dtype=None, *, path=None, refresh=False):
  """Measured peak FLOP/s of one device, from the cache or measured once and cached.

  Args:
    device: a jax device (default `jax.devices()[0]`).
    dtype: the compute dtype (default `default_peak_dtype`).
    path: the JSON cache (default `cache_path()`); {key: {"flops": ..., "measured": ...}}.
    refresh: measure again even if cached.

  Returns:
    FLOP/s of one device.
  """
  device = device or jax.devices()[0]
  dtype = jnp.dtype(dtype or default_peak_dtype(device.platform))
  path = path or cache_path()
  key = device_key(device, dtype)
  cache = _read_cache(path)
  if not refresh and key in cache:
    return float(cache[key]["flops"])
  flops = measure_peak_flops(device, dtype)
  logging.info("Measured peak %.4g FLOP/s for %s (cached in %s).", flops, key, path)
  cache = _read_cache(path)  # Another process may have written meanwhile.
  cache[key] = dict(flops=flops, measured=time.strftime("%Y-%m-%d %H:%M:%S"))
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path) or ".", delete=False,
                                   suffix=".tmp") as f:
    json.dump(cache, f, indent=1, sort_keys=True)
  os.replace(f.name, path)  # Atomic: concurrent runs never read half a file.
  return flops


def _read_cache(path):
  try:
    with open(path) as f:
      cache = json.load(f)
    return cache if isinstance(cache, dict) else {}
  except (OSError, ValueError):
    return {}  # Missing or corrupt: measure again.


def energy(device_seconds, watts, *, pue=DEFAULTS["pue"],
           grid_gco2_per_kwh=DEFAULTS["grid_gco2_per_kwh"]):
  """(kWh, kg CO2e) of `device_seconds` at `watts` per device: s * W * PUE / 3.6e6, kWh * g/kWh."""
  kwh = device_seconds * watts * pue / 3.6e6
  return kwh, kwh * grid_gco2_per_kwh / 1000.0


class RunAccounting:
  """Cumulative cost of one run; `scalars` gives what the metrics writer logs.

  Args:
    num_devices: devices the step runs on (on CPU: hosts).
    peak_flops_per_device: measured (or configured) peak FLOP/s of one device.
    watts: power of one device.
    pue: data-centre overhead factor.
    grid_gco2_per_kwh: carbon intensity of the electricity.
  """

  def __init__(self, *, num_devices, peak_flops_per_device, watts, pue=DEFAULTS["pue"],
               grid_gco2_per_kwh=DEFAULTS["grid_gco2_per_kwh"]):
    self.num_devices = num_devices
    self.peak_flops = peak_flops_per_device * num_devices
    self.watts, self.pue, self.grid = watts, pue, grid_gco2_per_kwh
    self._device_seconds = 0.0
    self._last = time.perf_counter()

  def resume(self, last_row):
    """Continues the device time of the run's last logged metrics row (a dict, or None)."""
    self._device_seconds = float((last_row or {}).get("perf/device_hours", 0.0)) * 3600.0

  def scalars(self, *, flops_per_step, flops_total, window_flops, window_sec):
    """The "perf/..." cost scalars now.

    Args:
      flops_per_step: FLOPs of the latest step on all devices (0: unknown, then no FLOP
        figures).
      flops_total: the run's cumulative training FLOPs (each step's own program counted).
      window_flops: FLOPs of the steps since the previous call.
      window_sec: their compute time (compiles excluded), for MFU.

    Returns:
      dict: perf/device_hours, perf/energy_kwh, perf/co2e_kg and, with flops_per_step known,
      perf/flops_per_step, perf/flops_total, perf/mfu.
    """
    now = time.perf_counter()
    self._device_seconds += (now - self._last) * self.num_devices
    self._last = now
    kwh, co2 = energy(self._device_seconds, self.watts, pue=self.pue,
                      grid_gco2_per_kwh=self.grid)
    out = {"perf/device_hours": self._device_seconds / 3600.0, "perf/energy_kwh": kwh,
           "perf/co2e_kg": co2}
    if flops_per_step:
      out["perf/flops_per_step"] = float(flops_per_step)
      out["perf/flops_total"] = float(flops_total)
      if window_flops > 0 and window_sec > 0 and self.peak_flops > 0:
        out["perf/mfu"] = window_flops / window_sec / self.peak_flops
    return out


def for_run(config, mesh, *, dtype=None):
  """The RunAccounting of a run on `mesh`, with the peak measured or read from the cache.

  Args:
    config: the experiment config (optional `accounting` section; model.dtype sets the peak's
      dtype).
    mesh: the device mesh of the step.
    dtype: overrides the peak's dtype.
  """
  cfg = settings(config)
  device = mesh.devices.flat[0]
  if dtype is None:
    dtype = jnp.dtype(config.model.get("dtype", "float32")) if "model" in config else None
  if device.platform == "cpu":  # Every CPU "device" of a host shares its cores.
    num_devices = len({d.process_index for d in mesh.devices.flat})
  else:
    num_devices = mesh.devices.size
  peak = cfg["peak_flops"] or peak_flops(device, dtype)
  watts = cfg["device_watts"] or device_watts(device.device_kind)
  return RunAccounting(num_devices=num_devices, peak_flops_per_device=peak, watts=watts,
                       pue=cfg["pue"], grid_gco2_per_kwh=cfg["grid_gco2_per_kwh"])
