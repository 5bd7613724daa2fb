#!/usr/bin/env bash
# Requests a TPU VM slice as a queued resource and waits until it is ACTIVE.
#
#   tpu_scripts/create_tpu.sh --name=w2v2-base --zone=us-west4-a --accelerator-type=v5litepod-32 \
#       --runtime-version=v2-alpha-tpuv5-lite [--project=P] [--spot] [--dry-run]
#
# Flags default to $TPU_NAME, $TPU_ZONE, $TPU_PROJECT, $TPU_ACCELERATOR_TYPE, $TPU_RUNTIME_VERSION.
# https://cloud.google.com/tpu/docs/queued-resources

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE --accelerator-type=TYPE --runtime-version=VERSION"
  echo "          [--project=PROJECT] [--spot] [--dry-run]"
}

parse_flags "name zone project accelerator-type runtime-version spot" "$@"
require TPU_NAME --name TPU_NAME
require ZONE --zone TPU_ZONE
require ACCELERATOR_TYPE --accelerator-type TPU_ACCELERATOR_TYPE
require RUNTIME_VERSION --runtime-version TPU_RUNTIME_VERSION
tpu_create
