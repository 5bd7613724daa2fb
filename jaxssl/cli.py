"""What every command line of jaxssl shares: one-line errors and a --help that exits 0.

`run(main)` replaces `absl.app.run(main)`: `--help` / `--helpfull` print the command's flags and
exit 0 (absl exits 1); a config that cannot be loaded (a missing file, a bad `file.py:arg`, a
mistyped `--config.a.b` field) is reported as one `error: ...` line with exit status 2 instead of
a traceback; and libraries' INFO logs (orbax, TFDS, jax) stay off unless `--verbosity=0` (or
`-v 0`) asks for them. What a user should see goes through `say`.
"""
import difflib
import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections.config_flags import config_flags
import tqdm

_HELP = ("--help", "-h", "--helpfull", "--helpshort", "-?")


def load_config_file(spec):
  """The ConfigDict of "file.py[:arg]": the file's `get_config(arg)` (None without an arg)."""
  path, _, arg = str(spec).partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{spec!r}: no such config file.")
  module_spec = importlib.util.spec_from_file_location("_jaxssl_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _load_config(argv):
  """The config named by --config=file.py[:arg] in argv, loaded without flag parsing."""
  return load_config_file(next(a.split("=", 1)[1] for a in argv if a.startswith("--config=")))


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


def _config_file_problem(argv):
  """One line when --config names a config file that does not exist, else "" (also for programs
  whose --config is something else, e.g. a dataset builder's config name)."""
  if "config" not in flags.FLAGS or not isinstance(flags.FLAGS["config"].parser,
                                                   config_flags.ConfigFileFlagParser):
    return ""
  for arg in argv:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].partition(":")[0]
      if not os.path.isfile(path):
        return (f"--config: no such config file {path!r} (from {os.getcwd()}); configs are "
                "configs/<family>/<name>.py, e.g. --config=configs/wav2vec2/demo.py")
  return ""


def _one_line(error):
  """The first line of a flag error and, if it wraps a traceback, the exception it ends with."""
  lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
  if len(lines) > 1 and any(ln.startswith("Traceback") for ln in lines):
    return f"{lines[0]} {lines[-1]}"
  return lines[0] if lines else repr(error)


def parse_flags(argv):
  """absl flag parsing, with config errors reported as one clear line instead of a traceback."""
  problem = _config_file_problem(argv)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    print(f"error: {_unknown_field_message(argv, e)}", file=sys.stderr)
  except flags.Error as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
  sys.exit(2)


def say(message):
  """One line for the user on stdout, above any progress bar (process 0 of a multi-host job
  only, when jax is running)."""
  jax = sys.modules.get("jax")
  if jax is not None and jax.process_index() != 0:
    return
  tqdm.tqdm.write(message)


def run(main, flags_parser=parse_flags):
  """`absl.app.run(main)`, with --help exiting 0, config errors as one line and library INFO
  logs off unless --verbosity is given (see above)."""
  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    return main(argv)

  try:
    app.run(quiet_main, flags_parser=flags_parser)
  except SystemExit as e:
    if e.code == 1 and any(a in _HELP for a in sys.argv[1:]):
      sys.exit(0)  # absl's help flags exit 1 after printing the usage.
    raise
