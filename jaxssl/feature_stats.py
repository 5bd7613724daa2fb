"""Per-band mean and standard deviation of a dataset's filterbank features, saved with it.

MelHuBERT (Lin et al. 2022, https://arxiv.org/abs/2211.09944; nervjack2/MelHuBERT) normalises
every 40-d fbank frame with the training set's mean and standard deviation per band, computed
once over all of its frames. This command computes them and writes them beside the dataset,
as the k-means label sets are:

  python -m jaxssl.feature_stats --dataset=librispeech --data_dir=$TFDS \
      --split=train_clean_360 --features=fbank --num_mels=40       # -> <version>/stats/fbank40.json

A config then names them in its frontend section (`model.frontend.stats="fbank40"`, or a path).
At the start of training `fill_config` copies the values into `model.frontend.mean` / `std`, so
the run's config.json carries them: a checkpoint normalises as it was trained on any machine,
without the dataset (extraction, probes, k-means on its layers). `jaxssl.kmeans --stats=fbank40`
clusters the same normalised frames (MelHuBERT's stage-1 units).

Features ("fbank": Kaldi's fbank as MelHuBERT extracts it, `models/frontends/kaldi_fbank.py`;
"logmel": librosa's log-mel, `models/frontends/mel.py`) are computed in float32 on padded
batches; the sums are accumulated in float64 over the real frames of every utterance.
"""
import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.data import sources
from jaxssl.models.frontends import kaldi_fbank
from jaxssl.models.frontends import mel
from jaxssl.models.frontends import mel_stack

DIRECTORY = "stats"
FEATURES = ("fbank", "logmel")
_BUCKET_SAMPLES = 8_000  # Utterances are padded to 0.5 s steps: a few compiles.
_GROUP = 64


class StatsError(ValueError):
  """Missing, malformed or mismatched feature statistics."""


def default_name(features, num_mels):
  return f"{features}{num_mels}"


def resolve(name, dataset_path=None):
  """The file of statistics `name`: a path as given (".json"), or
  `<dataset_path>/stats/<name>.json`."""
  if name.endswith(".json") or os.sep in name or dataset_path is None:
    return name
  return os.path.join(dataset_path, DIRECTORY, name + ".json")


def _frames_for(features, num_samples):
  return mel_stack.mel_frames_for(num_samples, "kaldi" if features == "fbank" else "librosa")


def features_fn(features, num_mels):
  """A jitted [B, S] float audio -> [B, T, num_mels] log filterbank function."""
  if features not in FEATURES:
    raise StatsError(f"features={features!r}: choose from {FEATURES}.")
  if features == "fbank":
    return jax.jit(lambda a: kaldi_fbank.fbank(a, num_bins=num_mels))
  return jax.jit(lambda a: mel.log_mel(a, n_mels=num_mels))


def padded_features(fn, features, audios):
  """Features of int16 / float utterances, batched at 0.5 s steps: a list of [T_i, M] float32.

  Kaldi's frames (snip_edges) and librosa's centred frames over real samples only do not read
  the padding, so every frame kept equals the unpadded utterance's (tested).
  """
  out = [None] * len(audios)
  order = np.argsort([len(a) for a in audios], kind="stable")
  for start in range(0, len(order), _GROUP):
    rows = order[start:start + _GROUP]
    length = -(-max(len(audios[i]) for i in rows) // _BUCKET_SAMPLES) * _BUCKET_SAMPLES
    batch = np.zeros((len(rows), length), np.float32)
    for j, i in enumerate(rows):
      a = np.asarray(audios[i])
      batch[j, :len(a)] = a / 32768.0 if a.dtype == np.int16 else a
    feats = np.asarray(fn(jnp.asarray(batch)))
    for j, i in enumerate(rows):
      out[i] = feats[j, :int(_frames_for(features, len(audios[i])))]
  return out


def compute(source, *, features="fbank", num_mels=40, max_utterances=0):
  """Mean and standard deviation per band over every real frame of `source`.

  Returns:
    dict(mean=[M] list, std=[M] list, frames=int, utterances=int, features, num_mels).
  """
  fn = features_fn(features, num_mels)
  n = len(source) if not max_utterances else min(len(source), max_utterances)
  total = np.zeros(num_mels, np.float64)
  square = np.zeros(num_mels, np.float64)
  frames = 0
  for start in range(0, n, 256):
    group = list(range(start, min(n, start + 256)))
    records = source.__getitems__(group) if hasattr(source, "__getitems__") else [
        source[i] for i in group]
    for f in padded_features(fn, features, [r["audio"] for r in records]):
      f = f.astype(np.float64)
      total += f.sum(0)
      square += np.square(f).sum(0)
      frames += len(f)
  if not frames:
    raise StatsError(f"No frames in {source!r}: nothing to compute statistics from.")
  mean = total / frames
  std = np.sqrt(np.maximum(square / frames - np.square(mean), 0.0))
  return dict(mean=mean.tolist(), std=std.tolist(), frames=frames, utterances=n,
              features=features, num_mels=num_mels)


def write(path, stats, **meta):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(dict(stats, **meta), f, indent=1)
  os.replace(tmp, path)  # Atomic: a half-written file is never read.


def load(path, *, features=None, num_mels=None):
  """(mean, std) as float tuples from a stats file, checked against the frontend reading them."""
  if not os.path.exists(path):
    raise StatsError(f"No feature statistics at {path!r}. Make them with:\n  python -m "
                     "jaxssl.feature_stats --dataset=... --data_dir=... --split=<training split>"
                     f" --features={features or 'fbank'} --num_mels={num_mels or 40}")
  with open(path) as f:
    stats = json.load(f)
  for key, want in (("features", features), ("num_mels", num_mels)):
    if want is not None and stats.get(key) != want:
      raise StatsError(f"{path!r} holds {key}={stats.get(key)!r} statistics; the frontend "
                       f"reads {key}={want!r}.")
  if np.min(stats["std"]) <= 0:
    raise StatsError(f"{path!r}: a band with zero standard deviation (constant input?).")
  return tuple(float(x) for x in stats["mean"]), tuple(float(x) for x in stats["std"])


def fill_config(config, source=None, *, required=True):
  """`config` with `model.frontend.mean` / `std` copied from the stats file that
  `model.frontend.stats` names (resolved within the training dataset), when not yet there.

  Args:
    config: an experiment config.
    source: the training split's Source (its `path` locates stats given by name); default:
      the one `config.data` opens.
    required: False (`--dry_run`): a missing file gives zeros and ones with a warning (the
      shapes and FLOPs do not depend on the values) instead of an error.

  Raises:
    StatsError: no such file (with the command that makes it), or one for other features.
  """
  fe = config.get("model", {}).get("frontend", {})
  name = fe.get("stats", "")
  if not name or fe.get("mean"):
    return config
  features = "fbank" if fe.get("features", "librosa") == "kaldi" else "logmel"
  if source is None and not (name.endswith(".json") or os.sep in name):
    try:
      source = sources.open_source(config.data.name, data_dir=config.data.data_dir,
                                   split=config.data.split)
    except (ValueError, FileNotFoundError) as e:
      if required:
        raise
      source = None
      logging.warning("Dataset not found (%s): placeholder statistics for the dry run.", e)
  path = resolve(name, getattr(source, "path", None))
  try:
    mean, std = load(path, features=features, num_mels=fe.num_mels)
  except StatsError as e:
    if required:
      raise
    logging.warning("%s\nPlaceholder statistics for the dry run.", e)
    mean, std = (0.0,) * fe.num_mels, (1.0,) * fe.num_mels
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.frontend.mean = mean
    config.model.frontend.std = std
  return config


def main(argv):
  del argv
  f = flags.FLAGS
  source = sources.open_source(f.dataset, data_dir=f.data_dir, split=f.split)
  path = resolve(f.name or default_name(f.features, f.num_mels), source.path)
  stats = compute(source, features=f.features, num_mels=f.num_mels,
                  max_utterances=f.max_utterances)
  write(path, stats, dataset=f.dataset, split=f.split)
  print(f"wrote {path}: {stats['frames']:,} frames of {stats['utterances']:,} utterances; "
        f"mean {np.mean(stats['mean']):.3f}, std {np.mean(stats['std']):.3f} (band averages)")


if __name__ == "__main__":
  flags.DEFINE_string("dataset", "demo_corpus", "TFDS dataset name.")
  flags.DEFINE_string("data_dir", "data/tfds", "TFDS data_dir.")
  flags.DEFINE_string("split", "train", "The training split.")
  flags.DEFINE_enum("features", "fbank", list(FEATURES), "Kaldi fbank or librosa log-mel.")
  flags.DEFINE_integer("num_mels", 40, "Mel bands.")
  flags.DEFINE_integer("max_utterances", 0, "Only the first N utterances (0: all).")
  flags.DEFINE_string("name", "", "Stats name (default <features><num_mels>).")
  app.run(main)
