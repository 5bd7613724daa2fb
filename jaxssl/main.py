"""jaxssl's entry point: one config file, one workdir.

  python -m jaxssl.main --config=configs/wav2vec2/demo.py --workdir=workdir/demo \
      [--config.optim.lr=1e-3 ...] [--dry_run]

Configs are Python files with `get_config(arg)` (`--config=file.py:arg`), locked so that a
mistyped override fails with the closest valid names. `--dry_run` builds the model, optimizer and
compiled train step from abstract shapes only and prints one JSON line (parameters, FLOPs/step).

Exit status, for schedulers: 0 the run finished; 75 (EX_TEMPFAIL) SIGTERM stopped it after saving a
checkpoint, so requeue the same command to resume; 1 it cannot go on (missing data, a diverged
run, no intact checkpoint: the message says what to do); 2 the command line or config is wrong.
"""
import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxssl import cli
from jaxssl import pretrain
from jaxssl import validate
from jaxssl.training import checkpointing

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: saved and stopped on SIGTERM; the same command resumes.

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Build from abstract shapes, train nothing.")


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<file>.py is required.")
  try:
    pretrain.check(config)
  except validate.ConfigError as e:
    print(f"error: invalid config: {e}", file=sys.stderr)
    sys.exit(2)
  if _DRY_RUN.value:
    print(json.dumps(pretrain.dry_run(config)))
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (unless --dry_run).")
  cli.say(f"config: {os.path.join(_WORKDIR.value, 'config.json')}")
  try:
    result = pretrain.train_and_evaluate(config, _WORKDIR.value)
  except (FileNotFoundError, validate.ConfigError, pretrain.NonFiniteError,
          checkpointing.CheckpointError) as e:
    # A missing dataset, evals without their data, a diverged run or no intact checkpoint: the
    # message says what to do; the last good checkpoint (if any) is intact in the workdir.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if result.get("preempted"):
    sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
  cli.run(main)
