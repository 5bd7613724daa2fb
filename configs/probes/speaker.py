"""Speaker identification probe: weighted layer sum -> linear -> mean pool -> linear, accuracy.

  python -m jaxssl.evaluate --config=configs/probes/speaker.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/probes/speaker_w2v2

  python -m jaxssl.evaluate --config=configs/probes/speaker.py:dataset=voxceleb1 \
      --config.data.data_dir=data/tfds --config.upstream=ckpts/w2v2_base --workdir=...

s3prl voxceleb1/config.yaml (SUPERB SID): projector 256, mean pooling, Adam lr 1e-4, gradient
clipping 1, 200k steps, batch 8 x 4 accumulated, dev and test every 5,000 steps, training on a
random crop of `max_timestep` 128,000 samples (8 s) of each utterance drawn anew every time it is
read (voxceleb1/dataset.py; shorter utterances whole), dev and test on whole utterances.
`:dataset=voxceleb1` is that recipe on VoxCeleb1's identification split (train / dev / test of
the same 1,251 speakers). Dev and test speakers of the demo corpus and LibriSpeech are unseen in
training, so there the probe trains on 70% of every training speaker's utterances and selects /
tests on 10% / 20% of them (`splits.by_utterance`). The demo run uses lr 1e-3 and 2,000 steps
(32 speakers, ~760 training utterances). `:unseen=True` probes the voices pretraining never
heard instead: the dev + test splits joined and split by utterance the same way.
"""
from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="demo_corpus", unseen=False, runlocal=False)
  c = probes.probe_config("speaker", dataset=arg.dataset, lr=1e-3, total_steps=2_000,
                          eval_every_steps=250, by_utterance=arg.dataset != "voxceleb1")
  if arg.dataset != "demo_corpus":
    c.optim.lr, c.total_steps, c.eval_every_steps = 1e-4, 200_000, 5_000
    c.data.batch_size = 32  # s3prl: 8 x 4 accumulated (the mean of 4 batch means).
  if arg.dataset == "voxceleb1":
    c.data.train_crop_samples = 128_000  # s3prl max_timestep: 8 s crops, new every epoch.
    c.data.eval_batch_size = 1  # s3prl scores one whole utterance at a time (up to ~145 s).
  if arg.unseen:
    if arg.dataset == "voxceleb1":
      raise ValueError("configs/probes/speaker.py: unseen=True needs held-out speakers; "
                       "VoxCeleb1's identification split has none.")
    probes.unseen_speakers(c)
  if arg.runlocal:
    probes.shrink_for_cpu(c)
  return c.lock()
