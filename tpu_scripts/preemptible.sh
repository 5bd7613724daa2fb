#!/usr/bin/env bash
# Keeps a run going on a spot / preemptible slice until it finishes: creates the slice (queued
# resource), sets up the workers, starts the config, then polls. When the slice is preempted
# (queued resource SUSPENDED or FAILED, or gone) it deletes it, creates a new one and starts the
# same command again; the trainer resumes from the latest checkpoint in the GCS workdir (a
# SIGTERM before preemption also saves one). It stops when worker 0 reports the run "done",
# and gives up after --max-restarts recreations or when the run itself fails twice in a row.
#
#   tpu_scripts/preemptible.sh --name=xlsr-1b --zone=us-west4-a --accelerator-type=v5litepod-256 \
#       --runtime-version=v2-alpha-tpuv5-lite --bucket=my-bucket --spot \
#       --config=configs/pods/xlsr_1b.py --workdir=/mnt/gcs/runs/xlsr_1b [--poll-sec=300] \
#       [--max-restarts=50] [--dry-run] [-- extra jaxssl.main flags]
#
# --dry-run prints the commands of one pass (create, set up, run, poll, delete) and exits.
# https://cloud.google.com/tpu/docs/preemptible

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE --accelerator-type=TYPE --runtime-version=VERSION"
  echo "          --bucket=BUCKET --config=FILE.py --workdir=DIR [--spot] [--project=P]"
  echo "          [--poll-sec=300] [--max-restarts=50] [--dry-run] [-- extra jaxssl.main flags]"
}

FLAG_config=""
FLAG_workdir=""
FLAG_poll_sec=""
FLAG_max_restarts=""
parse_flags "name zone project accelerator-type runtime-version bucket config workdir spot \
poll-sec max-restarts" "$@"
require TPU_NAME --name TPU_NAME
require ZONE --zone TPU_ZONE
require ACCELERATOR_TYPE --accelerator-type TPU_ACCELERATOR_TYPE
require RUNTIME_VERSION --runtime-version TPU_RUNTIME_VERSION
require BUCKET --bucket TPU_BUCKET
require FLAG_config --config
require FLAG_workdir --workdir
POLL_SEC="${FLAG_poll_sec:-300}"
MAX_RESTARTS="${FLAG_max_restarts:-50}"

# "done", "stopped", "failed N" from worker 0 (worker_run.sh), or "running".
run_outcome() {
  _where
  DRY_ANSWER="done" query gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" --worker=0 \
    "--command=cat ~/jaxssl_run.exit 2>/dev/null || echo running" 2>/dev/null || echo unreachable
}

start_fresh() {
  tpu_create
  tpu_setup
  tpu_run "$FLAG_config" "$FLAG_workdir" "${EXTRA_ARGS[@]}"
}

restarts=0
failures=0
state="$(DRY_ANSWER="" tpu_state)"
if [[ "$state" == ACTIVE ]]; then
  echo "slice $TPU_NAME already ACTIVE: (re)starting the run on it" >&2
  tpu_run "$FLAG_config" "$FLAG_workdir" "${EXTRA_ARGS[@]}"
else
  if [[ -n "$state" ]]; then
    tpu_delete
  fi
  start_fresh
fi
while true; do
  if [[ "$DRY_RUN" != 1 ]]; then
    sleep "$POLL_SEC"
  fi
  state="$(tpu_state)"
  case "$state" in
    ACTIVE)
      outcome="$(run_outcome)"
      echo "$(date -u +%FT%TZ) $TPU_NAME ACTIVE, run: $outcome" >&2
      case "$outcome" in
        done)
          echo "run finished; deleting the slice" >&2
          tpu_delete
          exit 0 ;;
        running|unreachable|stopped) ;;  # A stopped run is being preempted: wait for the state.
        failed*)
          failures=$((failures + 1))
          if [[ "$failures" -ge 2 ]]; then
            die "the run failed twice in a row ($outcome); see tpu_scripts/logs.sh --name=$TPU_NAME"
          fi
          tpu_run "$FLAG_config" "$FLAG_workdir" "${EXTRA_ARGS[@]}" ;;
      esac ;;
    SUSPENDED|FAILED|"")
      restarts=$((restarts + 1))
      failures=0
      [[ "$restarts" -le "$MAX_RESTARTS" ]] || die "slice lost $restarts times; giving up"
      echo "$(date -u +%FT%TZ) slice $TPU_NAME ${state:-gone}: recreating ($restarts)" >&2
      if [[ -n "$state" ]]; then
        tpu_delete
      fi
      start_fresh ;;
    *) echo "$(date -u +%FT%TZ) $TPU_NAME $state" >&2 ;;  # Waiting, provisioning, deleting.
  esac
done
