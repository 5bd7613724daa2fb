"""XLS-R style multilingual wav2vec 2.0 pretraining (Conneau et al. 2020; Babu et al. 2021).

  python -m jaxssl.main --config=configs/wav2vec2/xlsr.py --workdir=gs://$BUCKET/xlsr \
      --config.data.data_dir=$TFDS
  python -m jaxssl.main --config=configs/wav2vec2/xlsr.py:demo --workdir=workdir/xlsr_demo

The LARGE recipe with one quantizer shared across languages, languages drawn with
p_l ∝ (n_l / N)^0.5 so low-resource languages are seen more often (the mix holds under dynamic
batching: jaxssl/data/sampling.py), and the contrastive loss and accuracy logged per language
of the training data, by name (`train/lang_de/loss`). The data: MLS's "all" config, every
`mls_*` folder built together,

  python -m jaxssl.data.build --dataset=multilingual_librispeech --config=all --source=$MLS

or any corpus with a language per utterance, e.g. MLS and Common Voice mixed into one
`local_audio` corpus (`python -m jaxssl.data.mix`, then `:dataset=local_audio/xlsr_mix`).
`:demo` runs it on the demo corpus's languages.
"""
from configs import common
from configs.wav2vec2 import demo as demo_config
from configs.wav2vec2 import large


def get_config(arg=None):
  arg = common.parse_arg(arg, demo=False, runlocal=False, dataset="multilingual_librispeech/all")
  c = demo_config.get_config() if arg.demo else large.get_config()
  with c.unlocked():
    if not arg.demo:
      c.data.name = arg.dataset
    c.data.sampling = dict(name="temperature", alpha=0.5)
    c.objective.per_language_metrics = True
    if arg.runlocal:
      common.shrink_for_cpu(c)
  return c.lock()
