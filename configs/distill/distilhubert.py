"""DistilHuBERT: a 2-layer student distilled from HuBERT BASE on LibriSpeech 960 h.

Chang et al. 2022, https://arxiv.org/abs/2110.01900 ; s3prl pretrain/distiller (docs/reference.md):
HuBERT's CNN and 2 post-LN Transformer layers (768 / 3072 / 12 heads, dropout 0.1, no
LayerDrop, no LayerNorm after the CNN), initialised from the teacher; heads predict teacher
layers 4, 8, 12; 200k steps, lr 2e-4 with 7% warmup, batch 24, crops of 250k samples. The
student has 23,491,200 parameters without its heads (27,034,752 with the three).

  python -m jaxssl.convert --source=hf --model=facebook/hubert-base-ls960 --output=$CKPT/hubert
  python -m jaxssl.main --config=configs/distill/distilhubert.py --workdir=$RUNS/distilhubert \
      --config.distill.teacher=$CKPT/hubert

`:mixer=summary_mixing` (or fnet, hyena) swaps the student's token mixer; `:runlocal` shrinks it.
"""
import ml_collections as mlc

from configs import common
from configs import distill
from configs import mixers


def get_config(arg=None):
  arg = common.parse_arg(arg, teacher="workdir/hubert_base", mixer="mha", runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 200_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10

  c.data = common.data("librispeech", split="train_clean_100+train_clean_360+train_other_500",
                       crop_samples=250_000, batch_size=24)
  c.model = common.wav2vec2_model(
      dict(num_layers=2, embed_dim=768, mlp_dim=3072, num_heads=12), mixer=dict(name=arg.mixer),
      dropout_rate=0.1, attention_dropout_rate=0.1, activation_dropout_rate=0.1,
      input_dropout_rate=0.0, feature_dropout_rate=0.0, layerdrop_rate=0.0)
  distill.distill_sections(c, teacher=arg.teacher, target_layers=(4, 8, 12), target_dim=768)
  # s3prl: AdamW lr 2e-4, 7% linear warmup then linear decay, grad clip 5. Its YAML says weight
  # decay 1e-6, but s3prl's runner builds two parameter groups that override it: 0.01 for
  # parameters whose name holds none of "bias", "LayerNorm.bias", "LayerNorm.weight", else 0.
  # Its LayerNorms are named `layer_norm`, so only the biases escape: wd 0.01 on the rest.
  c.optim = common.adamw(lr=2e-4, weight_decay=0.01, clip_norm=5.0,
                         no_decay=mixers.no_decay(arg.mixer, r".*/bias"),
                         lr_groups=mixers.lr_groups(arg.mixer))
  c.schedule = dict(name="warmup_poly", warmup_steps=14_000, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  if arg.runlocal:
    distill.shrink_for_cpu(c)
  return c.lock()
