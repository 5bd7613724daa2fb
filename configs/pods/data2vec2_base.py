"""data2vec 2.0 BASE on LibriSpeech 960 h, on a v5e-8 slice (8 chips, one host).

  tpu_scripts/preemptible.sh --name=d2v2-base --zone=$ZONE --accelerator-type=v5litepod-8 \
      --runtime-version=v2-alpha-tpuv5-lite --bucket=$BUCKET --spot \
      --config=configs/pods/data2vec2_base.py --workdir=/mnt/gcs/runs/d2v2_base
  python -m jaxssl.aot --config=configs/pods/data2vec2_base.py

configs/data2vec2/base.py (fairseq's base_audio_only_task.yaml) unchanged in model, objective,
optimizer and batches: fairseq's 8 GPU batches of max_tokens 1.0M samples (62.5 s), crops up to
320k samples (20 s), each utterance masked clone_batch = 8 times, on a pure data-parallel mesh of
one chip per GPU: at the longest crop the update's 24 utterances are 3 per chip (24 student rows
of 20 s less the 41% masked frames, and one teacher pass over the 3). The 94M parameters, their
Adam moments and the EMA teacher's copy of the encoder fit on every chip unsharded; remat on.
"""
from configs import common
from configs import pods
from configs.data2vec2 import base


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = base.get_config()
  with c.unlocked():
    pods.on_pod(c, "v5e:2x4", data=-1, remat=True)
    if arg.runlocal:
      pods.runlocal(c)
      c.objective.clone_batch = 2  # As configs/data2vec2/base.py:runlocal.
      c.objective.average_top_k_layers = 2
      c.objective.decoder.update(dim=32, groups=4, num_layers=2)
  return c.lock()
