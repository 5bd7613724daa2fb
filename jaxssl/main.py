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
import difflib
import importlib.util
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxssl import validate
from jaxssl.training import checkpointing

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: saved and stopped on SIGTERM; the same command resumes.

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Build from abstract shapes, train nothing.")


def _load_config(argv):
  """The config named by --config=file.py[:arg] in argv, loaded without flag parsing."""
  spec = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_jaxssl_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _unknown_field_message(argv, error: Exception) -> str:
  """A message naming the mistyped --config.a.b field and the closest valid names."""
  try:
    config = _load_config(argv)
  except Exception:  # pylint: disable=broad-except
    return str(error)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg.split("=", 1)[0].removeprefix("--config.")
    node, seen = config, []
    for part in path.split("."):
      valid = sorted(node.keys()) if hasattr(node, "keys") else []
      if part not in valid:
        where = ".".join(["config"] + seen)
        close = difflib.get_close_matches(part, valid, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (f"unknown config field {'.'.join(seen + [part])!r} in {arg}.{hint} "
                f"Valid fields of {where}: {valid}.")
      node, seen = node[part], seen + [part]
  return str(error)


def parse_flags(argv):
  """absl flag parsing, with config errors reported as one clear line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    print(f"error: {_unknown_field_message(argv, e)}", file=sys.stderr)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
  sys.exit(2)


def dry_run_extras(config):
  """Figures a recipe's dry run adds: MelHuBERT's MACs per second of speech beside HuBERT BASE's
  (the paper's headline saving, about a third)."""
  if config.get("objective", {}).get("name") != "melhubert":
    return {}
  from jaxssl.objectives import melhubert  # pylint: disable=g-import-not-at-top
  base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs", "hubert", "base.py")
  out = melhubert.compare(config, melhubert.load_config(f"{base}:iteration=2"))
  return dict(macs_per_second=out["macs_per_sec"],
              hubert_base_macs_per_second=out["baseline_macs_per_sec"],
              macs_saving_vs_hubert_base=out["macs_saving"])


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<file>.py is required.")
  try:
    validate.validate(config)
  except validate.ConfigError as e:
    print(f"error: invalid config: {e}", file=sys.stderr)
    sys.exit(2)
  from jaxssl.training import trainer  # pylint: disable=g-import-not-at-top
  if config.get("trainer", "pretrain") == "distill":  # A frozen teacher in the step.
    from jaxssl.distill import trainer  # pylint: disable=g-import-not-at-top,reimported
  if _DRY_RUN.value:
    print(json.dumps(trainer.dry_run(config) | dry_run_extras(config)))
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (unless --dry_run).")
  logging.info("Config:\n%s", config)
  try:
    result = trainer.train_and_evaluate(config, _WORKDIR.value)
  except (FileNotFoundError, trainer.NonFiniteError, checkpointing.CheckpointError) as e:
    # A missing dataset, a diverged run or no intact checkpoint: the message says what to do;
    # the last good checkpoint (if any) is intact in the workdir.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if result.get("preempted"):
    sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
