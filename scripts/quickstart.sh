#!/usr/bin/env bash
# The README's two commands. Creates (or updates) .venv from the pinned requirements, then:
#   bash scripts/quickstart.sh demo            build the demo corpus and pretrain MelHuBERT on it
#   bash scripts/quickstart.sh demo wav2vec2   ... or wav2vec 2.0 (the quickstart before 2026-12-06)
#   bash scripts/quickstart.sh test            run the test suite (what CI runs)
# MelHuBERT is the default because it is the cheapest objective here that beats MFCC on phones
# within the demo's minutes (README, "Which objective? Quality per training FLOP").
# Needs only Python 3.11 and pip access: no root, no apt package, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != demo && "${1:-}" != test ]]; then
  echo "usage: bash scripts/quickstart.sh demo [melhubert|wav2vec2] [trainer args]" >&2
  echo "       bash scripts/quickstart.sh test [pytest args]" >&2
  exit 2
fi
mode=$1
shift
objective=melhubert
if [[ "$mode" == demo && ( "${1:-}" == melhubert || "${1:-}" == wav2vec2 ) ]]; then
  objective=$1
  shift
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
case "$mode" in
  test) files=(requirements.txt requirements-interop.txt requirements-tpu.txt requirements-test.txt) ;;
  *) files=(requirements.txt) ;;
esac
stamp=".venv/.jaxssl-installed-$mode"
want=$(cat "${files[@]}" pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "== installing ${files[*]}"
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet "${files[@]/#/-r}"
  PYTHONWARNINGS=ignore python -m pip install --quiet --no-deps -e .  # No editable-install banner.
  echo "$want" > "$stamp"
fi
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"

case "$mode" in
  demo)
    python -m jaxssl.data.demo_corpus --out=data/demo_corpus
    python -m jaxssl.data.build --dataset=demo_corpus --source=data/demo_corpus --data_dir=data/tfds
    if [[ "$objective" == wav2vec2 ]]; then
      workdir="${WORKDIR:-workdir/w2v2_demo}"
      config=configs/wav2vec2/demo.py
    else
      # MelHuBERT's stage 1: the training set's fbank statistics, then k-means units of the
      # normalised fbank frames (kept when they exist), then masked prediction of those units.
      workdir="${WORKDIR:-workdir/melhubert_demo}"
      config=configs/hubert/melhubert.py:demo
      python -m jaxssl.feature_stats --dataset=demo_corpus --data_dir=data/tfds --split=train \
        --features=fbank --num_mels=40
      python -m jaxssl.kmeans --dataset=demo_corpus --data_dir=data/tfds --features=fbank \
        --stats=fbank40 --num_clusters=100 --fraction=0.5 --keep_existing
    fi
    python -m jaxssl.main --config="$config" --workdir="$workdir" "$@"
    python -m jaxssl.training.plots --workdir="$workdir"
    ;;
  test)
    # Two workers (pytest-xdist): run one by one, the tests keep 1.3 of 2 cores busy on average
    # (user / wall time, 2026-12-06); loadgroup keeps each xdist_group on one worker.
    python -m pytest -q -n 2 --dist loadgroup "$@"
    ;;
esac
