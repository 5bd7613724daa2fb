"""Language identification probe: weighted layer sum -> linear -> mean pool -> linear, accuracy.

  python -m jaxssl.evaluate --config=configs/probes/language.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/probes/language_w2v2

The same utterance-level head as s3prl's speaker / intent probes (projector 256, mean pooling).
On the demo corpus (8 languages, 4 training speakers each) dev and test speakers are unseen, so
the probe must recognise the language, not the voice. lr 1e-3, 2,000 steps.
"""
from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="demo_corpus", runlocal=False)
  c = probes.probe_config("language", dataset=arg.dataset, lr=1e-3, total_steps=2_000,
                          eval_every_steps=250)
  if arg.runlocal:
    probes.shrink_for_cpu(c)
  return c.lock()
