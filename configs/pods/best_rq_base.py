"""BEST-RQ on LibriSpeech 960 h (SpeechBrain's recipe), on a v5e-16 slice (16 chips, 4 hosts).

  tpu_scripts/preemptible.sh --name=best-rq-base --zone=$ZONE --accelerator-type=v5litepod-16 \
      --runtime-version=v2-alpha-tpuv5-lite --bucket=$BUCKET --spot \
      --config=configs/pods/best_rq_base.py --workdir=/mnt/gcs/runs/best_rq_base
  python -m jaxssl.aot --config=configs/pods/best_rq_base.py

configs/best_rq/base.py unchanged in model, objective, optimizer schedule and batches: SpeechBrain's
8 GPU batches of 400 s x grad_accumulation_factor 2, i.e. 6,400 s per update in 16 batches with a
mask each (data.batch_groups), side by side (no accumulation). Here they run one per chip, on a
pure data-parallel mesh: at the longest crop (35 s) the update's 176 utterances are 11 per chip,
one GPU's 400 s batch. The 93M parameters and their Adam moments fit on every chip unsharded;
remat on, as the other BASE pods.
"""
from configs import common
from configs import pods
from configs.best_rq import base


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = base.get_config()
  with c.unlocked():
    pods.on_pod(c, "v5e:4x4", data=-1, remat=True)
    if arg.runlocal:
      del c.model["variant"]  # BASE's sizes as a dict (best_rq.BASE_DIMS): the tiny one instead.
      pods.runlocal(c)
      c.model.conformer.kernel_size = 7  # As configs/best_rq/base.py:runlocal.
  return c.lock()
