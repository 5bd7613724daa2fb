#!/usr/bin/env bash
# The core jaxssl benchmarks on one GPU in bf16, in under 8 minutes, ending with a printed table
# (experiments/benchmarks/gpu_suite.py: peak matmul, wav2vec 2.0 / HuBERT BASE train steps at
# 8 x 15.6 s with MFU, BASE inference RTF, the HF PyTorch peer if torch has CUDA).
#
#   bash experiments/benchmarks/gpu.sh                        # on a GPU machine
#   bash experiments/benchmarks/gpu.sh --batch_size=16        # extra flags go to gpu_suite.py
#   bash experiments/benchmarks/gpu.sh --device=cpu --tiny    # dry check of the same Python on CPU
#
# Needs the repo's environment with a CUDA jax of the pinned version, e.g.
#   pip install "jax[cuda12]==$(grep '^jax==' requirements.txt | cut -d= -f3)"
# Results: experiments/benchmarks/results/gpu_suite.{json,md} (or gpu_suite_tiny_cpu.* dry runs).
set -euo pipefail
cd "$(dirname "$0")/../.."

device=gpu
for arg in "$@"; do
  case "$arg" in
    --device=*) device="${arg#--device=}" ;;
  esac
done
case "$device" in
  cpu) export JAX_PLATFORMS=cpu ;;
  gpu) export JAX_PLATFORMS=cuda ;;
  tpu) export JAX_PLATFORMS=tpu ;;
  *) echo "gpu.sh: unknown --device=$device (gpu, tpu or cpu)" >&2; exit 2 ;;
esac
# Leave room for cuDNN workspaces and the PyTorch peer in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.75}"

python="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
# 8 minutes in all; the suite itself stops starting new items after --budget_sec (7 minutes).
exec timeout 480 "$python" -m experiments.benchmarks.gpu_suite --device="$device" \
  $(printf '%s\n' "$@" | grep -v '^--device=' || true)
