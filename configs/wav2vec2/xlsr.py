"""XLS-R style multilingual wav2vec 2.0 pretraining (Conneau et al. 2020; Babu et al. 2021).

  python -m jaxssl.main --config=configs/wav2vec2/xlsr.py --workdir=gs://$BUCKET/xlsr \
      --config.data.data_dir=$TFDS
  python -m jaxssl.main --config=configs/wav2vec2/xlsr.py:demo --workdir=workdir/xlsr_demo

The LARGE recipe with one quantizer shared across languages, languages drawn with
p_l ∝ (n_l / N)^0.5 so low-resource languages are seen more often, and the contrastive loss and
accuracy logged per language. `:demo` runs it on the six-language demo corpus.
"""
from configs import common
from configs.wav2vec2 import demo as demo_config
from configs.wav2vec2 import large


def get_config(arg=None):
  arg = common.parse_arg(arg, demo=False, runlocal=False, num_languages=53)
  c = demo_config.get_config() if arg.demo else large.get_config()
  with c.unlocked():
    if not arg.demo:
      c.data.name = "multilingual_librispeech"
    c.data.sampling = dict(name="temperature", alpha=0.5)
    c.objective.num_languages = 6 if arg.demo else arg.num_languages
    if arg.runlocal:
      common.shrink_for_cpu(c)
  return c.lock()
