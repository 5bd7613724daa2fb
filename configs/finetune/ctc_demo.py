"""CTC fine-tuning of the demo wav2vec 2.0 model on the demo corpus (fairseq's recipe, small).

  python -m jaxssl.evaluate --config=configs/finetune/ctc_demo.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/finetune/ctc_demo
  # ... :labels=chars for letters (WER / CER); --config.upstream=random_init trains from scratch.

fairseq examples/wav2vec/config/finetuning/base_10h.yaml at demo scale: Adam (0.9, 0.98, eps 1e-8,
no weight decay), tri-stage schedule (phase ratio 0.1 / 0.4 / 0.5, final scale 0.05), frozen CNN,
encoder frozen for the first 10% of updates (freeze_finetune_updates), time masks p=0.65 of 10
frames, LayerDrop 0.05 and activation dropout 0.1. A higher peak lr (5e-4 instead of 5e-5) and 1,000
updates of 8 utterances (~7 epochs) fit the 760k-parameter demo model in a few minutes on 2 cores.
Phones (PER) by default: the demo texts are random words of 8 languages.
`:peft=lora|adalora|ladder|full` fine-tunes parameter-efficiently (configs/finetune/peft.py);
the default (no `peft` section) is the recipe above, the same as peft=full. `:steps=N` shortens
the run (evaluation every N/4 updates, encoder frozen for the first N/10, AdaLoRA's phases
scaled alike).
"""
import ml_collections as mlc

from configs import common
from configs import probes
from configs.finetune import peft


def get_config(arg=None):
  arg = common.parse_arg(arg, labels="phones", runlocal=False, peft="", steps=1_000)
  c = mlc.ConfigDict()
  c.task = "ctc_finetune"
  c.upstream = ""                 # A pretrained checkpoint dir, or random_init.
  c.upstream_arch = "configs/wav2vec2/demo.py"  # random_init's architecture.
  c.seed = 0
  c.total_steps = arg.steps
  c.eval_every_steps = max(arg.steps // 4, 1)  # Dev decoding; the best dev step is tested.
  c.log_every_steps = 50

  c.data = common.data("demo_corpus", batch_size=8)
  c.splits = probes.splits("demo_corpus")
  # Overrides of the pretrained model's `model` section (fairseq wav2vec_ctc's arg_overrides).
  c.model = dict(dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.1,
                 input_dropout_rate=0.0, feature_dropout_rate=0.0, layerdrop_rate=0.05,
                 feature_grad_mult=0.0)
  c.masking = dict(prob=0.65, span=10, min_spans=2)
  c.optim = common.adamw(lr=5e-4, weight_decay=0.0, eps=1e-8,
                         trainable=r"speech_encoder/(?!feature_extractor/).*|ctc_proj/.*")
  c.schedule = dict(name="tri_stage", phase_ratio=(0.1, 0.4, 0.5), init_lr_scale=0.01,
                    final_lr_scale=0.05)
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=c.total_steps, keep=2)
  c.finetune = dict(labels=arg.labels, freeze_encoder_steps=arg.steps // 10,
                    final_dropout_rate=0.0)
  if arg.runlocal:
    c.total_steps, c.eval_every_steps, c.log_every_steps = 4, 2, 1
    c.finetune.freeze_encoder_steps = 2
  if arg.peft:
    peft.apply(c, arg.peft)
  return c.lock()
