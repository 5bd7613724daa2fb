#!/usr/bin/env bash
# Deletes a slice: the queued resource and its TPU VMs (--force). Use stop.sh first to save a
# checkpoint of a running job.
#
#   tpu_scripts/delete_tpu.sh --name=w2v2-base --zone=us-west4-a [--project=P] [--dry-run]

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE [--project=P] [--dry-run]"
}

parse_flags "name zone project" "$@"
require TPU_NAME --name TPU_NAME
require ZONE --zone TPU_ZONE
tpu_delete
