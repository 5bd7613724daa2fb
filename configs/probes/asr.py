"""ASR probe: weighted layer sum -> linear -> 2-layer BiLSTM -> character CTC, WER and CER.

  python -m jaxssl.evaluate --config=configs/probes/asr.py:dataset=librispeech \
      --config.data.data_dir=data/tfds --config.upstream=ckpts/w2v2_base --workdir=...

s3prl asr/config.yaml: project_dim 1024, 2 x BiLSTM 1024, character CTC, Adam lr 1e-4, 200k steps,
batch 32, WER on test_clean without a language model, and its `specaug` section on the weighted
layer sum in training (s3prl/downstream/specaug.py, applied by s3prl/downstream/runner.py):
time warp window 5, 2 time masks of 0-39 frames, 4 feature masks of 0-49 dimensions (widths from
[0, 40) and [0, 50), as torch.randint draws them). The demo corpus (random words of 8 languages)
gets a 256-wide, single-layer BiLSTM and 3,000 steps: it shows the probe works, not ASR quality.
"""
from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="demo_corpus", runlocal=False)
  if arg.dataset == "demo_corpus":
    c = probes.probe_config("asr", dataset=arg.dataset, lr=1e-3, total_steps=3_000,
                            eval_every_steps=500, head="blstm", projector_dim=256,
                            hidden_dim=256, num_layers=1)
  else:
    c = probes.probe_config("asr", dataset=arg.dataset, lr=1e-4, total_steps=200_000,
                            eval_every_steps=5_000, batch_size=32, head="blstm",
                            projector_dim=1024, hidden_dim=1024, num_layers=2)
    c.cache_features = False  # 100 h of 13 x 768-d states does not fit in memory.
  c.specaug.enabled = True  # s3prl asr/config.yaml `specaug` (configs/probes/__init__.py).
  if arg.runlocal:
    probes.shrink_for_cpu(c)
  return c.lock()
