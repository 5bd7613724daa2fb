#!/usr/bin/env bash
# Recipe sweep of the demo wav2vec 2.0 model: each variant is pretrained for the demo's 1,500 steps
# and its frozen features probed on phones (configs/probes/phone.py, lr 1e-3), then summarised.
#
#   bash experiments/2026-11-w2v2-demo-sweep/run.sh WORKDIR [NAME ...]   # default: every variant
#
# Writes WORKDIR/NAME (the run) and experiments/2026-11-w2v2-demo-sweep/runs/NAME (its probe's
# results and the pretraining run's last logged metrics); summarize.py then rebuilds summary.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=experiments/2026-11-w2v2-demo-sweep
work=${1:?usage: run.sh WORKDIR [NAME ...]}
shift

declare -A RUNS=(
  [base]=""
  [feature_grad_0.1]="--config.model.frontend.feature_grad_mult=0.1"
  [num_vars_320]="--config.quantizer.num_vars=320"
  [temp_decay_0.999]="--config.quantizer.temp=(2.0,0.5,0.999)"
  [diversity_1.0]="--config.objective.diversity_weight=1.0"
  [crop_4s_batch_4]="--config.data.crop_samples=64000 --config.data.batch_size=4"
  [min_2s]="--config.data.min_samples=32000"
  [layer_norm_cnn]="--config.model.frontend.mode=layer_norm --config.model.frontend.conv_bias=True"
  [conv_128]=":conv=128"
  [layers_6]=":layers=6"
  [layers_4_width_256]=":layers=4,width=256"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${!RUNS[@]}")

for name in "${names[@]}"; do
  spec=${RUNS[$name]:?unknown run $name}
  arg="" overrides=$spec
  if [[ $spec == :* ]]; then arg=$spec overrides=""; fi
  # shellcheck disable=SC2086  # The overrides are separate flags.
  python -m jaxssl.main --config="configs/wav2vec2/demo.py$arg" --workdir="$work/$name" \
      --config.evals.phone.every_steps=0 $overrides
  python -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream="$work/$name" \
      --config.optim.lr=1e-3 --workdir="$work/$name/probe_phone"
  mkdir -p "$here/runs/$name"
  cp "$work/$name/probe_phone/"{results.json,results.md,layer_weights.png} "$here/runs/$name/"
  tail -n 1 "$work/$name/metrics.jsonl" > "$here/runs/$name/pretrain_last.json"
done
python "$here/summarize.py"
