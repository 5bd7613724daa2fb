"""XLS-R 2B style multilingual wav2vec 2.0 on a v5e-256 slice, FSDP x tensor parallelism.

  tpu_scripts/preemptible.sh --name=xlsr-2b --zone=$ZONE --accelerator-type=v5litepod-256 \
      --runtime-version=v2-alpha-tpuv5-lite --bucket=$BUCKET --spot \
      --config=configs/pods/xlsr_2b.py --workdir=/mnt/gcs/runs/xlsr_2b
  python -m jaxssl.aot --config=configs/pods/xlsr_2b.py

As configs/pods/xlsr_1b.py with the XLS-R 2B encoder: 48 layers, 1920 wide, 7680 FFN, 16 heads
(HF's facebook/wav2vec2-xls-r-2b config), final_dim 1024. 2.2B parameters: f32 params + Adam
moments are 26 GB, sharded over fsdp=8 x tensor=2 (heads and FFN columns split over the tensor
axis, which also halves the widest activations); the batch (fairseq's 128 GPU groups, 384 x 20 s
at the longest crop) splits over data x fsdp = 128 (3 utterances per pair of chips), remat on.
"""
from configs import common
from configs import pods
from configs.wav2vec2 import xlsr


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = xlsr.get_config()
  with c.unlocked():
    c.model.variant = "xlsr_2b"
    pods.on_pod(c, "v5e:16x16", data=-1, fsdp=8, tensor=2, batch_multiple=128, remat=True)
    if arg.runlocal:
      pods.runlocal(c)
  return c.lock()
