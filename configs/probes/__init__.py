"""Shared builder of the probe configs (SUPERB-style, s3prl protocol; docs/reference.md).

Each task file (phone.py, speaker.py, language.py, asr.py) calls `probe_config` with its head and
learning rate; `:dataset=` picks the corpus:

  demo_corpus   the embedded demo corpus (train / dev / test; dev and test speakers are unseen);
  librispeech   train_clean_100 -> dev_clean / test_clean (SUPERB's PR and ASR splits);
  local_audio   a `python -m jaxssl.data.build --dataset=local_audio` build with train/dev/test;
  voxceleb1     VoxCeleb1's identification split train / dev / test (speaker ID only).

Speaker ID on the first three splits the training speakers' own utterances
(`splits.by_utterance`), since those corpora hold out their dev/test speakers; VoxCeleb1's own
split already has the same 1,251 speakers in train, dev and test. https://arxiv.org/abs/2105.01051

Two s3prl training-time options, off by default: `data.train_crop_samples` (> 0: train on a
random crop of that many samples of each utterance, new every epoch; s3prl voxceleb1
`max_timestep`) and `specaug` (s3prl's SpecAug on the weighted layer sum; its values here are
s3prl asr/config.yaml's, `specaug.enabled` switches it on).
"""
import ml_collections as mlc

from configs import common

DATASETS = {
    "demo_corpus": ("train", "dev", "test"),
    "librispeech": ("train_clean_100", "dev_clean", "test_clean"),
    "local_audio": ("train", "dev", "test"),
    "voxceleb1": ("train", "dev", "test"),
}


def splits(dataset, *, by_utterance=False, dev_fraction=0.1, test_fraction=0.2,
           max_train_utterances=0):
  """The `splits` section: which splits train / select / test, or a per-speaker holdout."""
  if dataset not in DATASETS:
    raise ValueError(f"Unknown probe dataset {dataset!r}; choose from {sorted(DATASETS)}.")
  train, dev, test = DATASETS[dataset]
  return mlc.ConfigDict(dict(
      train=train, dev=dev, test=test,
      by_utterance=by_utterance,   # True: dev/test are utterances of the train split's speakers.
      dev_fraction=dev_fraction, test_fraction=test_fraction, seed=0,
      max_train_utterances=max_train_utterances,  # > 0: an evenly spread subset of train.
      extra_tests=(),  # Fine-tuning: more test splits scored at the best dev step.
  ))


def probe_config(task, *, dataset="demo_corpus", data_dir="data/tfds", lr, total_steps,
                 eval_every_steps, batch_size=16, head="linear", projector_dim=256,
                 hidden_dim=1024, num_layers=2, clip_norm=1.0, by_utterance=False):
  """A complete, unlocked probe config; task files adjust and lock it."""
  c = mlc.ConfigDict()
  c.task = task                   # phone | asr | speaker | language
  c.upstream = ""                 # Checkpoint dir, or mfcc | fbank | random_init.
  c.upstream_arch = "configs/wav2vec2/demo.py"  # random_init's architecture (file or ckpt dir).
  c.seed = 0
  c.total_steps = total_steps
  c.eval_every_steps = eval_every_steps  # Dev evaluation; the best dev step is tested.
  c.log_every_steps = 50
  # Keep each utterance's upstream features in memory (False: rerun per epoch); the training
  # split is never cached with data.train_crop_samples (its crops change every epoch).
  c.cache_features = True

  c.data = common.data(dataset, data_dir=data_dir, batch_size=batch_size)
  c.data.train_crop_samples = 0   # > 0: random training crops of this many samples, per epoch.
  c.data.eval_batch_size = 0      # Dev / test utterances per batch (0: data.batch_size).
  c.splits = splits(dataset, by_utterance=by_utterance)
  c.probe = dict(projector_dim=projector_dim, head=head, hidden_dim=hidden_dim,
                 num_layers=num_layers, dropout_rate=0.2, layer_norm=False)
  c.optim = dict(lr=lr, clip_norm=clip_norm, weight_decay=0.0)
  c.specaug = specaug()
  return c


def specaug(enabled=False):
  """The `specaug` section: s3prl asr/config.yaml's SpecAug values (probes.SpecAugment)."""
  return mlc.ConfigDict(dict(
      enabled=enabled,
      time_warp_window=5,           # 0: no time warp.
      num_time_masks=2,
      time_mask_width=(0, 40),      # Frames, drawn from [lo, hi) as torch.randint.
      num_freq_masks=4,             # Over the feature dimension of the weighted sum.
      freq_mask_width=(0, 50),
  ))


def shrink_for_cpu(c):
  """A few steps of a small head: what tests and `:runlocal` run."""
  c.total_steps = 6
  c.eval_every_steps = 3
  c.log_every_steps = 1
  c.data.batch_size = 8
  c.probe.projector_dim = 16
  c.probe.hidden_dim = 16
  c.probe.num_layers = 1


def unseen_speakers(c):
  """Speaker ID on the voices pretraining never heard: the dev and test splits joined, split by
  utterance (70 / 10 / 20% of every speaker's utterances) like the seen-speaker probe."""
  _, dev, test = DATASETS[c.data.name or "demo_corpus"]
  c.splits.train = f"{dev}+{test}"
  c.splits.by_utterance = True
  return c


def pretraining_eval(task, *, every_steps, dataset="demo_corpus", total_steps=500,
                     eval_every_steps=250, lr=1e-2, max_train_utterances=384, batch_size=16,
                     speakers="seen"):
  """One entry of a pretraining config's `evals` section: a probe run every `every_steps`.

  data.name / data.data_dir left empty mean the pretraining data's (so --config.data.data_dir
  reaches the evals too). A subset of the training utterances and a short probe keep each eval
  to well under a minute on the demo corpus. `speakers="unseen"` (speaker task): the dev + test
  speakers (`unseen_speakers`) instead of the training speakers' own utterances.
  """
  if speakers not in ("seen", "unseen") or (speakers == "unseen" and task != "speaker"):
    raise ValueError(f"speakers={speakers!r} for task {task!r}: 'unseen' is a speaker-task "
                     "option; choose 'seen' or 'unseen'.")
  c = probe_config(task, dataset=dataset, data_dir="", lr=lr, total_steps=total_steps,
                   eval_every_steps=eval_every_steps, batch_size=batch_size,
                   by_utterance=task == "speaker")
  if speakers == "unseen":
    unseen_speakers(c)
  c.data.name = ""
  c.splits.max_train_utterances = max_train_utterances
  c.every_steps = every_steps
  return c
