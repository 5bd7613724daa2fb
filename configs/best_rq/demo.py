"""BEST-RQ on the embedded demo corpus: learns in minutes on CPU.

Chiu et al. 2022, https://arxiv.org/abs/2202.01855 ; SpeechBrain's recipe (configs/best_rq/base.py)
with the `demo` encoder size (3 Conformer layers of 128, 4 heads, FFN 512), 2 s crops, batches of
8 (one mask per batch, as SpeechBrain), no dropout, and lr 2e-3 under the recipe's Noam schedule
with 100 warmup steps. The quantizer, masking (0.15 x 4), noise (N(0, 0.1)) and the 8192 codes
are the recipe's.

  python -m jaxssl.main --config=configs/best_rq/demo.py --workdir=workdir/best_rq_demo

`:runlocal` shrinks it to a few steps (used by the tests).
"""
import ml_collections as mlc

from configs import best_rq
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 600
  c.log_every_steps = 25
  c.max_consecutive_nonfinite = 10

  c.data = common.data("demo_corpus", crop_samples=32_000, batch_size=8)
  c.model = best_rq.model("demo", dropout_rate=0.0, attention_dropout_rate=0.0,
                          activation_dropout_rate=0.0, input_dropout_rate=0.0)
  c.model.frontend.dropout_rate = 0.0
  best_rq.sections(c)
  c.optim = common.adamw(lr=2e-3, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.01, clip_norm=10.0)
  c.schedule = dict(name="noam", warmup_steps=100)
  c.distributed = common.distributed()
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=200, keep=2)
  if arg.runlocal:
    common.shrink_for_cpu(c)
    c.model.conformer.kernel_size = 7  # 31 shifted copies make a slow CPU compile.
  return c.lock()
