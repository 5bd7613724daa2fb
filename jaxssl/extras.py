"""Optional dependencies: code that needs one fails with one line naming the extra to install.

The core install (requirements.txt, `pip install -e .`) runs pretraining, evaluation and
everything the demo does; the extras add checkpoint interop with PyTorch / transformers
(`interop`, also the PyTorch peers of the benchmarks: `bench`) and XLA's TPU compiler (`tpu`).
"""
import importlib

EXTRA_OF = {"torch": "interop", "transformers": "interop", "libtpu": "tpu"}


class MissingExtra(ImportError):
  """An optional dependency is not installed; the message says which extra brings it."""


def message(package, purpose):
  extra = EXTRA_OF[package]
  return (f"{purpose} needs {package}, from the {extra!r} extra: pip install -r "
          f"requirements-{extra}.txt (or pip install -e .[{extra}]).")


def require(module, purpose):
  """Imports `module` (e.g. "torch", "transformers.models.wav2vec2") or raises MissingExtra."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise MissingExtra(message(module.split(".")[0], purpose)) from None
