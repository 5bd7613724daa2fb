"""DistilHuBERT on the demo corpus: a 2-layer student of the demo HuBERT teacher (3 layers).

The teacher is the iteration-2 demo HuBERT (configs/hubert/demo.py:iteration=2, pre-LN, 128-d,
3 layers, normalised audio); the student keeps its CNN, projection, positional conv and first 2
layers (copied from the teacher) and predicts teacher layers 1, 2, 3 (the demo teacher has no
layer 4, 8 or 12). Otherwise s3prl's recipe: no LayerNorm after the CNN, s3prl's copy scope,
its effective optimizer (weight decay 0.01, none on biases; configs/distill/distilhubert.py),
at a demo learning rate and length. The LightHuBERT supernet of the same teacher is
configs/distill/lighthubert.py:space=demo.

  python -m jaxssl.main --config=configs/distill/demo.py --workdir=workdir/distill_demo/student \
      --config.distill.teacher=workdir/hubert_demo/iter2
  python experiments/distill_demo/run.py      # student, supernet, subnets, probes, table

`:runlocal` shrinks it to a few steps (the teacher must then be a tiny one).
"""
import ml_collections as mlc

from configs import common
from configs import distill

DEMO_TEACHER = "workdir/hubert_demo/iter2"
# The demo variant with 2 layers (models/variants.py "demo").
DEMO_DIMS = dict(embed_dim=128, mlp_dim=512, num_heads=4, conv_dim=64, final_dim=64,
                 pos_conv_kernel=32, pos_conv_groups=8)


def get_config(arg=None):
  arg = common.parse_arg(arg, teacher=DEMO_TEACHER, layers=2, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 600
  c.log_every_steps = 25
  c.max_consecutive_nonfinite = 10

  c.data = common.data("demo_corpus", crop_samples=32_000, batch_size=8)
  c.data.normalize = True  # As the teacher's pretraining.
  c.model = common.wav2vec2_model(
      dict(num_layers=arg.layers, **DEMO_DIMS), layer_norm_first=True,
      frontend=dict(name="cnn", mode="default", conv_bias=False, feature_grad_mult=1.0),
      dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.0,
      input_dropout_rate=0.0, feature_dropout_rate=0.0, layerdrop_rate=0.0)
  distill.distill_sections(c, teacher=arg.teacher, target_layers=(1, 2, 3), target_dim=128)
  c.optim = common.adamw(lr=1e-3, weight_decay=0.01, no_decay=r".*/bias", clip_norm=5.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=50, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=200, keep=2)
  if arg.runlocal:
    distill.shrink_for_cpu(c, arg.layers)
  return c.lock()
