#!/usr/bin/env bash
# The README's two commands. Creates (or updates) .venv from the pinned requirements, then:
#   bash scripts/quickstart.sh demo   build the demo corpus and pretrain wav2vec 2.0 on it
#   bash scripts/quickstart.sh test   run the test suite (what CI runs)
# Needs only Python 3.11 and pip access: no root, no apt package, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != demo && "${1:-}" != test ]]; then
  echo "usage: bash scripts/quickstart.sh demo|test [extra args]" >&2
  exit 2
fi

python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
  python_bin=$(command -v python3.11 || command -v python3)
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# `demo` installs the core (requirements.txt); `test` adds the interop and tpu extras and pytest
# (the parity and AOT tests need torch, transformers and libtpu). Reinstall only when the pins or
# the package metadata changed.
case "${1:-}" in
  test) files=(requirements.txt requirements-interop.txt requirements-tpu.txt requirements-test.txt) ;;
  *) files=(requirements.txt) ;;
esac
stamp=".venv/.jaxssl-installed-$1"
want=$(cat "${files[@]}" pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "== installing ${files[*]}"
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet "${files[@]/#/-r}"
  PYTHONWARNINGS=ignore python -m pip install --quiet --no-deps -e .  # No editable-install banner.
  echo "$want" > "$stamp"
fi
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"

case "${1:-}" in
  demo)
    workdir="${WORKDIR:-workdir/w2v2_demo}"
    python -m jaxssl.data.demo_corpus --out=data/demo_corpus
    python -m jaxssl.data.build --dataset=demo_corpus --source=data/demo_corpus --data_dir=data/tfds
    python -m jaxssl.main --config=configs/wav2vec2/demo.py --workdir="$workdir" "${@:2}"
    python -m jaxssl.training.plots --workdir="$workdir"
    ;;
  test)
    # Two workers (pytest-xdist): run one by one, the tests keep 1.3 of 2 cores busy on average
    # (user / wall time, 2026-12-06); loadgroup keeps each xdist_group on one worker.
    python -m pytest -q -n 2 --dist loadgroup "${@:2}"
    ;;
esac
