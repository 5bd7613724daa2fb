"""data2vec 2.0 BASE on LibriSpeech 960 h (fairseq examples/data2vec/config/v2/
base_audio_only_task.yaml).

  python -m jaxssl.main --config=configs/data2vec2/base.py --workdir=gs://$BUCKET/d2v2_base \
      --config.data.data_dir=$TFDS --config.distributed.coordinator=auto

Batches as fairseq's (8 GPUs x max_tokens 1M samples, max_sample_size 320k, min 32k, normalize
true; no padding), each utterance masked clone_batch = 8 times. 400k updates of Adam (0.9, 0.98,
eps 1e-6, decoupled weight decay 0.01, none on 1-D params) at 7.5e-4, cosine after 8k warmup.
The EMA teacher's decay goes 0.999 -> 0.99999 over 75k updates. fairseq trains in fp16; this
config computes in float32 (set model.dtype=bfloat16 on accelerators). `:runlocal` shrinks it.
"""
import ml_collections as mlc

from configs import common
from configs import data2vec2


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 400_000                       # max_update.
  c.log_every_steps = 200                       # log_interval.
  c.max_consecutive_nonfinite = 10

  c.data = common.data("librispeech", split="train_clean_100+train_clean_360+train_other_500",
                       crop_samples=320_000)    # max_sample_size.
  c.data.min_samples = 32_000                   # min_sample_size.
  c.data.normalize = True
  common.fairseq_batches(c.data, gpus=8, max_tokens=1_000_000)

  c.model = data2vec2.model("base")             # depth 12, embed_dim 768, num_heads 12.
  data2vec2.sections(c)
  c.optim = common.adamw(lr=7.5e-4, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-6,
                         no_decay=data2vec2.NO_DECAY)
  c.schedule = dict(name="cosine", warmup_steps=8_000, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh(data=-1)
  c.ckpt = common.ckpt(every_steps=25_000, keep=1)  # save_interval_updates, keep 1.
  if arg.runlocal:
    common.shrink_for_cpu(c)
    c.objective.clone_batch = 2
    c.objective.average_top_k_layers = 2
    c.objective.decoder.update(dim=32, groups=4, num_layers=2)
  return c.lock()
