"""One of two JAX processes (4 CPU devices each) training the stand-in; run by test_multiprocess.

  python -m tests.training.multiprocess_worker PROCESS_ID PORT WORKDIR [standin|wav2vec2]
"""
import sys

import jax


def main(process_id, port, workdir, kind="standin"):
  # Must precede any backend use; jax.distributed.initialize (in the trainer) comes next.
  jax.config.update("jax_num_cpu_devices", 4)
  from jaxssl import pretrain  # pylint: disable=g-import-not-at-top
  from tests.training import standin  # pylint: disable=g-import-not-at-top
  config, objective, source = standin.setup(kind)
  with config.unlocked():
    config.distributed = dict(coordinator=f"127.0.0.1:{port}", num_processes=2,
                              process_id=process_id)
  out = pretrain.train_and_evaluate(config, workdir, objective=objective, source=source)
  assert jax.process_count() == 2 and len(jax.local_devices()) == 4, jax.devices()
  print(f"process {process_id} done at step {out['step']}", flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:])
