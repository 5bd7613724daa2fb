"""What a fresh LightHuBERT subnet every step costs: the masked supernet against fixed-size models.

  python -m experiments.benchmarks.lighthubert_masked [--space=small] [--seconds=4] [--steps=5]

The masked supernet (jaxssl/distill/masked.py) runs every subnet at the supernet's full size in
one compiled program. This times a training step's forward and backward (mean square of the
encoder output, one crop of --seconds, CPU) of
  masked   the supernet under a different uniformly drawn subnet each step;
  full     the supernet's own shape built standalone (HuBERT BASE's, 768-d): what the masks
           cost on top of the full-size network;
  largest  the space's largest subnet built standalone (Small: 512-d);
  default  the space's default subnet built standalone: what sampling costs against training
           one fixed small model.
Interleaved, median over --steps. There is no LightHuBERT in HF transformers to compare against;
the ratios are within jaxssl. Writes experiments/benchmarks/results/lighthubert_masked.{json,md}.
"""
import json
import os
import platform
import statistics
import sys
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs.distill import lighthubert as lighthubert_config
from jaxssl.distill import lighthubert
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import student as student_lib
from jaxssl.distill import supernet

_SPACE = flags.DEFINE_string("space", "small", "Search space (base or small).")
_SECONDS = flags.DEFINE_float("seconds", 4.0, "Crop length.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per model.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(__file__), "results"), "Output.")


def _batch(seconds):
  s = int(16_000 * seconds)
  return {"audio": jnp.asarray(np.random.default_rng(0).standard_normal((1, s)), jnp.float32),
          "valid": jnp.ones((1, s), bool)}


def _timed(fn, *args):
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def main(argv):
  del argv
  config = lighthubert_config.get_config(f"space={_SPACE.value}")
  space = supernet.get_space(_SPACE.value)
  batch = _batch(_SECONDS.value)
  ours = lighthubert.LightHubertObjective(config)
  params = nn.unbox(jax.jit(ours.init)(jax.random.key(0), batch))

  model, valid = ours.model, ours.represent(params, batch)[2]

  @jax.jit
  def masked_step(p, rng):
    def loss(p):
      out = model.apply({"params": p}, batch["audio"], valid=valid,
                        subnet=supernet.sample(rng, space), train=False, predict=False)
      return jnp.mean(jnp.square(out["x"]))
    return jax.grad(loss)(p)

  steps = {"masked": lambda i: masked_step(params, jax.random.key(i))}
  full = student_lib.Subnet.uniform(space.embed_dim, space.num_heads,
                                    space.mlp_dim / space.embed_dim, space.num_layers,
                                    space.head_dim)
  for name, subnet in (("full", full), ("largest", space.largest),
                       ("default", space.default_subnet)):
    standalone = objective_lib.DistillObjective(supernet.subnet_config(config, subnet), subnet)
    sub_params = supernet.subnet_params(params, subnet, space)

    def step(p, obj=standalone):
      return jax.grad(lambda q: jnp.mean(jnp.square(obj.represent(q, batch)[0])))(p)

    fn = jax.jit(step)
    steps[name] = lambda i, fn=fn, p=sub_params: fn(p)
  compile_s = {k: _timed(f, 0) for k, f in steps.items()}
  times = {k: [] for k in steps}
  for i in range(1, _STEPS.value + 1):
    for k, f in steps.items():
      times[k].append(_timed(f, i))
  med = {k: statistics.median(v) for k, v in times.items()}
  result = dict(space=_SPACE.value, seconds=_SECONDS.value, steps=_STEPS.value,
                machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                backend=jax.default_backend(), median_step_s=med, first_call_s=compile_s,
                masked_over_full=med["masked"] / med["full"],
                masked_over_largest=med["masked"] / med["largest"],
                masked_over_default=med["masked"] / med["default"])
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "lighthubert_masked.json"), "w") as f:
    json.dump(result, f, indent=2)
  lines = [f"LightHuBERT training-step cost ({_SPACE.value} space, one {_SECONDS.value:g} s crop, "
           f"forward + backward, {jax.default_backend()}, {result['machine']}; median of "
           f"{_STEPS.value}, interleaved)", "",
           "| model | step s | vs masked |", "| --- | ---: | ---: |"]
  for k in ("masked", "full", "largest", "default"):
    lines.append(f"| {k} | {med[k]:.2f} | {med[k] / med['masked']:.2f}x |")
  with open(os.path.join(_OUT.value, "lighthubert_masked.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
