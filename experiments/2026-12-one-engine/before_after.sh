#!/usr/bin/env bash
# Behaviour check for the one-engine redesign (issue 17): runs the same short jobs on a given
# checkout, so that the commit before the redesign and the one after can be compared file by file.
#   bash experiments/2026-12-one-engine/before_after.sh <repo checkout> <out dir>
# Jobs (CPU, 2 cores, about 10 minutes in all):
#   w2v2     configs/wav2vec2/demo.py, 300 steps (metrics.jsonl compared value by value);
#   probe    the phone probe on that model, 300 steps (dev / test PER, loss curve);
#   ctc      CTC fine-tuning of that model, 200 steps (configs/finetune/ctc_demo.py);
#   lora     speaker fine-tuning with LoRA, 100 steps (configs/finetune/utterance_demo.py);
#   distill  a 2-layer DistilHuBERT-style student of that model, 200 steps;
#   hubert   configs/hubert/demo.py iteration 1 (MFCC k-means labels), 200 steps;
#   adalora, ladder  CTC fine-tuning of the w2v2 model with AdaLoRA / ladder side-tuning, 100 steps.
# JOBS="w2v2 ctc" runs a subset (w2v2 first: the others read it).
set -euo pipefail
repo=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
data=${DATA_DIR:-/work/main/data/tfds}
py=${PYTHON:-/work/main/.venv/bin/python}
cd "$repo"
export JAX_PLATFORMS=cpu
jobs=" ${JOBS:-w2v2 probe ctc lora distill hubert adalora ladder} "
run() { local name=$1; shift; [[ $jobs == *" $name "* ]] || return 0; echo "== $name"; /usr/bin/time -f "$name %e s" "$py" "$@" > "$out/$name.log" 2>&1 || { tail -20 "$out/$name.log"; exit 1; }; tail -1 "$out/$name.log"; }
run w2v2 -m jaxssl.main --config=configs/wav2vec2/demo.py --workdir="$out/w2v2" \
  --config.total_steps=300 --config.data.data_dir="$data" --config.evals.phone.every_steps=0
run probe -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream="$out/w2v2" \
  --config.data.data_dir="$data" --config.total_steps=300 --config.eval_every_steps=100 \
  --workdir="$out/probe"
run ctc -m jaxssl.evaluate --config=configs/finetune/ctc_demo.py --config.upstream="$out/w2v2" \
  --config.data.data_dir="$data" --config.total_steps=200 --config.eval_every_steps=100 \
  --workdir="$out/ctc"
run lora -m jaxssl.evaluate --config=configs/finetune/utterance_demo.py:task=speaker,peft=lora \
  --config.upstream="$out/w2v2" --config.data.data_dir="$data" --config.total_steps=100 \
  --config.eval_every_steps=50 --workdir="$out/lora"
run distill -m jaxssl.main --config=configs/distill/demo.py --config.distill.teacher="$out/w2v2" \
  --config.data.data_dir="$data" --config.total_steps=200 --workdir="$out/distill"
run hubert -m jaxssl.main --config=configs/hubert/demo.py:iteration=1 --workdir="$out/hubert" \
  --config.total_steps=200 --config.data.data_dir="$data"
# AdaLoRA's budget phases are fractions of the config's total_steps: set them for 100 steps.
run adalora -m jaxssl.evaluate --config=configs/finetune/ctc_demo.py:peft=adalora \
  --config.upstream="$out/w2v2" --config.data.data_dir="$data" --config.total_steps=100 \
  --config.eval_every_steps=50 --config.peft.tinit=10 --config.peft.tfinal=20 \
  --workdir="$out/adalora"
run ladder -m jaxssl.evaluate --config=configs/finetune/ctc_demo.py:peft=ladder \
  --config.upstream="$out/w2v2" --config.data.data_dir="$data" --config.total_steps=100 \
  --config.eval_every_steps=50 --workdir="$out/ladder"
