"""wav2vec 2.0 BASE on LibriSpeech 960 h, on a v5e-32 slice (32 chips, 8 hosts).

  tpu_scripts/preemptible.sh --name=w2v2-base --zone=$ZONE --accelerator-type=v5litepod-32 \
      --runtime-version=v2-alpha-tpuv5-lite --bucket=$BUCKET --spot \
      --config=configs/pods/wav2vec2_base.py --workdir=/mnt/gcs/runs/w2v2_base
  python -m jaxssl.aot --config=configs/pods/wav2vec2_base.py   # memory / FLOPs / step time

configs/wav2vec2/base.py unchanged in model, objective, optimizer and batches (fairseq's
wav2vec2_base_librispeech): its 64 fairseq groups split 2 per chip over a pure data-parallel mesh
(the longest crop's batch, 320 x 250k samples, is 10 per chip); BASE's 95M parameters and their
Adam moments fit on every chip unsharded.
Remat on: compiled without it, this recipe needed 15.73 of the 16 GiB per chip (14.65 GiB of
temporaries); with it 6.44 GiB (experiments/tpu_plan/results/).
"""
from configs import common
from configs import pods
from configs.wav2vec2 import base


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = base.get_config()
  with c.unlocked():
    pods.on_pod(c, "v5e:4x8", data=-1, remat=True)
    if arg.runlocal:
      pods.runlocal(c)
  return c.lock()
