"""XLS-R 1B style multilingual wav2vec 2.0 on a v5e-256 slice, FSDP over 8 chips.

  tpu_scripts/preemptible.sh --name=xlsr-1b --zone=$ZONE --accelerator-type=v5litepod-256 \
      --runtime-version=v2-alpha-tpuv5-lite --bucket=$BUCKET --spot \
      --config=configs/pods/xlsr_1b.py --workdir=/mnt/gcs/runs/xlsr_1b
  python -m jaxssl.aot --config=configs/pods/xlsr_1b.py

configs/wav2vec2/xlsr.py (the LARGE recipe with temperature sampling over languages, alpha 0.5,
and per-language metrics) with the XLS-R 1B encoder: 48 layers, 1280 wide, 5120 FFN, 16 heads,
final_dim 1024 (jaxssl/models/variants.py; Babu et al. 2021, https://arxiv.org/abs/2111.09296).
Batch and learning rate are those of configs/pods/wav2vec2_large.py (fairseq LARGE's 128 GPU
batches of 1.2M samples, rounded to multiples of 256: 512 x 20 s at the longest crop); XLS-R's own
update size is not given in a config we could check. 965M parameters: their f32 state (params +
Adam, 11.6 GB) is sharded over fsdp=8, the batch over all 256 chips (2 each), remat on.
"""
from configs import common
from configs import pods
from configs.wav2vec2 import xlsr


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = xlsr.get_config()
  with c.unlocked():
    c.model.variant = "xlsr_1b"
    pods.on_pod(c, "v5e:16x16", data=-1, fsdp=8, batch_multiple=256, remat=True)
    if arg.runlocal:
      pods.runlocal(c)
  return c.lock()
