"""BEST-RQ on LibriSpeech 960 h: SpeechBrain's recipe (Whetten et al. 2024).

Chiu et al. 2022, https://arxiv.org/abs/2202.01855 ; Whetten et al. 2024,
https://arxiv.org/abs/2405.04296 ; speechbrain/speechbrain commit 9c826ef,
recipes/LibriSpeech/self-supervised-learning/BEST-RQ/{hparams/BEST-RQ.yaml, train.py}.

  python -m jaxssl.main --config=configs/best_rq/base.py --workdir=$RUNS/best_rq --dry_run
  python -m jaxssl.main --config=configs/best_rq/base.py --workdir=$RUNS/best_rq

80-d fbank normalised per utterance, stacked by 4 (40 ms) -> 2 stride-2 convs (128, 32
channels) -> Linear 640 -> 576 -> 12 pre-norm Conformer layers (8 heads, FFN 2048, GELU, conv
kernel 31, dropout 0.1) -> Linear 576 -> 8192; targets from a frozen random projection (320 x 16)
and codebook (8192 x 16); 60% of each batch's shortest utterance masked with N(0, 0.1) noise
(mask_prob 0.15 x mask_length 4). AdamW(0.9, 0.98), eps 1e-9, weight decay 0.01, lr 8e-4 with
SpeechBrain's Noam schedule (25k warmup steps), gradient clipping at 10 (max_grad_norm),
bf16 (precision), 300k updates (optimizer_step_limit), utterances of 2 to 60 s
(avoid_if_shorter_than / avoid_if_longer_than).

Batches: dynamic batches of max_batch_len 400 s per GPU and grad_accumulation_factor 2; the yaml
asks for ~2 h of audio per update (400 s x GPUs x 2); `:gpus=8` (the default, 6,400 s) sets the
GPU count, each 400 s batch is one data.batch_groups block with its own mask (SpeechBrain draws
one mask per batch). The 2 accumulated batches of a GPU are 2 of the update's 16 blocks, trained
side by side (optim.grad_accum_steps 1): jaxssl's microbatches take every A-th row, which would
cut each block in two (and fail when a block has an odd number of rows). Departures: jaxssl's
dynamic batches crop each batch to its shortest utterance (fairseq's batching) where SpeechBrain
pads; the encoder's positional information is
jaxssl's conv positional embedding (no RelPosMHAXL); no streaming / dynamic-chunk attention
(`streaming: True` in the yaml, whose comment finds offline accuracy about equal).
`:runlocal` shrinks it for a CPU smoke run.
"""
import ml_collections as mlc

from configs import best_rq
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, gpus=8)
  accum = 2  # grad_accumulation_factor.
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 300_000  # optimizer_step_limit.
  c.log_every_steps = 500  # log_interval.
  c.max_consecutive_nonfinite = 10

  c.data = common.data("librispeech", split="train_clean_100+train_clean_360+train_other_500",
                       crop_samples=560_000)  # LibriSpeech's longest utterances: ~35 s.
  c.data.min_samples = 32_000  # avoid_if_shorter_than: 2.0 s.
  common.fairseq_batches(c.data, gpus=arg.gpus * accum, max_tokens=400 * 16_000, buckets=16)
  c.model = best_rq.model("tiny" if arg.runlocal else dict(best_rq.BASE_DIMS), dtype="bfloat16")
  best_rq.sections(c)
  c.optim = common.adamw(lr=8e-4, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.01, clip_norm=10.0)
  c.schedule = dict(name="noam", warmup_steps=25_000)  # NoamScheduler n_warmup_steps.
  c.distributed = common.distributed()
  c.mesh = common.mesh(data=-1)
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  if arg.runlocal:
    common.shrink_for_cpu(c)
    c.model.conformer.kernel_size = 7  # 31 shifted copies make a slow CPU compile.
    c.model.dtype = "float32"
  return c.lock()
