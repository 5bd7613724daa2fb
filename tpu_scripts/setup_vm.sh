#!/usr/bin/env bash
# Sets up every worker of a slice: ships this checkout's committed tree (git archive HEAD), then
# on each worker a Python 3.11 venv with requirements.txt and jax[tpu], and the GCS bucket
# mounted at /mnt/gcs with gcsfuse (worker_setup.sh).
#
#   tpu_scripts/setup_vm.sh --name=w2v2-base --zone=us-west4-a --bucket=my-bucket [--dry-run]
# https://cloud.google.com/tpu/docs/run-calculation-jax

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE --bucket=BUCKET [--project=PROJECT] [--dry-run]"
}

parse_flags "name zone project bucket" "$@"
require TPU_NAME --name TPU_NAME
require ZONE --zone TPU_ZONE
require BUCKET --bucket TPU_BUCKET
tpu_setup
