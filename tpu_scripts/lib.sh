# shellcheck shell=bash disable=SC2034  # Variables here are read by the scripts sourcing it.
# Shared pieces of the tpu_scripts: flag parsing, dry-run aware command runner, and the gcloud
# steps (create, set up, run, stop, delete) that the scripts and the preemption loop compose.
#
# Every step goes through `run` (or `query` for read-only calls): with --dry-run it prints the
# exact command, shell-quoted so it can be pasted, instead of running it.
# Cloud TPU queued resources: https://cloud.google.com/tpu/docs/queued-resources

set -euo pipefail

DRY_RUN=0
TPU_NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
ACCELERATOR_TYPE="${TPU_ACCELERATOR_TYPE:-}"
RUNTIME_VERSION="${TPU_RUNTIME_VERSION:-}"
BUCKET="${TPU_BUCKET:-}"
SPOT=0
WORKER="all"
EXTRA_ARGS=()
# Where the bucket is mounted on every worker (gcsfuse) and where the code lives there.
MOUNT_DIR="${TPU_MOUNT_DIR:-/mnt/gcs}"
REMOTE_DIR="jaxssl"
RUN_LOG="jaxssl_run.log"

die() {
  echo "error: $*" >&2
  exit 2
}

# Prints one argument shell-quoted: bare when it is made of safe characters, else '...'.
_quote() {
  local s="$1"
  if [[ "$s" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# The command line, quoted, on one line.
_line() {
  local out="" a
  for a in "$@"; do
    out+="$(_quote "$a") "
  done
  printf '%s\n' "${out% }"
}

# Runs a command that changes something; with --dry-run, prints it.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    _line "$@"
  else
    "$@"
  fi
}

# Runs a read-only query and prints its output; with --dry-run, prints the command (on fd 3, the
# original stderr, which callers' 2>/dev/null does not hide) and then the stand-in answer
# $DRY_ANSWER, so a dry run follows the "everything works" path once.
exec 3>&2
query() {
  if [[ "$DRY_RUN" == 1 ]]; then
    _line "$@" >&3
    printf '%s\n' "${DRY_ANSWER:-}"
  else
    "$@"
  fi
}

# parse_flags "name zone ..." "$@": sets the variables of the allowed flags, --flag=value or
# --flag value; booleans (dry-run, spot) take no value; arguments after `--` go to EXTRA_ARGS.
parse_flags() {
  local allowed=" $1 dry-run help " names
  read -ra names <<< "$1 dry-run"
  shift
  while [[ $# -gt 0 ]]; do
    local arg="$1" key value
    shift
    if [[ "$arg" == "--" ]]; then
      EXTRA_ARGS=("$@")
      return 0
    fi
    [[ "$arg" == --* ]] || die "unexpected argument '$arg' (flags are --name=value)"
    key="${arg#--}"
    key="${key%%=*}"
    [[ "$allowed" == *" $key "* ]] || die "unknown flag --$key; valid:$(printf ' --%s' "${names[@]}")"
    case "$key" in
      dry-run) DRY_RUN=1; continue ;;
      spot) SPOT=1; continue ;;
      help) usage; exit 0 ;;
    esac
    if [[ "$arg" == *=* ]]; then
      value="${arg#*=}"
    else
      [[ $# -gt 0 ]] || die "--$key needs a value"
      value="$1"
      shift
    fi
    case "$key" in
      name) TPU_NAME="$value" ;;
      zone) ZONE="$value" ;;
      project) PROJECT="$value" ;;
      accelerator-type) ACCELERATOR_TYPE="$value" ;;
      runtime-version) RUNTIME_VERSION="$value" ;;
      bucket) BUCKET="${value#gs://}" ;;
      worker) WORKER="$value" ;;
      *) printf -v "FLAG_${key//-/_}" '%s' "$value" ;;
    esac
  done
}

# require VAR "--flag": fails naming the flag (and its environment variable) when VAR is empty.
require() {
  local var="$1" flag="$2" env="${3:-}"
  [[ -n "${!var:-}" ]] || die "$flag is required${env:+ (or set $env)}"
}

# Flags every gcloud call takes: zone, and project when given.
_where() {
  WHERE=("--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then
    WHERE+=("--project=$PROJECT")
  fi
}

# tpu_ssh COMMAND: runs a shell command on $WORKER (default all workers) of the slice.
tpu_ssh() {
  _where
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" "--worker=$WORKER" \
    "--command=$1"
}

# The queued resource's state (ACTIVE, WAITING_FOR_RESOURCES, SUSPENDED, ...), "" if none.
tpu_state() {
  _where
  DRY_ANSWER="${DRY_ANSWER-ACTIVE}" query gcloud compute tpus queued-resources describe \
    "$TPU_NAME" "${WHERE[@]}" '--format=value(state.state)' 2>/dev/null || true
}

# Requests the slice as a queued resource (spot if --spot) and waits until it is ACTIVE.
tpu_create() {
  _where
  local args=(gcloud compute tpus queued-resources create "$TPU_NAME" "--node-id=$TPU_NAME"
              "${WHERE[@]}" "--accelerator-type=$ACCELERATOR_TYPE"
              "--runtime-version=$RUNTIME_VERSION")
  if [[ "$SPOT" == 1 ]]; then
    args+=(--spot)
  fi
  run "${args[@]}"
  local state
  while true; do
    state="$(tpu_state)"
    echo "queued resource $TPU_NAME: ${state:-absent}" >&2
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED) die "queued resource $TPU_NAME is $state; delete it and retry" ;;
    esac
    sleep "${POLL_SEC:-30}"
  done
}

# Ships the committed tree (git archive HEAD) to every worker and runs worker_setup.sh there:
# Python venv, the pinned requirements, jax[tpu], gcsfuse mount of the bucket.
tpu_setup() {
  local repo tarball="${TMPDIR:-/tmp}/jaxssl_${TPU_NAME}.tar.gz"
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  _where
  run git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:jaxssl.tar.gz" "${WHERE[@]}" \
    --worker=all
  tpu_ssh "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/jaxssl.tar.gz -C ~/$REMOTE_DIR && bash ~/$REMOTE_DIR/tpu_scripts/worker_setup.sh --bucket=$BUCKET --mount-dir=$MOUNT_DIR"
}

# Starts `python -m jaxssl.main` on every worker in the background (worker_run.sh).
tpu_run() {
  local config="$1" workdir="$2" extra="" a
  shift 2
  for a in "$@"; do
    extra+=" $(_quote "$a")"
  done
  tpu_ssh "bash ~/$REMOTE_DIR/tpu_scripts/worker_run.sh $(_quote "--config=$config") $(_quote "--workdir=$workdir") --$extra"
}

# SIGTERM to the job on every worker: the trainer saves a checkpoint and exits.
tpu_stop() {
  tpu_ssh "bash ~/$REMOTE_DIR/tpu_scripts/worker_run.sh --stop"
}

# Deletes the queued resource and its TPU VMs.
tpu_delete() {
  _where
  run gcloud compute tpus queued-resources delete "$TPU_NAME" "${WHERE[@]}" --force --quiet
}
