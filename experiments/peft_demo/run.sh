#!/usr/bin/env bash
# CTC fine-tuning of the HuBERT demo encoder with full FT, LoRA, AdaLoRA and ladder side-tuning
# on the demo corpus, plus step time / memory at the demo size and at wav2vec 2.0 BASE size;
# writes experiments/peft_demo/results.{md,json}. About 45 min on 2 busy CPU cores.
#   bash experiments/peft_demo/run.sh            # STEPS=250 UPSTREAM=... OUT=... to change
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-250}
UPSTREAM=${UPSTREAM:-workdir/hubert_demo/iter2}
OUT=${OUT:-workdir/peft_demo}
METHODS=(full lora adalora ladder)
mkdir -p "$OUT"
for m in "${METHODS[@]}"; do
  if [[ -f "$OUT/$m/results.json" ]]; then continue; fi  # Resumable: finished runs are kept.
  "$PY" -m jaxssl.evaluate --config="configs/finetune/ctc_demo.py:peft=$m,steps=$STEPS" \
    --config.upstream="$UPSTREAM" --workdir="$OUT/$m" 2>&1 | grep -v Warning > "$OUT/$m.log"
done
# Demo size: the fine-tuning batch (8 utterances, here cut to 4 s each).
[[ -f "$OUT/bench_demo.json" ]] || "$PY" experiments/peft_demo/benchmark.py \
  --arch="$UPSTREAM" --batch=8 --seconds=4 --steps=5 --out="$OUT/bench_demo.json"
# BASE size (random init): 2 utterances of 4 s.
[[ -f "$OUT/bench_base.json" ]] || "$PY" experiments/peft_demo/benchmark.py \
  --arch=configs/wav2vec2/base.py --batch=2 --seconds=4 --steps=3 --out="$OUT/bench_base.json"
"$PY" experiments/peft_demo/make_table.py --runs="$OUT" --out=experiments/peft_demo
