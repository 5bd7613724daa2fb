#!/usr/bin/env bash
# Speaker (or language) ID fine-tuning of the HuBERT demo encoder with full FT, LoRA, ladder
# side-tuning and AdaLoRA on the demo corpus (configs/finetune/utterance_demo.py); one workdir
# per method under $OUT, each with results.json / results.md; a run past $LIMIT seconds is cut.
#   bash experiments/peft_demo/run_utterance.sh   # TASK=language STEPS=... UPSTREAM=... OUT=...
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
TASK=${TASK:-speaker}
STEPS=${STEPS:-150}
LIMIT=${LIMIT:-600}
UPSTREAM=${UPSTREAM:-workdir/hubert_demo/iter2}
OUT=${OUT:-workdir/peft_demo/$TASK}
METHODS=(${METHODS:-lora full ladder adalora})
mkdir -p "$OUT"
for m in "${METHODS[@]}"; do
  if [[ -f "$OUT/$m/results.json" ]]; then continue; fi  # Resumable: finished runs are kept.
  timeout "$LIMIT" nice -n 10 "$PY" -m jaxssl.evaluate \
    --config="configs/finetune/utterance_demo.py:task=$TASK,peft=$m,steps=$STEPS" \
    --config.upstream="$UPSTREAM" --workdir="$OUT/$m" 2>&1 | grep -v Warning > "$OUT/$m.log"
  echo "$m: exit ${PIPESTATUS[0]}"
done
