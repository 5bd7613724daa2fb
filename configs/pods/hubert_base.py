"""HuBERT BASE on LibriSpeech 960 h (iteration 1 or 2), on a v5e-16 slice (16 chips, 4 hosts).

  tpu_scripts/preemptible.sh --name=hubert-base --zone=$ZONE --accelerator-type=v5litepod-16 \
      --runtime-version=v2-alpha-tpuv5-lite --bucket=$BUCKET --spot \
      --config=configs/pods/hubert_base.py:iteration=1 --workdir=/mnt/gcs/runs/hubert_it1
  python -m jaxssl.aot --config=configs/pods/hubert_base.py:iteration=1

configs/hubert/base.py unchanged in model, objective, optimizer and batches: fairseq's 32 GPU
batches of 1.4M samples, 2 per chip on a pure data-parallel mesh (the longest crop's batch,
160 x 250k samples, is 10 per chip), remat on
(as configs/pods/wav2vec2_base.py). The k-means labels live beside the dataset on the bucket
(data.labels).
"""
from configs import common
from configs import pods
from configs.hubert import base


def get_config(arg=None):
  arg = common.parse_arg(arg, iteration=1, runlocal=False)
  c = base.get_config(f"iteration={arg.iteration}")
  with c.unlocked():
    pods.on_pod(c, "v5e:4x4", data=-1, remat=True)
    if arg.runlocal:
      pods.runlocal(c)
  return c.lock()
