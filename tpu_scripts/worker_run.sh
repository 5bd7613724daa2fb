#!/usr/bin/env bash
# Runs ON each TPU VM worker (run.sh and stop.sh call it over `ssh --worker=all`).
#
# Start: launches `python -m jaxssl.main` in the background, detached from the ssh session, with
# the pod settings (`--config.distributed.coordinator=auto`: jax.distributed finds the other
# workers), logging to ~/jaxssl_run.log; when it ends ~/jaxssl_run.exit says done, stopped or
# failed <status>.
# Stop (--stop): SIGTERM to that process; the trainer saves a checkpoint and exits.
#
#   bash ~/jaxssl/tpu_scripts/worker_run.sh --config=configs/pods/wav2vec2_base.py \
#       --workdir=/mnt/gcs/runs/w2v2_base [--dry-run] [-- --config.optim.lr=1e-4 ...]
#   bash ~/jaxssl/tpu_scripts/worker_run.sh --stop [--dry-run]
# https://jax.readthedocs.io/en/latest/multi_process.html

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --config=FILE.py[:arg] --workdir=DIR [--dry-run] [-- extra jaxssl.main flags]"
  echo "       $0 --stop [--dry-run]"
}

STOP=0
FLAG_config=""
FLAG_workdir=""
for a in "$@"; do
  [[ "$a" == "--" ]] && break
  [[ "$a" == "--stop" ]] && STOP=1
done
args=()
for a in "$@"; do
  [[ "$a" == "--stop" ]] || args+=("$a")
done
parse_flags "config workdir" "${args[@]}"
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PID_FILE="$HOME/jaxssl_run.pid"
EXIT_FILE="$HOME/jaxssl_run.exit"

if [[ "$STOP" == 1 ]]; then
  if [[ -f "$PID_FILE" ]] || [[ "$DRY_RUN" == 1 ]]; then
    pid="$(cat "$PID_FILE" 2>/dev/null || echo PID)"
    run kill -TERM "$pid"
    # The SIGTERM checkpoint is written before the process exits; wait for it (at most 10 min).
    if [[ "$DRY_RUN" != 1 ]]; then
      for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
      done
    fi
  fi
  exit 0
fi

require FLAG_config --config
require FLAG_workdir --workdir
if [[ "$DRY_RUN" != 1 ]] && [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
  die "a run is already going on this worker (pid $(cat "$PID_FILE")); stop it first (stop.sh)"
fi
cmd=(.venv/bin/python -m jaxssl.main "--config=$FLAG_config" "--workdir=$FLAG_workdir"
     --config.distributed.coordinator=auto "${EXTRA_ARGS[@]}")
run rm -f "$EXIT_FILE"
if [[ "$DRY_RUN" == 1 ]]; then
  _line nohup setsid "${cmd[@]}"
  echo "# (in the background; output to ~/$RUN_LOG, outcome to $EXIT_FILE)"
  exit 0
fi
# setsid + nohup: the job outlives the ssh session that started it. The supervising shell records
# the trainer's pid (stop.sh signals it) and then its outcome from the exit status
# (jaxssl/main.py): 0 "done", 75 "stopped" (SIGTERM: a checkpoint was saved; rerunning resumes),
# anything else "failed <status>".
# shellcheck disable=SC2016  # Expanded by the supervising shell, not here.
supervise='"${@:4}" > "$2" 2>&1 & echo $! > "$1"; wait $!; rc=$?
if [ $rc -eq 0 ]; then s=done; elif [ $rc -eq 75 ]; then s=stopped; else s="failed $rc"; fi
echo "$s" > "$3"'
nohup setsid bash -c "$supervise" _ "$PID_FILE" "$HOME/$RUN_LOG" "$EXIT_FILE" "${cmd[@]}" \
  < /dev/null > /dev/null 2>&1 3>&- &
echo "worker $(hostname): started $FLAG_config -> ~/$RUN_LOG"
