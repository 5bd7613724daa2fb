"""HuBERT BASE on LibriSpeech 960 h (fairseq hubert_base_librispeech.yaml), iteration 1 or 2.

Hsu et al. 2021, https://arxiv.org/abs/2106.07447

  TRAIN=train_clean_100+train_clean_360+train_other_500
  python -m jaxssl.kmeans --dataset=librispeech --data_dir=$TFDS --features=mfcc \
      --num_clusters=100 --name=km100_mfcc --fit_split=$TRAIN --splits=$TRAIN,dev_clean
  python -m jaxssl.main --config=configs/hubert/base.py:iteration=1 --workdir=$RUNS/hubert_it1
  python -m jaxssl.kmeans --dataset=librispeech --data_dir=$TFDS --features=layer --layer=6 \
      --checkpoint=$RUNS/hubert_it1 --num_clusters=500 --name=km500_it1_l6 --fit_split=$TRAIN \
      --splits=$TRAIN,dev_clean
  python -m jaxssl.main --config=configs/hubert/base.py:iteration=2 --workdir=$RUNS/hubert_it2

Iteration 1 predicts K = 100 MFCC units at 100 Hz, iteration 2 K = 500 units of layer 6 of the
iteration-1 model at 50 Hz (Hsu et al. 2021 §IV.A). The encoder is wav2vec 2.0 BASE (post-LN,
group-norm extractor, CNN gradients x0.1); four fairseq dictionary specials join the K label
embeddings, so iteration 2 has 94,697,600 parameters. Batches as fairseq's: 32 GPUs x max_tokens
1.4M samples, crops of at most 250k, no padding (configs/common.py fairseq_batches); the longest
bucket is 160 x 15.6 s.
Updates: the paper trains iteration 1 for 250k updates and iteration 2 for 400k; fairseq's
hubert_base_librispeech.yaml says max_update 400k for any iteration. `:iteration_1_updates=`
picks iteration 1's (default 250k, the paper's).
"""
import ml_collections as mlc

from configs import common
from configs import hubert


def get_config(arg=None):
  arg = common.parse_arg(arg, iteration=1, iteration_1_updates=250_000, runlocal=False)
  if arg.iteration not in (1, 2):
    raise ValueError(f"configs/hubert/base.py: iteration={arg.iteration}; choose 1 or 2.")
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = arg.iteration_1_updates if arg.iteration == 1 else 400_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10

  c.data = common.data("librispeech", split="train_clean_100+train_clean_360+train_other_500",
                       crop_samples=250_000)
  c.data.min_samples = 32_000
  common.fairseq_batches(c.data, gpus=32, max_tokens=1_400_000)
  c.model = common.wav2vec2_model("base")  # Post-LN, group-norm extractor, grad mult 0.1.
  if arg.iteration == 1:
    hubert.labels_and_objective(c, labels="km100_mfcc", label_rate=100, num_clusters=100,
                                num_extra_embeddings=hubert.FAIRSEQ_DICT_SPECIALS)
  else:
    hubert.labels_and_objective(c, labels="km500_it1_l6", label_rate=50, num_clusters=500,
                                num_extra_embeddings=hubert.FAIRSEQ_DICT_SPECIALS)
  c.optim = common.adamw(lr=5e-4, weight_decay=0.01, clip_norm=10.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=32_000, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh(data=-1)
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  if arg.runlocal:
    common.shrink_for_cpu(c)
  return c.lock()
