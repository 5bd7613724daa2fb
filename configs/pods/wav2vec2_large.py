"""wav2vec 2.0 LARGE (LV-60 style) on a v5e-256 slice (256 chips, 64 hosts).

  tpu_scripts/preemptible.sh --name=w2v2-large --zone=$ZONE --accelerator-type=v5litepod-256 \
      --runtime-version=v2-alpha-tpuv5-lite --bucket=$BUCKET --spot \
      --config=configs/pods/wav2vec2_large.py --workdir=/mnt/gcs/runs/w2v2_large
  python -m jaxssl.aot --config=configs/pods/wav2vec2_large.py

configs/wav2vec2/large.py unchanged in model, objective and optimizer. Its batches are fairseq's
128 GPU batches of 1.2M samples; those do not divide over 256 chips, so every batch size is
rounded to a multiple of 256 (data.dynamic_batch_multiple): the longest crop's 384 x 320k
samples become 512 (2 per chip, +33% audio at that length; shorter buckets round both ways). FSDP over 4 chips cuts the replicated f32 state
(params + Adam moments, 3.8 GB) to a quarter; remat keeps 2 x 1,000 frames x 24 layers of
activations within the v5e's 16 GiB.
"""
from configs import common
from configs import pods
from configs.wav2vec2 import large


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = large.get_config()
  with c.unlocked():
    pods.on_pod(c, "v5e:16x16", data=-1, fsdp=4, batch_multiple=256, remat=True)
    if arg.runlocal:
      pods.runlocal(c)
  return c.lock()
