#!/usr/bin/env bash
# Starts a config on all workers of a slice (`gcloud compute tpus tpu-vm ssh --worker=all`): each
# runs `python -m jaxssl.main --config.distributed.coordinator=auto` in the background, logging to
# ~/jaxssl_run.log. Re-running it on the same --workdir resumes from the latest checkpoint.
#
#   tpu_scripts/run.sh --name=w2v2-base --zone=us-west4-a \
#       --config=configs/pods/wav2vec2_base.py --workdir=/mnt/gcs/runs/w2v2_base \
#       [--dry-run] [-- --config.optim.lr=1e-4 ...]
# https://cloud.google.com/tpu/docs/pytorch-pods#run_the_training_script_on_all_workers

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE --config=FILE.py[:arg] --workdir=DIR [--project=P]"
  echo "          [--dry-run] [-- extra jaxssl.main flags]"
}

FLAG_config=""
FLAG_workdir=""
parse_flags "name zone project config workdir" "$@"
require TPU_NAME --name TPU_NAME
require ZONE --zone TPU_ZONE
require FLAG_config --config
require FLAG_workdir --workdir
tpu_run "$FLAG_config" "$FLAG_workdir" "${EXTRA_ARGS[@]}"
