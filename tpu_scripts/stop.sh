#!/usr/bin/env bash
# Stops the run on all workers (SIGTERM: the trainer saves a checkpoint, then exits); with
# --delete also deletes the slice (queued resource and TPU VMs) afterwards.
#
#   tpu_scripts/stop.sh --name=w2v2-base --zone=us-west4-a [--delete] [--dry-run]

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE [--delete] [--project=P] [--dry-run]"
}

DELETE=0
args=()
for a in "$@"; do
  if [[ "$a" == "--delete" ]]; then DELETE=1; else args+=("$a"); fi
done
parse_flags "name zone project" "${args[@]}"
require TPU_NAME --name TPU_NAME
require ZONE --zone TPU_ZONE
tpu_stop
if [[ "$DELETE" == 1 ]]; then
  tpu_delete
fi
