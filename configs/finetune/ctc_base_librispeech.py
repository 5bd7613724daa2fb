"""CTC fine-tuning of a BASE model on LibriSpeech train-clean-100 (fairseq base_100h.yaml).

  python -m jaxssl.evaluate --config=configs/finetune/ctc_base_librispeech.py \
      --config.upstream=ckpts/w2v2_base --config.data.data_dir=data/tfds \
      --workdir=workdir/finetune/base_100h

fairseq examples/wav2vec/config/finetuning/base_100h.yaml: 80k updates, lr 3e-5, Adam (0.9,
0.98, eps 1e-8), tri-stage (0.1 / 0.4 / 0.5, final scale 0.05), letters, frozen CNN
(feature_grad_mult 0), freeze_finetune_updates 0 (`:hours=10` gives base_10h: 20k updates,
lr 5e-5, 10k frozen updates, LayerDrop 0.05), mask_prob 0.65 of 10 frames, LayerDrop 0.1,
activation dropout 0.1, about 1,600 s of audio per update (here 128 utterances of ~12.7 s,
in 8 accumulated microbatches). Scored by greedy WER on dev_clean / test_clean, no LM.
Not reproduced: channel masking (mask_channel_prob 0.5); batches are by count, not by tokens.
This recipe has not been run here (no LibriSpeech or accelerator on the project machine).
"""
import ml_collections as mlc

from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, hours=100, runlocal=False)
  c = mlc.ConfigDict()
  c.task = "ctc_finetune"
  c.upstream = ""
  c.upstream_arch = "configs/wav2vec2/base.py"
  c.seed = 0
  c.total_steps = 80_000 if arg.hours == 100 else 20_000
  c.eval_every_steps = 5_000
  c.log_every_steps = 200

  c.data = common.data("librispeech", batch_size=128)
  c.splits = probes.splits("librispeech")
  c.model = dict(dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.1,
                 input_dropout_rate=0.0, feature_dropout_rate=0.0,
                 layerdrop_rate=0.1 if arg.hours == 100 else 0.05, feature_grad_mult=0.0)
  c.masking = dict(prob=0.65, span=10, min_spans=2)
  c.optim = common.adamw(lr=3e-5 if arg.hours == 100 else 5e-5, weight_decay=0.0, eps=1e-8,
                         trainable=r"speech_encoder/(?!feature_extractor/).*|ctc_proj/.*")
  c.optim.grad_accum_steps = 8
  c.schedule = dict(name="tri_stage", phase_ratio=(0.1, 0.4, 0.5), init_lr_scale=0.01,
                    final_lr_scale=0.05)
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=c.total_steps, keep=2)
  c.finetune = dict(labels="chars", freeze_encoder_steps=0 if arg.hours == 100 else 10_000,
                    final_dropout_rate=0.0)
  if arg.runlocal:
    c.total_steps, c.eval_every_steps, c.log_every_steps = 4, 2, 1
    c.data.batch_size, c.optim.grad_accum_steps = 8, 1
    c.finetune.freeze_encoder_steps = 2
  return c.lock()
