"""Speaker identification probe: weighted layer sum -> linear -> mean pool -> linear, accuracy.

  python -m jaxssl.evaluate --config=configs/probes/speaker.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/probes/speaker_w2v2

s3prl voxceleb1/config.yaml: projector 256, mean pooling, Adam lr 1e-4, 200k steps, batch 8 x 4.
Dev and test speakers of the demo corpus and LibriSpeech are unseen in training, so the probe
trains on 70% of every training speaker's utterances and selects / tests on 10% / 20% of them
(`splits.by_utterance`; s3prl uses VoxCeleb1's identification split, built the same way). The
demo run uses lr 1e-3 and 2,000 steps (32 speakers, ~760 training utterances).
"""
from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="demo_corpus", runlocal=False)
  c = probes.probe_config("speaker", dataset=arg.dataset, lr=1e-3, total_steps=2_000,
                          eval_every_steps=250, by_utterance=True)
  if arg.dataset != "demo_corpus":
    c.optim.lr, c.total_steps, c.eval_every_steps = 1e-4, 200_000, 5_000
    c.data.batch_size = 32  # s3prl: 8 x 4 accumulated.
  if arg.runlocal:
    probes.shrink_for_cpu(c)
  return c.lock()
