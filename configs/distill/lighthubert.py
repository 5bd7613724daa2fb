"""LightHuBERT: a once-for-all supernet distilled from HuBERT, Base or Small search space.

Wang et al. 2022, https://arxiv.org/abs/2203.15610 ; mechanicalsea/lighthubert
(config/supernet/Supernet-{Base,Small}.yaml, lighthubert.py; docs/reference.md). Both supernets
are HuBERT BASE's shape (768-d, 12 heads, FFN 3072, 12 layers); the space says which subnets
are drawn. Two stages (jaxssl/distill/lighthubert.py):

  python -m jaxssl.main --config=configs/distill/lighthubert.py:space=small,stage=1 \
      --workdir=$RUNS/lighthubert_stage1 --config.distill.teacher=$CKPT/hubert
  python -m jaxssl.main --config=configs/distill/lighthubert.py:space=small,stage=2,\
stage1=$RUNS/lighthubert_stage1 --workdir=$RUNS/lighthubert_small \
      --config.distill.teacher=$CKPT/hubert
  python -m jaxssl.distill.extract_subnet --supernet=$RUNS/lighthubert_small --subnet=default \
      --output=$CKPT/lighthubert_small_default

The model follows the reference's defaults: layer-norm CNN on a layer-normalised waveform (the
teacher still reads its own input), dropout 0.1, attention dropout 0.1, no activation dropout,
no LayerDrop, masks of p 0.65 and 10 frames, a bias-free head predicting the teacher's last
layer. Training values the repository does not ship (steps, batch, learning rate) are
DistilHuBERT's. Default subnets: Base 640-d / 10 heads / FFN 2560 / 12 layers = 66,897,024
parameters; Small 384-d / 6 heads / FFN 1536 / 12 layers = 26,879,104 (without the head; with
the layer-norm CNN, which has 6,144 more parameters than HuBERT BASE's group-norm one).
`:space=demo` is the demo teacher's supernet (configs/distill/demo.py); `:runlocal` a tiny one.
"""
import ml_collections as mlc

from configs import common
from configs import distill
from configs.distill import demo


def get_config(arg=None):
  arg = common.parse_arg(arg, space="base", stage=2, stage1="", teacher="", runlocal=False)
  if arg.space == "demo":
    c = demo.get_config(f"teacher={arg.teacher or demo.DEMO_TEACHER},layers=3").unlock()
    c.distill.target_layers = (3,)
    distill.lighthubert_sections(c, space="demo", stage=arg.stage, stage1=arg.stage1)
  else:
    c = _hubert_space(arg.teacher or "workdir/hubert_base")
    distill.lighthubert_sections(c, space=arg.space, stage=arg.stage, stage1=arg.stage1,
                                 normalize=True)
  if arg.runlocal:  # The tiny space (32-d, 2 x 16-d heads, 2 layers) for a tiny teacher.
    distill.shrink_for_cpu(c, 2)
    c.distill.target_layers = (2,)
    c.lighthubert.space = "tiny"
    c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  return c.lock()


def _hubert_space(teacher):
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 200_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10
  c.data = common.data("librispeech", split="train_clean_100+train_clean_360+train_other_500",
                       crop_samples=250_000, batch_size=24)
  c.model = common.wav2vec2_model(
      "base", frontend=dict(name="cnn", mode="layer_norm", conv_bias=False, feature_grad_mult=1.0),
      dropout_rate=0.1, attention_dropout_rate=0.1, activation_dropout_rate=0.0,
      input_dropout_rate=0.0, feature_dropout_rate=0.0, layerdrop_rate=0.0)
  distill.distill_sections(c, teacher=teacher, target_layers=(12,), target_dim=768,
                           feature_layer_norm=True)
  c.optim = common.adamw(lr=2e-4, weight_decay=0.01, no_decay=r".*/bias", clip_norm=5.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=14_000, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  return c
