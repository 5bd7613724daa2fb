#!/usr/bin/env bash
# Runs ON each TPU VM worker (setup_vm.sh calls it over `ssh --worker=all`): Python 3.11 venv in
# ~/jaxssl/.venv with the project's pinned requirements and jax[tpu] at the pinned jax version,
# then the GCS bucket mounted read-write with gcsfuse at --mount-dir (data and workdirs live there).
#
#   bash ~/jaxssl/tpu_scripts/worker_setup.sh --bucket=my-bucket [--mount-dir=/mnt/gcs] [--dry-run]
# https://cloud.google.com/tpu/docs/run-calculation-jax

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: $0 --bucket=BUCKET [--mount-dir=/mnt/gcs] [--python=python3.11] [--dry-run]"
}

FLAG_mount_dir=""
FLAG_python=""
parse_flags "bucket mount-dir python" "$@"
require BUCKET --bucket TPU_BUCKET
MOUNT_DIR="${FLAG_mount_dir:-$MOUNT_DIR}"
PYTHON="${FLAG_python:-python3.11}"
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# jax[tpu] must match the jax the project pins (it brings the matching libtpu).
JAX_VERSION="$(sed -n 's/^jax==//p' requirements.txt)"
[[ -n "$JAX_VERSION" ]] || die "requirements.txt pins no jax==VERSION"

# Python 3.11 (TPU VM images ship an older python3) and gcsfuse from Google's apt repository.
run sudo apt-get update -q
run sudo apt-get install -y -q "$PYTHON" "$PYTHON-venv" curl lsb-release
if ! command -v gcsfuse >/dev/null || [[ "$DRY_RUN" == 1 ]]; then
  run sudo bash -c "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg > /usr/share/keyrings/cloud.google.asc && echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" > /etc/apt/sources.list.d/gcsfuse.list"
  run sudo apt-get update -q
  run sudo apt-get install -y -q gcsfuse
fi

run "$PYTHON" -m venv .venv
run .venv/bin/pip install -q --upgrade pip
run .venv/bin/pip install -q -r requirements.txt -r requirements-tpu.txt
run .venv/bin/pip install -q "jax[tpu]==$JAX_VERSION"

# The bucket: TFDS array_record data under tfds/, run workdirs under runs/ (tpu_scripts/README.md).
run sudo mkdir -p "$MOUNT_DIR"
run sudo chown "$(id -u):$(id -g)" "$MOUNT_DIR"
if ! mountpoint -q "$MOUNT_DIR" || [[ "$DRY_RUN" == 1 ]]; then
  run gcsfuse --implicit-dirs --rename-dir-limit=200000 "$BUCKET" "$MOUNT_DIR"
fi
echo "worker $(hostname): jax[tpu]==$JAX_VERSION in $PWD/.venv, gs://$BUCKET at $MOUNT_DIR"
