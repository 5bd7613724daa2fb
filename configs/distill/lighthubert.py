"""LightHuBERT: a once-for-all supernet distilled from HuBERT, Base or Small search space.

Wang et al. 2022, https://arxiv.org/abs/2203.15610 ; mechanicalsea/lighthubert
(config/supernet/Supernet-{Base,Small}.yaml; docs/reference.md). The supernet is the space's
largest architecture (Base: HuBERT BASE's shape, so the teacher's weights initialise all of it);
every step trains one subnet of a fixed menu (largest, smallest, default and `menu_size` random
per-layer choices; jaxssl/distill/supernet.py) on the shared weights with the DistilHuBERT loss
(heads predict teacher layers 4, 8, 12: the paper's exact distillation layers are not verified,
docs/reference.md). Any subnet is then extracted as a standalone checkpoint:

  python -m jaxssl.main --config=configs/distill/lighthubert.py:space=base \
      --workdir=$RUNS/lighthubert_base --config.distill.teacher=$CKPT/hubert
  python -m jaxssl.distill.extract_subnet --supernet=$RUNS/lighthubert_base --subnet=default \
      --output=$CKPT/lighthubert_base_default

Default subnets: Base 640-d / 10 heads / FFN 2560 / 12 layers = 66,890,880 parameters; Small
384-d / 6 heads / FFN 1536 / 12 layers = 26,872,960 (without heads; ≈ 66.89M and 26.87M).
`:space=demo` uses the demo teacher (configs/distill/demo.py).
"""
from configs import common
from configs import distill
from configs.distill import demo
from jaxssl.distill import supernet


def get_config(arg=None):
  arg = common.parse_arg(arg, space="base", teacher="", menu_size=8, runlocal=False)
  if arg.space == "demo":
    c = demo.get_config(f"teacher={arg.teacher or demo.DEMO_TEACHER},layers=3").unlock()
  else:
    c = _hubert_space(arg.teacher or "workdir/hubert_base")
  distill.supernet_section(c, space=arg.space, menu_size=arg.menu_size)
  if arg.runlocal:  # A tiny supernet (32-d, 2 layers, 16-d heads) for a tiny teacher.
    distill.shrink_for_cpu(c, 2)
    c.supernet.space = "tiny"
    c.student.subnet = supernet.get_space("tiny").largest.to_dict()
  return c.lock()


def _hubert_space(teacher):
  import ml_collections as mlc  # pylint: disable=g-import-not-at-top
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 200_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10
  c.data = common.data("librispeech", split="train_clean_100+train_clean_360+train_other_500",
                       crop_samples=250_000, batch_size=24)
  # The supernet's shape is set from the space's largest subnet (student.subnet); the variant
  # keeps HuBERT BASE's CNN and positional conv.
  c.model = common.wav2vec2_model("base", dropout_rate=0.0, attention_dropout_rate=0.0,
                                  input_dropout_rate=0.0, feature_dropout_rate=0.0,
                                  layerdrop_rate=0.0)
  distill.distill_sections(c, teacher=teacher, target_layers=(4, 8, 12), target_dim=768,
                           feature_layer_norm=True)
  c.optim = common.adamw(lr=2e-4, weight_decay=1e-6, clip_norm=5.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=14_000, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  return c
