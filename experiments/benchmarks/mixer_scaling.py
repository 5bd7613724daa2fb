"""Token-mixer scaling: forward+backward step time, peak memory and MACs vs utterance length.

For each mixer (mha, summary_mixing, fnet, hyena; settings of configs/mixers) this builds the
BASE Transformer encoder exactly as the configs do (12 x 768/3072, conv positional embedding,
post-LN), without the CNN: the input is a [1, T, 768] frame sequence at 50 frames/s, so 1 s to
120 s of audio is T = 50 to 6000 frames. One step is value_and_grad of mean(y^2) w.r.t. all
encoder parameters, dropout off, `nn.scan` over layers with per-block rematerialisation (so
quadratic attention at 6000 frames fits in memory; the same for every mixer and for the peer).
Scope "mixer" times a single mixer layer at the same width, isolating the token mixing itself.

Measured per (scope, mixer, length), all mixers of one length interleaved in one process:
  - wall and process-CPU seconds per step (median over reps; CPU time counts all XLA threads
    and is less disturbed by other jobs on a shared machine),
  - MACs per step = XLA cost analysis FLOPs / 2 (FFTs included with XLA's own estimate) of the
    same step lowered (not compiled) with the layers unrolled and attention unchunked: XLA
    counts a loop body once, so the scanned layers and mha's query-block map would hide 11/12
    of the encoder and most of the attention past 1024 frames (see jaxssl/training/flops.py),
  - peak memory = XLA's compiled memory_analysis, temp + argument bytes,
  - the HF transformers PyTorch peer (Wav2Vec2Encoder, SDPA attention, gradient checkpointing,
    one thread: see TorchPeer) for the encoder scope, as a ratio against `mha`.
The scaling exponent is the slope of log(cost) vs log(T) over lengths >= --fit_min_seconds.

  python -m experiments.benchmarks.mixer_scaling                  # the committed sweep
  python -m experiments.benchmarks.mixer_scaling --seconds=1,5 --scopes=mixer --out=""
"""
import functools
import json
import os
import platform
import subprocess
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import psutil

from configs.mixers import wav2vec2 as mixer_config
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.training import flops

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_list("seconds", ["1", "2", "5", "10", "20", "30", "60", "120"], "Audio lengths.")
  flags.DEFINE_list("mixers", ["mha", "summary_mixing", "fnet", "hyena"], "Mixers to measure.")
  flags.DEFINE_list("scopes", ["mixer", "encoder"], "'encoder' (BASE stack) and/or 'mixer'.")
  flags.DEFINE_bool("remat", True, "Per-block rematerialisation (encoder scope; peer too).")
  flags.DEFINE_bool("peer", True, "Also time the HF transformers PyTorch encoder (encoder scope).")
  flags.DEFINE_float("min_time", 4.0, "Timed seconds per (mixer, length) before stopping reps.")
  flags.DEFINE_integer("max_reps", 5, "Most timed reps per (mixer, length).")
  flags.DEFINE_float("warmup_max_s", 10.0, "A first call longer than this counts as a rep; "
                     "shorter ones are discarded as warm-up (allocator, thread pools, caches).")
  flags.DEFINE_float("fit_min_seconds", 10.0, "Fit exponents on lengths >= this.")
  flags.DEFINE_float("memory_fraction", 0.8, "Compiled steps whose XLA peak exceeds this fraction "
                     "of the available RAM are not run (reported as skipped), so a long mha step "
                     "cannot push a shared machine into the OOM killer.")
  flags.DEFINE_string("reuse_log", "", "stdout of an interrupted run: its JSON rows are reused "
                      "(and marked) instead of being measured again.")
  flags.DEFINE_bool("recount_macs", True, "Count the MACs of reused rows again (an older run "
                    "may have counted the looped program); off for rows counted by step_macs.")
  flags.DEFINE_string("note", "", "A sentence for the report (e.g. how reused runs were made).")
  flags.DEFINE_string("out", "experiments/benchmarks/results/mixer_scaling",
                      "Output stem for .json/.md/.png; empty: print only.")


FRAMES_PER_SEC = 50
PEER = "mha (HF PyTorch)"


def build_encoder(mixer_name, remat, scan_layers=True):
  """The BASE encoder constructor of configs/mixers/wav2vec2.py:recipe=base, dropout off.

  scan_layers=False unrolls the layers and turns off mha's query chunking: the same arithmetic
  without loops, for counting MACs (never run at long lengths: O(T^2) attention memory).
  """
  c = mixer_config.get_config(f"mixer={mixer_name},recipe=base")
  with c.unlocked():
    c.model.update(dict(dropout_rate=0.0, attention_dropout_rate=0.0, layerdrop_rate=0.0,
                        scan_layers=scan_layers, remat=remat))
    if mixer_name == "summary_mixing":
      c.model.mixer.dropout_rate = 0.0
    if mixer_name == "mha" and not scan_layers:
      c.model.mixer.query_chunk_size = 0
  return wav2vec2_model.speech_encoder_from_config(c.model).keywords["make_encoder"]


def make_step(scope, mixer_name, remat, scan_layers=True, num_layers=None):
  """(init(rng, x, valid) -> params, step(params, x, valid) -> (loss, grads)) for one scope.

  num_layers overrides the encoder's depth (12); MAC counting uses 1 and 2.
  """
  make_encoder = build_encoder(mixer_name, remat, scan_layers)
  if scope == "encoder":
    module = make_encoder(**({} if num_layers is None else dict(num_layers=num_layers)))
  else:
    module = make_encoder.keywords["mixer"]()

  def forward(params, x, valid):
    y = module.apply({"params": params}, x, valid=valid, train=True)
    return y[0] if scope == "encoder" else y

  def loss(params, x, valid):
    return jnp.mean(jnp.square(forward(params, x, valid)))

  def init(rng, x, valid):
    return nn.unbox(module.init(rng, x, valid=valid, train=False)).get("params", {})  # FNet: {}

  return init, jax.value_and_grad(loss)


def step_macs(scope, mixer_name, t, remat):
  """MACs of one step at t frames: XLA's cost analysis of the lowered, loop-free program / 2.

  The encoder's identical blocks make its cost affine in depth, so it is counted exactly as
  M(1) + (L - 1) (M(2) - M(1)) from 1- and 2-block encoders: lowering 12 unrolled blocks
  takes ~6x longer for the same number.
  """
  x = jax.ShapeDtypeStruct((1, t, 768), jnp.float32)
  valid = jax.ShapeDtypeStruct((1, t), jnp.bool_)

  def macs(num_layers=None):
    init, step = make_step(scope, mixer_name, remat, scan_layers=False, num_layers=num_layers)
    params = jax.eval_shape(init, jax.random.key(1), x, valid)
    return flops.xla_flops(jax.jit(step).lower(params, x, valid)) / 2

  if scope != "encoder":
    return macs()
  depth = build_encoder(mixer_name, remat).keywords["num_layers"]
  m1, m2 = macs(1), macs(2)
  return m1 + (depth - 1) * (m2 - m1)


def time_call(fn, *args):
  w, c = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - w, time.process_time() - c


class TorchPeer:
  """HF transformers Wav2Vec2Encoder (BASE, SDPA attention): the PyTorch peer of `mha`."""

  def __init__(self, remat):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    # One thread: under load, PyTorch's OpenMP pool spin-waits at every barrier and its CPU
    # time stops measuring work (6x at T=50 with 2 threads on a load-15 machine). XLA's pool does
    # not spin, so JAX keeps its default threads and CPU time still counts work only.
    torch.set_num_threads(1)
    cfg = transformers.Wav2Vec2Config(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0,
        do_stable_layer_norm=False)
    cfg._attn_implementation = "sdpa"  # pylint: disable=protected-access
    model = transformers.Wav2Vec2Model(cfg)
    if remat:
      enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x
      (enable or model.gradient_checkpointing_enable)()
    model.train()
    self.torch, self.encoder = torch, model.encoder
    self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"

  def step(self, x):
    self.encoder.zero_grad(set_to_none=True)
    loss = self.encoder(x).last_hidden_state.square().mean()
    loss.backward()
    return loss

  def time(self, t):
    x = self.torch.randn(1, t, 768)
    w, c = time.perf_counter(), time.process_time()
    self.step(x)
    return time.perf_counter() - w, time.process_time() - c


def load_reused(path):
  """{(scope, mixer, frames): row} from the JSON lines of an earlier run's stdout."""
  out = {}
  if path:
    with open(path) as f:
      for line in f:
        if line.startswith("{"):
          row = json.loads(line)
          key = (row.pop("scope"), row.pop("mixer"), row["frames"])
          out[key] = dict(row, reused=True)
  return out


def measure_length(scope, t, steps, params, peer, reused):
  """Compiles every mixer at length t and times them interleaved. Returns {name: row}."""
  x = jax.random.normal(jax.random.key(0), (1, t, 768))
  valid = jnp.ones((1, t), bool)
  rows, compiled = {}, {}
  for name in list(steps) + ([PEER] if peer is not None else []):
    if (scope, name, t) in reused:
      rows[name] = dict(reused[(scope, name, t)])
      if name != PEER and FLAGS.recount_macs:  # Older runs counted the looped program.
        rows[name]["macs"] = step_macs(scope, name, t, FLAGS.remat)
  for name, step in steps.items():
    if name in rows:
      continue
    start = time.perf_counter()
    exe = jax.jit(step).lower(params[name], x, valid).compile()
    mem = exe.memory_analysis()
    rows[name] = dict(frames=t, seconds=t / FRAMES_PER_SEC,
                      compile_s=time.perf_counter() - start,
                      macs=step_macs(scope, name, t, FLAGS.remat),
                      peak_bytes=int(mem.temp_size_in_bytes + mem.argument_size_in_bytes),
                      temp_bytes=int(mem.temp_size_in_bytes), wall=[], cpu=[])
    if rows[name]["peak_bytes"] > FLAGS.memory_fraction * psutil.virtual_memory().available:
      rows[name].update(skipped="memory", reps=0, wall_s=float("nan"), cpu_s=float("nan"))
      del rows[name]["wall"], rows[name]["cpu"]
      continue
    compiled[name] = exe
  runners = {n: functools.partial(time_call, exe, params[n], x, valid)
             for n, exe in compiled.items()}
  if peer is not None and PEER not in rows:
    rows[PEER] = dict(frames=t, seconds=t / FRAMES_PER_SEC, wall=[], cpu=[])
    runners[PEER] = functools.partial(peer.time, t)
  # A first untimed call per runner, unless it is long enough to be a measurement itself.
  for name, run in runners.items():
    w, c = run()
    if w > FLAGS.warmup_max_s:
      rows[name]["wall"].append(w)
      rows[name]["cpu"].append(c)
  for _ in range(FLAGS.max_reps):  # Round-robin, so load changes hit every mixer alike.
    todo = [n for n in runners
            if sum(rows[n]["wall"]) < FLAGS.min_time and len(rows[n]["wall"]) < FLAGS.max_reps]
    if not todo:
      break
    for name in todo:
      w, c = runners[name]()
      rows[name]["wall"].append(w)
      rows[name]["cpu"].append(c)
  for name in runners:
    row = rows[name]
    row["reps"] = len(row["wall"])
    row["wall_s"] = float(np.median(row.pop("wall")))
    row["cpu_s"] = float(np.median(row.pop("cpu")))
  return rows


def fit_exponent(seconds, values, min_seconds):
  s, v = np.asarray(seconds, float), np.asarray(values, float)
  keep = (s >= min_seconds) & (v > 0)
  if keep.sum() < 2:
    return float("nan")
  return float(np.polyfit(np.log(s[keep]), np.log(v[keep]), 1)[0])


def summarize(results, min_seconds):
  """Exponents per (scope, mixer, quantity) and time ratios against mha per length."""
  fits = {}
  for scope, by_name in results.items():
    for name, rows in by_name.items():
      secs = [r["seconds"] for r in rows]
      fits[f"{scope}/{name}"] = {
          q: fit_exponent(secs, [r.get(q, 0) for r in rows], min_seconds)
          for q in ("cpu_s", "wall_s", "macs", "peak_bytes")}
      fits[f"{scope}/{name}"]["cpu_s_all_lengths"] = fit_exponent(
          secs, [r["cpu_s"] for r in rows], 0.0)
  return fits


def check_targets(results, fits, at_seconds=60.0, max_exponent=1.15, min_speedup=3.0):
  """Issue #5's targets per scope and efficient mixer: CPU-time exponent <= max_exponent and
  CPU time per step at `at_seconds` at least `min_speedup` x below mha's. Returns a list of
  rows {scope, mixer, exponent, macs_exponent, speedup, speedup_wall, exponent_ok, speedup_ok}.
  """
  out = []
  for scope, by_name in results.items():
    ref = {r["seconds"]: r for r in by_name.get("mha", [])}.get(at_seconds)
    for name, rows in by_name.items():
      if name in ("mha", PEER):
        continue
      f = fits[f"{scope}/{name}"]
      row = {r["seconds"]: r for r in rows}.get(at_seconds)
      speedup = speedup_wall = float("nan")
      if ref is not None and row is not None:
        speedup = ref["cpu_s"] / row["cpu_s"]
        speedup_wall = ref["wall_s"] / row["wall_s"]
      out.append(dict(scope=scope, mixer=name, exponent=f["cpu_s"], macs_exponent=f["macs"],
                      speedup=speedup, speedup_wall=speedup_wall,
                      exponent_ok=bool(f["cpu_s"] <= max_exponent),
                      speedup_ok=bool(speedup >= min_speedup)))
  return out


def markdown(results, fits, meta):
  lines = [f"# Token-mixer scaling ({meta['date']})", "",
           f"Machine: {meta['cpu']}, {meta['cores']} cores, {meta['backend']} backend; "
           f"{meta['versions']}. 1-min load average {meta['load_start']:.2f} at start and "
           f"{meta['load_end']:.2f} at the end: the machine was shared with other jobs, so wall "
           "times are inflated and noisy; CPU times (process time, all threads) are steadier "
           "and the ratios use them. Mixers of one length run interleaved in one process.", "",
           f"Setup: BASE width (D 768, 12 heads), batch 1, 50 frames/s, fwd+bwd of mean(y^2) "
           f"w.r.t. all parameters, dropout off, scan over layers, remat={meta['remat']}. "
           "encoder = 12 blocks (mixer + FFN 3072, conv pos-emb, post-LN); mixer = one token "
           "mixer alone. MACs = XLA cost-analysis FLOPs / 2 of the step lowered with the layers "
           "unrolled and attention unchunked (XLA counts a loop body once). Peak = XLA "
           "memory_analysis "
           "temp + argument bytes. Exponent = slope of log(cost) vs log(length) for lengths "
           f">= {meta['fit_min_seconds']:g} s (\"all\": every length).", ""]
  if meta.get("note"):
    lines += [meta["note"], ""]
  reused = sorted({(sc, r["seconds"]) for sc, by in results.items() for rows in by.values()
                   for r in rows if r.get("reused")})
  skipped = [(sc, n, r["seconds"]) for sc, by in results.items() for n, rows in by.items()
             for r in rows if r.get("skipped")]
  if reused:
    lines += ["Rows measured by an earlier run of this script on the same machine and day "
              "(timings reused, MACs recounted; mixers of one length were interleaved within "
              "that run): " + ", ".join(
                  f"{sc} {sec:g} s" for sc, sec in reused) + ".", ""]
  if skipped:
    lines += ["Not run (XLA peak above the free-RAM guard; MACs and memory still reported): "
              + ", ".join(f"{sc}/{n} {sec:g} s" for sc, n, sec in skipped) + ".", ""]
  targets = check_targets(results, fits)
  if targets:
    lines += ["Targets (issue #5): CPU-time exponent <= 1.15 and, at 60 s, >= 3x less CPU time "
              "per step than mha.", "",
              "| scope | mixer | CPU-time exponent | MACs exponent | speed-up at 60 s (CPU) "
              "| (wall) | exponent target | speed-up target |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    for t in targets:
      lines.append(f"| {t['scope']} | {t['mixer']} | {t['exponent']:.2f} | "
                   f"{t['macs_exponent']:.2f} | {t['speedup']:.2f}x | {t['speedup_wall']:.2f}x | "
                   f"{'met' if t['exponent_ok'] else 'missed'} | "
                   f"{'met' if t['speedup_ok'] else 'missed'} |")
    lines.append("")
  for scope, by_name in results.items():
    names = [n for n in by_name if n != PEER]
    lines += [f"## {scope}", "",
              "| audio s | frames | " + " | ".join(
                  f"{n} CPU s | {n} wall s | {n} GMACs | {n} peak MB" for n in names)
              + (f" | {PEER} CPU s | {PEER} wall s" if PEER in by_name else "") + " |",
              "|---:|---:|" + "---:|" * (4 * len(names) + (2 if PEER in by_name else 0))]
    for i, row0 in enumerate(by_name[names[0]]):
      cells = [f"{row0['seconds']:g}", str(row0["frames"])]
      for n in names:
        r = by_name[n][i]
        cells += [f"{r['cpu_s']:.3f}", f"{r['wall_s']:.3f}", f"{r['macs'] / 1e9:.1f}",
                  f"{r['peak_bytes'] / 2**20:.0f}"]
      if PEER in by_name:
        r = by_name[PEER][i]
        cells += [f"{r['cpu_s']:.3f}", f"{r['wall_s']:.3f}"]
      lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Speed-up over mha ({scope}, CPU time per step; wall in brackets):", "",
              "| audio s | " + " | ".join(n for n in names if n != "mha") + (
                  " | HF peer / mha |" if PEER in by_name else " |"),
              "|---:|" + "---:|" * (len(names) - 1 + (1 if PEER in by_name else 0))]
    if "mha" in by_name:
      for i, ref in enumerate(by_name["mha"]):
        cells = [f"{ref['seconds']:g}"]
        for n in names:
          if n != "mha":
            r = by_name[n][i]
            cells.append(f"{ref['cpu_s'] / r['cpu_s']:.2f}x ({ref['wall_s'] / r['wall_s']:.2f}x)")
        if PEER in by_name:
          p = by_name[PEER][i]
          cells.append(f"{p['cpu_s'] / ref['cpu_s']:.2f}x ({p['wall_s'] / ref['wall_s']:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Scaling exponents ({scope}):", "",
              "| mixer | CPU time | CPU time (all) | wall time | MACs | peak memory |",
              "|---|---:|---:|---:|---:|---:|"]
    for n in by_name:
      f = fits[f"{scope}/{n}"]
      lines.append(f"| {n} | {f['cpu_s']:.2f} | {f['cpu_s_all_lengths']:.2f} | "
                   f"{f['wall_s']:.2f} | {f['macs']:.2f} | {f['peak_bytes']:.2f} |")
    lines.append("")
  return "\n".join(lines)


def plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = [(s, q, lbl) for s in results for q, lbl in (
      ("cpu_s", "CPU s / step"), ("macs", "MACs / step"), ("peak_bytes", "peak bytes"))]
  fig, axes = plt.subplots(len(results), 3, figsize=(15, 4.5 * len(results)), squeeze=False)
  for ax, (scope, q, label) in zip(axes.flat, panels):
    for name, rows in results[scope].items():
      if q not in rows[0]:
        continue
      ax.loglog([r["seconds"] for r in rows], [r[q] for r in rows], "o-", label=name)
    ax.set_xlabel("audio seconds (50 frames/s)")
    ax.set_ylabel(label)
    ax.set_title(f"{scope}: {label}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  seconds = [float(s) for s in FLAGS.seconds]
  lengths = [int(round(s * FRAMES_PER_SEC)) for s in seconds]
  meta = dict(date=time.strftime("%Y-%m-%d"), load_start=os.getloadavg()[0],
              cores=os.cpu_count(), backend=jax.default_backend(), remat=FLAGS.remat,
              fit_min_seconds=FLAGS.fit_min_seconds, python=platform.python_version(),
              cpu=subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True,
                                 capture_output=True, text=True).stdout.strip() or "unknown",
              device=str(jax.devices()[0].device_kind))
  versions = [f"jax {jax.__version__}"]
  peer = None
  if FLAGS.peer and "encoder" in FLAGS.scopes:
    peer = TorchPeer(FLAGS.remat)
    versions.append(peer.version)
  meta["versions"] = ", ".join(versions)
  reused = load_reused(FLAGS.reuse_log)
  meta["reused_rows"] = len(reused)
  meta["note"] = FLAGS.note
  results = {}
  for scope in FLAGS.scopes:
    steps, params = {}, {}
    for name in FLAGS.mixers:
      init, steps[name] = make_step(scope, name, FLAGS.remat)
      params[name] = jax.jit(init)(jax.random.key(1), jnp.zeros((1, 50, 768)),
                                   jnp.ones((1, 50), bool))
    by_name = {}
    for t in lengths:
      rows = measure_length(scope, t, steps, params, peer if scope == "encoder" else None,
                            reused)
      for name, row in rows.items():
        by_name.setdefault(name, []).append(row)
        print(json.dumps(dict(scope=scope, mixer=name, **row)), flush=True)
    results[scope] = by_name
  meta["load_end"] = os.getloadavg()[0]
  fits = summarize(results, FLAGS.fit_min_seconds)
  md = markdown(results, fits, meta)
  print(md)
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
    with open(FLAGS.out + ".json", "w") as f:
      json.dump(dict(meta=meta, results=results, exponents=fits,
                     targets=check_targets(results, fits)), f, indent=1)
    with open(FLAGS.out + ".md", "w") as f:
      f.write(md)
    plot(results, FLAGS.out + ".png")


if __name__ == "__main__":
  define_flags()
  app.run(main)
