"""Compiles every pod recipe for its TPU topology and writes the README's planning table.

  python experiments/tpu_plan/plan.py                       # all recipes (an hour on 2 cores)
  python experiments/tpu_plan/plan.py --only=wav2vec2_base  # one recipe (runs can go in parallel)
  python experiments/tpu_plan/plan.py --no_compile          # state and FLOPs only, no XLA compile

Each recipe in configs/pods/ is compiled by `jaxssl.aot.plan` (the trainer's own train step,
abstract inputs, XLA's TPU compiler from PyPI's libtpu; no TPU involved) for the slice in its `tpu`
section. Each recipe's result goes to results/<recipe>.json (with the machine and library versions
that produced it, and the compile's wall and CPU time) and the table in results/plan.md is
rendered from those files only, so the README numbers are the ones the compiler printed.
Predicted step times assume the stated MFU of the chip's peak bf16 FLOP/s (MFU as defined in
PaLM, https://arxiv.org/abs/2204.02311, Appendix B).
"""
import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from jaxssl import aot  # pylint: disable=g-import-not-at-top,wrong-import-position

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# (table name, configs/pods module, get_config argument)
RECIPES = (
    ("wav2vec2_base", "wav2vec2_base", None),
    ("hubert_base", "hubert_base", "iteration=2"),
    ("wav2vec2_large", "wav2vec2_large", None),
    ("xlsr_1b", "xlsr_1b", None),
    ("xlsr_2b", "xlsr_2b", None),
    ("best_rq_base", "best_rq_base", None),
    ("data2vec2_base", "data2vec2_base", None),
)


def _cpu_model():
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines()
                if ln.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    return platform.processor() or "unknown"


def _versions():
  return {p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "libtpu", "flax")}


def run_recipe(module, arg, mfu, compile_step=True):
  """aot.plan for one recipe; a recipe that does not fit is recorded with the error text."""
  config = importlib.import_module(f"configs.pods.{module}").get_config(arg)
  start, cpu = time.perf_counter(), time.process_time()
  entry = dict(config=f"configs/pods/{module}.py" + (f":{arg}" if arg else ""),
               topology=config.tpu.topology, accelerator_type=config.tpu.accelerator_type)
  try:
    entry.update(aot.plan(config, config.tpu.topology, mfu=mfu, compile_step=compile_step),
                 fits=True)
  except aot.DoesNotFit as e:
    entry.update(fits=False, error=str(e))
  entry.update(wall_sec=time.perf_counter() - start, cpu_sec=time.process_time() - cpu,
               machine=f"{_cpu_model()}, {os.cpu_count()} cores", versions=_versions(),
               date=datetime.date.today().isoformat())
  return entry


def _gib(n):
  return f"{n / 2 ** 30:.2f}"


def render(results):
  """The markdown table (one row per recipe, in RECIPES order) from plan.json's entries."""
  rows = [
      "| recipe | slice | mesh (data, fsdp, tensor) | params | batch | per-chip args / temps / "
      "peak GiB (of HBM) | FLOPs/step | step s (MFU) | audio h/h | days (steps) |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, _, _ in RECIPES:
    r = results.get(name)
    if r is None:
      continue
    if not r["fits"]:
      rows.append(f"| {name} | {r['accelerator_type']} | does not fit: "
                  f"{r['error'].splitlines()[0]} | | | | | | | |")
      continue
    m = r["mesh"]
    b, s = r["batch_shape"]
    if r.get("compiled", True):  # Entries from before --no_compile existed were compiled.
      memory = (f"{_gib(r['argument_bytes'])} / {_gib(r['temp_bytes'])} / "
                f"{_gib(r['peak_bytes'])} ({_gib(r['hbm_bytes'])})")
    else:
      memory = f"state {_gib(r['state_bytes'])} ({_gib(r['hbm_bytes'])}), not compiled"
    rows.append(
        f"| `{r['config']}` | {r['accelerator_type']} (`{r['topology']}`) | "
        f"{m['data']}, {m['fsdp']}, {m['tensor']} | {r['num_params'] / 1e6:,.1f}M | "
        f"{b} x {s / 16000:.1f} s | {memory} | {r['flops_per_step']:.3g} | "
        f"{r['step_sec']:.2f} ({r['mfu']:.2f}) | {r['audio_hours_per_hour']:,.0f} | "
        f"{r['days_total']:.1f} ({r['total_steps'] // 1000}k) |")
  first = next(iter(results.values()), {})
  rows.append("")
  rows.append(f"Planned with jax {first.get('versions', {}).get('jax')}, libtpu "
              f"{first.get('versions', {}).get('libtpu')} on {first.get('machine')}; "
              "peak = arguments + outputs - donated aliases + temporaries, per chip (XLA's memory "
              "analysis); FLOPs = matmuls and convolutions of the traced step, remat recompute "
              "included; step time = per-chip FLOPs / (peak bf16 FLOP/s x MFU).")
  return "\n".join(rows) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="Comma-separated recipe names to (re)compile.")
  parser.add_argument("--mfu", type=float, default=0.4)
  parser.add_argument("--render_only", action="store_true",
                      help="Only re-render results/plan.md from the results/*.json files.")
  parser.add_argument("--no_compile", action="store_true",
                      help="State and FLOPs only (seconds); no compiled memory figures.")
  args = parser.parse_args()
  only = [n for n in args.only.split(",") if n]
  unknown = sorted(set(only) - {n for n, _, _ in RECIPES})
  if unknown:
    parser.error(f"unknown recipes {unknown}; choose from {[n for n, _, _ in RECIPES]}")
  RESULTS.mkdir(parents=True, exist_ok=True)
  for name, module, arg in RECIPES:
    if (only and name not in only) or args.render_only:
      continue
    print(f"compiling {name} ...", flush=True)
    entry = run_recipe(module, arg, args.mfu, compile_step=not args.no_compile)
    entry["total_steps"] = importlib.import_module(f"configs.pods.{module}").get_config(
        arg).total_steps
    (RESULTS / f"{name}.json").write_text(json.dumps(entry, indent=1) + "\n")
    print(aot.format_plan(entry) if entry["fits"] else entry["error"], flush=True)
  results = {name: json.loads((RESULTS / f"{name}.json").read_text())
             for name, _, _ in RECIPES if (RESULTS / f"{name}.json").exists()}
  (RESULTS / "plan.md").write_text(render(results))
  print(render(results))


if __name__ == "__main__":
  main()
