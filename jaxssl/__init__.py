"""jaxssl: efficient self-supervised speech representation learning in JAX/Flax.

Entry point: `python -m jaxssl.main --config=configs/<recipe>.py --workdir=DIR`; see README.md.

With the `tpu` extra (libtpu) installed on a machine without a TPU, JAX would try to start the TPU
runtime, which prints warnings about TPU hostnames and accelerator types. Importing jaxssl before
jax avoids that: when JAX_PLATFORMS is unset and no TPU chip is on the PCI bus, it names the
platforms that are there (cpu, and cuda when a CUDA plugin and a GPU are present).
"""
import glob
import importlib.util
import os

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips, as jax._src.hardware_utils finds them.


def _tpu_chips_present():
  for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(path) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def _platforms_without_tpu():
  cuda = any(importlib.util.find_spec(name) for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
  return "cuda,cpu" if cuda and glob.glob("/dev/nvidia[0-9]*") else "cpu"


if ("JAX_PLATFORMS" not in os.environ and importlib.util.find_spec("libtpu")
    and not _tpu_chips_present()):
  os.environ["JAX_PLATFORMS"] = _platforms_without_tpu()
