"""data2vec 2.0 on the embedded demo corpus: a small model for 2 CPU cores.

  python -m jaxssl.main --config=configs/data2vec2/demo.py --workdir=workdir/d2v2_demo

The BASE recipe (configs/data2vec2/base.py) at the `demo` size (3 blocks of 128, 4 heads):
4 masks per utterance instead of 8, targets from all 3 blocks, a 2-layer decoder of 64 channels,
no dropout, and a teacher that follows faster (decay 0.99 -> 0.999 over 400 updates instead of
0.999 -> 0.99999 over 75k) for a run of 800 updates. `:runlocal` shrinks it to a few steps of
the tiny model (used by the tests).
"""
import ml_collections as mlc

from configs import common
from configs import data2vec2


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 800
  c.log_every_steps = 25
  c.max_consecutive_nonfinite = 10

  c.data = common.data("demo_corpus", crop_samples=32_000, batch_size=8)
  c.data.normalize = True
  c.model = data2vec2.model("demo", dropout_rate=0.0, attention_dropout_rate=0.0,
                            layerdrop_rate=0.0)
  data2vec2.sections(c, clone_batch=4, top_k=3, ema=(0.99, 0.999, 400))
  c.objective.decoder.update(dim=64, groups=8, num_layers=2, input_dropout=0.0)
  c.optim = common.adamw(lr=1e-3, weight_decay=0.01, clip_norm=10.0,
                         no_decay=data2vec2.NO_DECAY)
  c.schedule = dict(name="cosine", warmup_steps=80, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=200, keep=2)
  if arg.runlocal:
    common.shrink_for_cpu(c)
    c.objective.clone_batch = 2
    c.objective.average_top_k_layers = 2      # The tiny variant has 2 blocks.
    c.objective.decoder.update(dim=16, groups=4)
  return c.lock()
