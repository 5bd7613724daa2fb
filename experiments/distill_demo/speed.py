"""Encoder parameters and CPU inference time of distilled models against their teachers.

`measure(models)` times `represent` (all hidden states, no heads) on one utterance of
`seconds` of audio for each model, interleaved round by round (so a load spike on the shared
machine hits every model alike), and reports the median, beside the forward's multiply-adds per
second of speech (XLA's count, `training.flops.macs_per_second`), which no load changes.
`real_size_models()` builds the reference architectures with random weights: HuBERT BASE,
DistilHuBERT and the LightHuBERT Base and Small default subnets (docs/reference.md).
"""
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs.distill import distilhubert
from configs.distill import lighthubert
from configs.hubert import base as hubert_base
from jaxssl import objectives
from jaxssl.distill import supernet
from jaxssl.training import flops


def encoder_params(params):
  """Parameters of the encoder only: no pretraining heads (final_proj, label embeddings,
  quantizer) and no distillation heads."""
  if "speech_encoder" in params:
    params = params["speech_encoder"]
  return sum(int(x.size) for k, v in params.items() if k != "heads" for x in jax.tree.leaves(v))


def random_model(config, seed=0):
  """(config, params) of a config's objective with random weights."""
  objective = objectives.build(config)
  batch = {"audio": jnp.zeros((1, 16_000)), "valid": jnp.ones((1, 16_000), bool)}
  return config, nn.unbox(jax.jit(objective.init)(jax.random.PRNGKey(seed), batch))


def real_size_models():
  """name -> (config, params): HuBERT BASE, DistilHuBERT, LightHuBERT Base / Small defaults."""
  out = {"HuBERT BASE (teacher)": random_model(hubert_base.get_config("iteration=2")),
         "DistilHuBERT": random_model(distilhubert.get_config())}
  for space in ("base", "small"):
    sub = supernet.get_space(space).default_subnet
    config = supernet.subnet_config(lighthubert.get_config(f"space={space}"), sub)
    out[f"LightHuBERT {space.capitalize()} (default subnet)"] = random_model(config)
  return out


def measure(models, *, seconds=10.0, runs=5):
  """{name: dict(params, median_sec, runs_sec)} for `models` {name: (config, params)}."""
  n = int(seconds * 16_000)
  batch = {"audio": jax.random.normal(jax.random.PRNGKey(0), (1, n)) * 0.1,
           "valid": jnp.ones((1, n), bool)}
  fns = {}
  for name, (config, params) in models.items():
    objective = objectives.build(config)
    fn = jax.jit(lambda p, b, o=objective: o.represent(p, b)[1])
    jax.block_until_ready(fn(params, batch))  # Compile and warm up.
    fns[name] = fn
  times = {name: [] for name in models}
  for _ in range(runs):
    for name, (_, params) in models.items():
      start = time.perf_counter()
      jax.block_until_ready(fns[name](params, batch))
      times[name].append(time.perf_counter() - start)
  return {name: dict(params=encoder_params(models[name][1]),
                     macs_per_sec=flops.macs_per_second(objectives.build(models[name][0])),
                     median_sec=statistics.median(times[name]), runs_sec=times[name])
          for name in models}


def relative(rows, reference):
  """Adds param_reduction, time_reduction and speedup against `rows[reference]`."""
  ref = rows[reference]
  for row in rows.values():
    row["param_reduction"] = 1.0 - row["params"] / ref["params"]
    row["macs_reduction"] = 1.0 - row["macs_per_sec"] / ref["macs_per_sec"]
    row["time_reduction"] = 1.0 - row["median_sec"] / ref["median_sec"]
    row["speedup"] = ref["median_sec"] / row["median_sec"]
  return rows
