"""Tiny runs of every engine job (probe, CTC fine-tuning, distillation) for the resume tests.

`run(name, workdir, shared)` trains job `name` in `workdir`; `shared` holds what the jobs read
(an upstream checkpoint, a teacher), written once by `prepare(shared)`. `python -m tests.jobs
<name> <workdir> <shared> <kill_step>` runs it in a process that kills itself (SIGKILL) right
after it logs `kill_step`: what a lost machine leaves behind.
"""
import os
import signal
import sys

from configs.finetune import ctc_demo
from jaxssl import pretrain
from jaxssl import pretrained
from jaxssl.evaluation import finetune
from jaxssl.evaluation import probing
from jaxssl.evaluation import upstreams
from jaxssl.training import metrics as metrics_lib
from tests.distill import tiny
from tests.evaluation import random_run
from tests.evaluation import test_evaluate
from tests.evaluation import tone_corpus

JOBS = ("probe", "ctc", "distill")


def prepare(shared):
  """Writes the upstream (random wav2vec 2.0 weights) and the distillation teacher."""
  os.makedirs(shared, exist_ok=True)
  random_run.save(pretrained.load_config("configs/wav2vec2/demo.py:runlocal"),
                  os.path.join(shared, "upstream"))
  tiny.write_teacher(os.path.join(shared, "teacher"))


def run(name, workdir, shared):
  """Trains job `name` (6 steps, checkpoints every 2) in `workdir`; returns its results."""
  if name == "probe":
    c = test_evaluate._config("phone", total_steps=6, eval_every_steps=2)  # pylint: disable=protected-access
    c.log_every_steps = 1
    return probing.run(c, workdir, upstream=upstreams.load("mfcc"),
                       source_fn=tone_corpus.source_fn(16, 8))
  if name == "ctc":
    c = ctc_demo.get_config("runlocal")
    with c.unlocked():
      c.upstream = os.path.join(shared, "upstream")
      c.upstream_arch = "configs/wav2vec2/demo.py:runlocal"
      c.total_steps, c.eval_every_steps, c.log_every_steps = 6, 2, 1
      c.finetune.freeze_encoder_steps = 2
      c.ckpt.every_steps = 2
    return finetune.finetune(c, workdir, source_fn=tone_corpus.source_fn(16, 8))
  c = tiny.student_config(os.path.join(shared, "teacher"), steps=6)
  with c.unlocked():
    c.ckpt.every_steps, c.log_every_steps = 2, 1
  return pretrain.train_and_evaluate(c, workdir, source=tiny.source())


def _kill_after_logging(step):
  write = metrics_lib.MetricsWriter.write

  def write_then_die(self, at, scalars):
    out = write(self, at, scalars)
    if at == step and any(k.startswith("train/") for k in scalars):
      os.kill(os.getpid(), signal.SIGKILL)
    return out

  metrics_lib.MetricsWriter.write = write_then_die


if __name__ == "__main__":
  _kill_after_logging(int(sys.argv[4]))
  run(sys.argv[1], sys.argv[2], sys.argv[3])
