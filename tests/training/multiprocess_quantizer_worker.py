"""One of two JAX processes (4 CPU devices each) building BEST-RQ's frozen quantizer as the trainer
places it; run by test_multiprocess.py.

  python -m tests.training.multiprocess_quantizer_worker PROCESS_ID PORT WORKDIR

Joins the 2-process job (`engine.init_distributed`), then for objective.quantizer_seed and that
seed + 1 builds the objective state of configs/best_rq/demo.py:runlocal on the global (2, 2, 2)
mesh (`Objective.init_state`, jitted into the shardings the engine derives for it), checks that
this process's 4 devices hold the same replica, and writes the sha256 of that replica per seed
and array to WORKDIR/digests_<PROCESS_ID>.json (process 0 also writes the arrays, .npz).
"""
import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from configs.best_rq import demo
from jaxssl import objectives
from jaxssl.training import engine
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state


def local_replica(x):
  """This process's copy of a replicated global array; every local device's copy must match."""
  copies = [np.asarray(s.data) for s in x.addressable_shards]
  assert len(copies) == 4 and all(c.shape == x.shape for c in copies), x.sharding
  for c in copies[1:]:
    np.testing.assert_array_equal(c, copies[0])
  return copies[0]


def main(process_id, port, workdir):
  jax.config.update("jax_num_cpu_devices", 4)  # Before the backend starts.
  config = demo.get_config("runlocal")
  with config.unlocked():
    config.mesh = common.mesh(2, 2, 2)
    config.distributed = dict(coordinator=f"127.0.0.1:{port}", num_processes=2,
                              process_id=process_id)
  engine.init_distributed(config)
  assert jax.process_count() == 2 and len(jax.local_devices()) == 4, jax.devices()
  mesh = partitioning.make_mesh(config.mesh)
  tx, _ = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  spec = {k: jax.ShapeDtypeStruct((8, 8_000), d, sharding=partitioning.batch_sharding(mesh))
          for k, d in (("audio", jnp.float32), ("valid", jnp.bool_))}
  digests, arrays = {}, {}
  for seed in (config.objective.quantizer_seed, config.objective.quantizer_seed + 1):
    with config.unlocked():
      config.objective.quantizer_seed = seed
    objective = objectives.build(config)
    boxed = train_state.abstract(objective, tx, spec)
    sharding = partitioning.state_shardings(boxed, mesh).objective_state
    state = jax.jit(lambda o=objective: o.init_state(None), out_shardings=sharding)()
    for name, x in state["quantizer"].items():
      arrays[f"{seed}/{name}"] = local_replica(x)
      digests[f"{seed}/{name}"] = hashlib.sha256(arrays[f"{seed}/{name}"].tobytes()).hexdigest()
  with open(os.path.join(workdir, f"digests_{process_id}.json"), "w") as f:
    json.dump(digests, f)
  if process_id == 0:
    np.savez(os.path.join(workdir, "quantizers.npz"), **arrays)
  print(f"process {process_id} wrote {len(digests)} digests", flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
