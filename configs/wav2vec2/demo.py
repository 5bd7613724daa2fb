"""wav2vec 2.0 on the embedded demo corpus: a small model that learns in minutes on 2 CPU cores.

This is the README's main job:

  python -m jaxssl.main --config=configs/wav2vec2/demo.py --workdir=workdir/w2v2_demo

`:runlocal` shrinks it further to a few steps (used by the tests).
"""
import ml_collections as mlc

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = mlc.ConfigDict()
  c.trainer = "pretrain"
  c.seed = 0
  c.total_steps = 600
  c.log_every_steps = 20
  c.max_consecutive_nonfinite = 10  # Skipped updates in a row before the run stops.

  c.data = common.data("demo_corpus", crop_samples=32_000, batch_size=8)

  c.model = common.wav2vec2_model("demo")
  c.masking = dict(prob=0.65, span=10, min_spans=2)
  c.quantizer = dict(num_groups=2, num_vars=64, temp=(2.0, 0.5, 0.995))
  c.objective = dict(name="wav2vec2", num_negatives=20, cross_sample_negatives=0, logit_temp=0.1,
                     diversity_weight=0.1, feature_penalty_weight=10.0, num_languages=0)
  c.optim = common.adamw(lr=5e-4, weight_decay=0.01, clip_norm=10.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=60, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=200, keep=2)
  if arg.runlocal:
    common.shrink_for_cpu(c)
  return c.lock()
