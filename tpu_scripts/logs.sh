#!/usr/bin/env bash
# Follows the training log of one worker (default worker 0, the one that writes metrics).
#
#   tpu_scripts/logs.sh --name=w2v2-base --zone=us-west4-a [--worker=0] [--lines=100] [--dry-run]

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE [--worker=0] [--lines=100] [--project=P] [--dry-run]"
}

FLAG_lines=""
WORKER=0
parse_flags "name zone project worker lines" "$@"
require TPU_NAME --name TPU_NAME
require ZONE --zone TPU_ZONE
[[ "$WORKER" != all ]] || die "--worker=all would interleave logs; pick one worker, e.g. 0"
tpu_ssh "tail -n ${FLAG_lines:-100} -F ~/$RUN_LOG"
