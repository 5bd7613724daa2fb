"""Step time and memory of one CTC fine-tuning step with each PEFT method next to full FT.

  python experiments/peft_demo/benchmark.py --arch=configs/wav2vec2/base.py \
      --batch=2 --seconds=4 --steps=5 --out=/tmp/peft_base.json

For every method the real fine-tuning pieces are built as `evaluation.finetune.finetune` builds them
(CTCObjective with the demo recipe's dropouts and time masks, `optimizers.make_finetune_optimizer`, the PEFT
wrapper and AdaLoRA's allocator, `train_state.create`, `train_step.make_train_step`), on one
device, from random weights of the architecture (`--arch`: a config file or a checkpoint dir).
Reported per method:
  - trainable / total parameters, optimizer-state bytes (Adam moments of the trained leaves);
  - XLA's memory_analysis of the compiled step: arguments (params + optimizer state + batch),
    temporaries (activations kept for the backward pass, gradients, workspace) and the peak
    estimate arguments + outputs - aliased (donated) + temporaries;
  - the median wall-clock and process-CPU seconds of `--steps` timed steps after one warm-up.
The encoder is trained from the first step (freeze_encoder_steps 0): the steady-state step.
"""
import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs.finetune import ctc_demo  # pylint: disable=wrong-import-position
from jaxssl import constants  # pylint: disable=wrong-import-position
from jaxssl import pretrained  # pylint: disable=wrong-import-position
from jaxssl.evaluation import finetune  # pylint: disable=wrong-import-position
from jaxssl.evaluation import finetune_objectives  # pylint: disable=wrong-import-position
from jaxssl.models import variants  # pylint: disable=wrong-import-position
from jaxssl.peft import objective as peft_objective  # pylint: disable=wrong-import-position
from jaxssl.training import optimizers  # pylint: disable=wrong-import-position
from jaxssl.training import partitioning  # pylint: disable=wrong-import-position
from jaxssl.training import train_state  # pylint: disable=wrong-import-position
from jaxssl.training import train_step  # pylint: disable=wrong-import-position

METHODS = ("full", "lora", "adalora", "ladder")
VOCAB = 50
LABEL_LEN = 32


def _batch(batch, samples, seed=0):
  rng = np.random.default_rng(seed)
  return {"audio": rng.standard_normal((batch, samples)).astype(np.float32),
          "valid": np.ones((batch, samples), bool),
          "labels": rng.integers(1, VOCAB, (batch, LABEL_LEN)).astype(np.int32),
          "label_valid": np.ones((batch, LABEL_LEN), bool),
          "rows": np.ones(batch, np.float32)}


def measure(arch, method, *, batch, seconds, steps, total_steps=1000):
  """One method's numbers (see the module docstring) as a dict."""
  config = ctc_demo.get_config(f"peft={method}")
  up_config = pretrained.load_config(arch)
  model_config = finetune._model_config(up_config, config.model)  # pylint: disable=protected-access
  objective = finetune_objectives.CTCObjective(model_config, config.masking, VOCAB)
  tx, lr_schedule = optimizers.make_finetune_optimizer(config.optim, config.schedule, total_steps,
                                                       heads=finetune_objectives.HEADS)
  objective = peft_objective.wrap(objective, config.peft, model_config)
  tx = peft_objective.wrap_optimizer(tx, config.peft, total_steps)

  mesh = partitioning.make_mesh(config.mesh, devices=jax.devices()[:1])
  rules = partitioning.logical_axis_rules(())
  batch_sharding = partitioning.batch_sharding(mesh)
  local = _batch(batch, int(seconds * constants.SAMPLE_RATE))
  state, state_sharding = train_state.create(
      objective, tx, partitioning.abstract_batch(local, batch_sharding), 0, mesh, rules)
  info = peft_objective.report(state.params, state.opt_state, config.optim.trainable)
  step = train_step.make_train_step(mesh, state_sharding, batch_sharding, rules=rules,
                                    objective=objective, tx=tx, lr_schedule=lr_schedule)
  global_batch = partitioning.make_global_batch(local, batch_sharding)
  t0 = time.perf_counter()
  compiled = step.lower(state, {}, global_batch).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  args, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
  alias, temp = mem.alias_size_in_bytes, mem.temp_size_in_bytes
  state, metrics = compiled(state, {}, global_batch)  # Warm-up.
  jax.block_until_ready(metrics)
  walls, cpus = [], []
  for _ in range(steps):
    w, c = time.perf_counter(), time.process_time()
    state, metrics = compiled(state, {}, global_batch)
    jax.block_until_ready(metrics)
    walls.append(time.perf_counter() - w)
    cpus.append(time.process_time() - c)
  info.update(
      method=method, arch=arch, batch=batch, seconds=seconds,
      frames=int(variants.frames_for(int(seconds * constants.SAMPLE_RATE))), compile_s=compile_s,
      argument_bytes=int(args), output_bytes=int(out), alias_bytes=int(alias),
      temp_bytes=int(temp), peak_bytes=int(args + out - alias + temp),
      step_wall_s=statistics.median(walls), step_cpu_s=statistics.median(cpus),
      loss=float(metrics["train/loss"]), device=jax.devices()[0].device_kind)
  return info


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--arch", required=True, help="config file or checkpoint directory")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  rows = []
  for method in args.methods.split(","):
    row = measure(args.arch, method, batch=args.batch, seconds=args.seconds, steps=args.steps)
    print(json.dumps({k: v for k, v in row.items() if k != "arch"}), flush=True)
    rows.append(row)
    with open(args.out, "w") as f:  # After each method, so an interrupted run keeps its rows.
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
