"""Pod recipes: the paper recipes laid out on TPU slices (https://cloud.google.com/tpu/docs/v5e).

Every file in configs/pods/ takes a recipe from configs/wav2vec2 or configs/hubert unchanged in
its objective and optimizer, and sets what a pod needs: the (data, fsdp, tensor) mesh, a global
batch that divides over it, bf16 compute, scanned (and where needed rematerialised) layers, the
`distributed` section for multi-host runs, data and workdir on the gcsfuse-mounted bucket
(tpu_scripts/README.md), and a `tpu` section that `python -m jaxssl.aot` (topology) and the
tpu_scripts (accelerator_type, runtime_version) read. Their fit on the chip is checked by
compiling them for it (experiments/tpu_plan/).
"""
import re

import ml_collections as mlc

from configs import common
from jaxssl.data import pipeline

# Cloud TPU VM software versions per generation (Cloud TPU docs, "TPU software versions").
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
# gcloud's accelerator-type prefix, and TensorCores per chip (v4 / v5p types count cores).
_ACCELERATOR = {"v4": ("v4", 2), "v5e": ("v5litepod", 1), "v5p": ("v5p", 2), "v6e": ("v6e", 1)}
MOUNT_DIR = "/mnt/gcs"  # Where tpu_scripts/worker_setup.sh mounts the bucket on every worker.


def accelerator_type(topology):
  """gcloud's --accelerator-type for a topology: "v5e:4x8" -> "v5litepod-32", "v4:2x2x4" ->
  "v4-32" (v4 and v5p names count TensorCores, two per chip)."""
  found = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+)+)", topology)
  if not found or found.group(1) not in _ACCELERATOR:
    raise ValueError(f"Unknown TPU topology {topology!r}; e.g. v5e:4x8, v4:2x2x4, v5p:4x4x4.")
  prefix, cores = _ACCELERATOR[found.group(1)]
  chips = 1
  for n in found.group(2).split("x"):
    chips *= int(n)
  return f"{prefix}-{chips * cores}"


def on_pod(c, topology, *, data=-1, fsdp=1, tensor=1, batch_multiple=None, remat=False):
  """Lays recipe `c` (unlocked) out on a slice of `topology` (e.g. "v5e:4x8").

  bf16 compute (params and Adam moments stay f32) and scanned layers (one compiled layer body:
  shorter compiles, and what remat needs); data and checkpoints on the mounted bucket.
  `batch_multiple`: every (dynamic) batch size becomes a multiple of it, e.g. the data x fsdp
  devices when the recipe's fairseq groups (data.batch_groups) do not divide over them.
  """
  generation = topology.split(":")[0]
  c.tpu = mlc.ConfigDict(dict(topology=topology, accelerator_type=accelerator_type(topology),
                              runtime_version=RUNTIME_VERSIONS[generation]))
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = data, fsdp, tensor
  if batch_multiple is not None:
    c.data.dynamic_batch_multiple = batch_multiple
    c.data.batch_size = pipeline.nominal_batch_shape(c.data)[0]  # Eval batches divide too.
  c.data.data_dir = f"{MOUNT_DIR}/tfds"
  c.data.num_workers = 8  # grain worker processes per host: decoding keeps up with the chips.
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.model.remat = remat
  c.distributed.coordinator = "auto"  # jax.distributed finds the other workers on a TPU pod.
  return c


def runlocal(c):
  """`:runlocal` for a pod recipe: the CPU smoke shrink, back on one local process."""
  common.shrink_for_cpu(c)
  c.distributed.coordinator = ""
  c.data.data_dir = "data/tfds"
  c.data.num_workers = 0
  c.model.dtype = "float32"  # bf16 matmuls are slower than f32 on CPUs.
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
