"""wav2vec 2.0 BASE on LibriSpeech 960 h (fairseq wav2vec2_base_librispeech.yaml).

  python -m jaxssl.data.build --dataset=librispeech --source=/path/to/LibriSpeech --data_dir=$TFDS
  python -m jaxssl.main --config=configs/wav2vec2/base.py --workdir=gs://$BUCKET/w2v2_base \
      --config.data.data_dir=$TFDS --config.distributed.coordinator=auto

Batches as fairseq's (64 GPUs x max_tokens 1.4M samples, max_sample_size 250k, min 32k; no
padding): 64 groups of length-bucketed utterances cropped to their bucket's shortest, about 1.43 h
of audio per update on LibriSpeech 960 h (fairseq: at most 1.56 h, ~1.43 h after its batches
round down). The longest bucket is 320 x 15.6 s. Each group is one of fairseq's GPU batches for
the mask trim and the diversity loss (configs/common.py fairseq_batches, docs/fairseq.md).
`:runlocal` shrinks everything for a CPU smoke run.
"""
import ml_collections as mlc

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 400_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10

  c.data = common.data("librispeech", split="train_clean_100+train_clean_360+train_other_500",
                       crop_samples=250_000)
  c.data.min_samples = 32_000
  common.fairseq_batches(c.data, gpus=64, max_tokens=1_400_000)

  c.model = common.wav2vec2_model("base")  # Post-LN, group-norm extractor, grad mult 0.1.
  common.wav2vec2_sections(c)
  c.optim = common.adamw(lr=5e-4, weight_decay=0.01)
  c.schedule = dict(name="warmup_poly", warmup_steps=32_000, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh(data=-1)
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  if arg.runlocal:
    common.shrink_for_cpu(c)
  return c.lock()
