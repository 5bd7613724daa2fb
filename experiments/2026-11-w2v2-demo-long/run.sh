#!/usr/bin/env bash
# The demo wav2vec 2.0 recipe trained 20,000 steps instead of 1,500, probed along the way.
#
#   bash experiments/2026-11-w2v2-demo-long/run.sh WORKDIR
#
# 1. pretrains configs/wav2vec2/demo.py for 20,000 steps (the same recipe: its linear decay now
#    spans 20,000 steps), keeping the checkpoints of every 2,500 steps;
# 2. probes phones on the checkpoints of steps 5,000 / 10,000 / 15,000 (configs/probes/phone.py,
#    lr 1e-3) into runs/step_N/;
# 3. runs the demo probe grid of experiments/2026-11-probes-demo (phone, speaker and language at
#    lr 1e-2 and 1e-3, best dev reported on test) on the final model, whose rows land in that
#    experiment's table as w2v2_demo_20k beside MFCC and random_init;
# 4. trains a second seed for half the budget (10,000 steps, its own decay) and probes phones
#    (lr 1e-3) and speakers (lr 1e-2, the rate that won for the 20,000-step model) into
#    runs/seed_1_steps_10000/.
# Resumable: a finished pretraining run or probe is not redone.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=experiments/2026-11-w2v2-demo-long
work=${1:?usage: run.sh WORKDIR}
data_dir=${DATA_DIR:-data/tfds}

python -m jaxssl.main --config=configs/wav2vec2/demo.py --workdir="$work/pretrain" \
    --config.data.data_dir="$data_dir" --config.total_steps=20000 \
    --config.ckpt.every_steps=2500 --config.ckpt.keep=8 --config.evals.phone.every_steps=0
mkdir -p "$here/runs"
cp "$work/pretrain/metrics.jsonl" "$here/runs/pretrain_metrics.jsonl"

for step in 5000 10000 15000; do
  probe=$work/probe_step_$step
  if [ ! -f "$probe/results.json" ]; then
    python -m jaxssl.evaluate --config=configs/probes/phone.py \
        --config.upstream="$work/pretrain/ckpt/$step" --config.data.data_dir="$data_dir" \
        --config.optim.lr=1e-3 --workdir="$probe"
  fi
  mkdir -p "$here/runs/step_$step"
  cp "$probe/"{results.json,results.md,layer_weights.png} "$here/runs/step_$step/"
done

python experiments/2026-11-probes-demo/run.py --data_dir="$data_dir" \
    --checkpoint="$work/pretrain" --label=w2v2_demo_20k --upstreams=checkpoint \
    --tasks=phone,speaker,language --out=experiments/2026-11-probes-demo

python -m jaxssl.main --config=configs/wav2vec2/demo.py --workdir="$work/seed1_10k" \
    --config.data.data_dir="$data_dir" --config.seed=1 --config.total_steps=10000 \
    --config.ckpt.every_steps=2500 --config.ckpt.keep=2 --config.evals.phone.every_steps=0
if [ ! -f "$work/seed1_10k/probe_phone/results.json" ]; then
  python -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream="$work/seed1_10k" \
      --config.data.data_dir="$data_dir" --config.optim.lr=1e-3 \
      --workdir="$work/seed1_10k/probe_phone"
fi
if [ ! -f "$work/seed1_10k/probe_speaker/results.json" ]; then
  python -m jaxssl.evaluate --config=configs/probes/speaker.py \
      --config.upstream="$work/seed1_10k" --config.data.data_dir="$data_dir" \
      --config.optim.lr=1e-2 --workdir="$work/seed1_10k/probe_speaker"
fi
for task in phone speaker; do
  mkdir -p "$here/runs/seed_1_steps_10000/$task"
  cp "$work/seed1_10k/probe_$task/"{results.json,results.md,layer_weights.png} \
      "$here/runs/seed_1_steps_10000/$task/"
done
cp "$work/seed1_10k/metrics.jsonl" "$here/runs/seed_1_steps_10000/pretrain_metrics.jsonl"
