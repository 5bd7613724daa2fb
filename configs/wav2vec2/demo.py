"""wav2vec 2.0 on the embedded demo corpus: a small model that learns in minutes on 2 CPU cores.

This is the README's main job:

  python -m jaxssl.main --config=configs/wav2vec2/demo.py --workdir=workdir/w2v2_demo

It follows the LARGE / XLS-R recipe (pre-LN Transformer, normalised waveforms, no CNN gradient
scaling, no feature penalty) at a small size, with a higher learning rate and no dropout. The
BASE recipe's feature penalty (x10) under Adam shrinks the untrained CNN's output towards zero
within ~200 steps and, with the gradient scaling of 0.1, keeps the random CNN's phase-sensitive
frames, whose quantized codes no context can predict: the contrastive loss then sits at log(K+1)
for thousands of steps. This recipe leaves that plateau after ~250 steps.
`:runlocal` shrinks it further to a few steps (used by the tests). `:layers=6,width=256,conv=128`
resizes the demo model (0 keeps the `demo` variant's value; the MLP is 4 x width), as the sweep in
experiments/2026-11-w2v2-demo-sweep does.
"""
import dataclasses

import ml_collections as mlc

from configs import common
from configs import probes
from jaxssl.models import variants


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, layers=0, width=0, conv=0)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 1_500
  c.log_every_steps = 50
  c.max_consecutive_nonfinite = 10  # Skipped updates in a row before the run stops.

  c.data = common.data("demo_corpus", crop_samples=32_000, batch_size=8)
  c.data.normalize = True

  c.model = common.wav2vec2_model(
      _variant(arg), layer_norm_first=True,
      frontend=dict(name="cnn", mode="default", conv_bias=False, feature_grad_mult=1.0),
      dropout_rate=0.0, attention_dropout_rate=0.0, layerdrop_rate=0.0)
  common.wav2vec2_sections(c, num_vars=64, temp=(2.0, 0.5, 0.995), num_negatives=20,
                           feature_penalty_weight=0.0)
  c.optim = common.adamw(lr=2e-3, weight_decay=0.01, clip_norm=10.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=150, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=500, keep=2)
  c.evals = dict(phone=probes.pretraining_eval("phone", every_steps=500))  # PER vs compute.
  if arg.runlocal:
    common.shrink_for_cpu(c)
  return c.lock()


def _variant(arg):
  """The `demo` variant's name, or its dimensions with the sizes given in `arg` replaced."""
  if not (arg.layers or arg.width or arg.conv):
    return "demo"
  if arg.runlocal:
    raise ValueError("configs/wav2vec2/demo.py: runlocal uses the tiny variant; drop "
                     "layers / width / conv.")
  dims = dataclasses.asdict(variants.get("demo"))
  dims["num_layers"] = arg.layers or dims["num_layers"]
  if arg.width:
    dims["embed_dim"], dims["mlp_dim"] = arg.width, 4 * arg.width
  dims["conv_dim"] = arg.conv or dims["conv_dim"]
  return dims
