"""Teacher-output caching vs running the teacher in every distillation step: what it saves.

  python -m experiments.benchmarks.distill_cache --teacher=workdir/hubert_demo/iter2 \
      --cache_dir=/tmp/distill_cache

Two settings, each timing the compiled distillation step (the engine's `train_step` with the
`distill` objective's teacher hooks) with the teacher inside (online) and with the targets read
from a cache (cached), interleaved step by step, median over `--steps`:
  demo: configs/distill/demo.py (the demo HuBERT teacher, 3 layers, 2-layer student), batches of
        8 x 2 s; the cache is really built (`jaxssl.distill.cache.build`, float16 targets) and
        read back through `CachedLoader`, so its build time, size on disk and read time are
        measured too;
  real: DistilHuBERT (configs/distill/distilhubert.py) with a random-weight HuBERT BASE teacher,
        one 4 s crop per step (CPU-sized; the ratio is what carries over), targets in memory;
        bytes per batch are computed for the reference batch (24 x 250k samples, 3 layers,
        float16).
Writes experiments/benchmarks/results/distill_cache.{json,md}.
"""
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs.distill import demo
from configs.distill import distilhubert
from configs.hubert import base as hubert_base
from jaxssl import objectives
from jaxssl.distill import cache as cache_lib
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import teacher as teacher_lib
from jaxssl.models import variants
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step

_TEACHER = flags.DEFINE_string("teacher", "workdir/hubert_demo/iter2", "Demo teacher.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "/tmp/distill_cache", "Demo cache directory.")
_BATCHES = flags.DEFINE_integer("num_batches", 16, "Demo batches to cache.")
_STEPS = flags.DEFINE_integer("steps", 8, "Timed steps per mode (median).")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments/benchmarks/results"),
                           "Output directory.")


def _steps(config, teacher, batches):
  """Median seconds of the online and the cached step over `batches` (global, with targets)."""
  mesh = partitioning.make_mesh(config.mesh)
  tx, schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  sharding = partitioning.batch_sharding(mesh)
  spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batches[0].items()}
  fns, states, consts = {}, {}, {}
  for mode in ("online", "cached"):  # The engine's step, with and without the teacher in it.
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.distill.cache_dir = "" if mode == "online" else "<cached>"
    objective = objective_lib.DistillObjective(c, teacher=teacher)
    consts[mode], consts_sharding = objective.constants(mesh, partitioning.LOGICAL_AXIS_RULES)
    states[mode], shardings = train_state.create(objective, tx, spec, 0, mesh)
    fns[mode] = train_step.make_train_step(
        mesh, shardings, sharding, constants_sharding=consts_sharding, objective=objective,
        tx=tx, lr_schedule=schedule)
  times = {m: [] for m in fns}
  for i in range(len(batches)):
    for mode in fns:
      batch = batches[i]
      if mode == "online":
        batch = {k: v for k, v in batch.items() if k != "targets"}
      start = time.perf_counter()
      states[mode], m = fns[mode](states[mode], consts[mode], batch)
      jax.block_until_ready(m)
      if i:  # Step 0 compiles.
        times[mode].append(time.perf_counter() - start)
  return {m: statistics.median(t) for m, t in times.items()}


def demo_setting():
  config = demo.get_config(f"teacher={_TEACHER.value}")
  meta = cache_lib.build(config, _CACHE_DIR.value, num_batches=_BATCHES.value,
                         batches_per_shard=8, dtype="float16")
  loader = cache_lib.CachedLoader(_CACHE_DIR.value, config=config)
  read, batches = [], []
  for _ in range(_STEPS.value + 1):
    start = time.perf_counter()
    local = next(loader)
    read.append(time.perf_counter() - start)
    batches.append({k: jax.numpy.asarray(local[k]) for k in ("audio", "valid", "targets")})
  mesh = partitioning.make_mesh(config.mesh)
  teacher = teacher_lib.load_teacher(_TEACHER.value, layers=config.distill.target_layers,
                                     mesh=mesh)
  step = _steps(config, teacher, batches)
  return dict(batch=[config.data.batch_size, config.data.crop_samples],
              target_layers=list(config.distill.target_layers),
              cache_build_sec_per_batch=meta["teacher_sec_per_batch"],
              cache_bytes_per_batch=meta["bytes_per_batch"],
              cache_read_sec_per_batch=statistics.median(read[1:]), **_summary(step))


def real_setting():
  config = distilhubert.get_config()
  t_config = hubert_base.get_config("iteration=2")
  mesh = partitioning.make_mesh(config.mesh)
  obj = objectives.build(t_config)
  n = 64_000
  batch = {"audio": jax.random.normal(jax.random.PRNGKey(0), (1, n)) * 0.1,
           "valid": jax.numpy.ones((1, n), bool)}
  params = jax.jit(obj.init)(jax.random.PRNGKey(0), batch)
  teacher = teacher_lib.from_params(t_config, nn.unbox(params),
                                    layers=(4, 8, 12), mesh=mesh)
  targets = jax.jit(teacher.targets)(teacher.params, batch)
  batches = [dict(batch, targets=targets)] * (_STEPS.value + 1)
  with config.unlocked():
    config.data.batch_size, config.data.crop_samples = 1, n
  step = _steps(config, teacher, batches)
  frames = variants.frames_for(250_000)
  ref_bytes = 24 * 3 * frames * 768 * 2  # float16 targets of the s3prl batch.
  return dict(batch=[1, n], target_layers=[4, 8, 12],
              reference_batch_target_bytes=ref_bytes, **_summary(step))


def _summary(step):
  return dict(online_step_sec=step["online"], cached_step_sec=step["cached"],
              saving=1.0 - step["cached"] / step["online"],
              speedup=step["online"] / step["cached"])


def render(out):
  d, r = out["demo"], out["real"]
  return "\n".join([
      "# Teacher-output cache vs online teacher (distillation step, CPU)", "",
      "Median step time over interleaved steps on this shared 2-core machine "
      "(`python -m experiments.benchmarks.distill_cache`).", "",
      "| setting | batch | online step s | cached step s | saving | speed-up |",
      "|---|---|---:|---:|---:|---:|",
      f"| demo: 3-layer demo HuBERT -> 2-layer student | {d['batch'][0]} x {d['batch'][1]} | "
      f"{d['online_step_sec']:.3f} | {d['cached_step_sec']:.3f} | {d['saving']:.0%} | "
      f"{d['speedup']:.2f}x |",
      f"| real: HuBERT BASE -> DistilHuBERT (random weights) | {r['batch'][0]} x {r['batch'][1]} "
      f"| {r['online_step_sec']:.3f} | {r['cached_step_sec']:.3f} | {r['saving']:.0%} | "
      f"{r['speedup']:.2f}x |", "",
      f"Demo cache: built at {d['cache_build_sec_per_batch']:.3f} s/batch (the teacher's "
      f"forward, paid once), {d['cache_bytes_per_batch'] / 1e6:.2f} MB/batch on disk (float16 "
      f"targets + float32 audio), read back in {d['cache_read_sec_per_batch'] * 1e3:.1f} ms/batch "
      "(one shard in memory).",
      f"At the reference batch (24 x 250k samples, layers 4/8/12, float16) the targets alone "
      f"take {r['reference_batch_target_bytes'] / 1e6:.0f} MB per batch: "
      f"{r['reference_batch_target_bytes'] * 200_000 / 1e12:.1f} TB for 200k distinct steps, so "
      "a cache pays off when the same crops are revisited for several epochs.", ""])


def main(argv):
  del argv
  out = dict(demo=demo_setting(), real=real_setting(), steps=_STEPS.value)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "distill_cache.json"), "w") as f:
    json.dump(out, f, indent=1)
  with open(os.path.join(_OUT.value, "distill_cache.md"), "w") as f:
    f.write(render(out))
  print(render(out))


if __name__ == "__main__":
  app.run(main)
