"""Random-access readers over built datasets, and a synthetic stand-in.

`open_source` wraps `tfds.data_source` (array_record, no TensorFlow) so that
`source[i]` is a dict of numpy arrays and `str`s, ready for grain's
`MapDataset.source(...)`. `metadata()` gives per-record lengths, languages
and speakers for length bucketing and language sampling; computing it reads
every record once, so the result is cached beside the dataset.

`SyntheticSource` has the same interface with deterministic noise + tones,
for smoke tests and input-pipeline benchmarks without any files.
"""
import os
import re

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

METADATA_KEYS = ("id", "num_samples", "language", "speaker")
_VERSION_DIR = re.compile(r"^\d+\.\d+\.\d+$")
_PLAIN_SPLIT = re.compile(r"^[A-Za-z0-9_]+$")
_CHUNK = 256  # Records per batched read when scanning metadata.


class Source:
  """A built dataset split: `len`, `[i]` -> example dict, `metadata()`.

  Examples: {"audio": int16 [S], "phone_starts"/"phone_ends": int32 [P],
  "num_samples": int, "id"/"text"/"speaker"/"language"/"phones": str}.
  """

  def __init__(self, data_source, *, path, split):
    self._ds = data_source
    self.path = path  # The dataset version folder.
    self.split = split
    self._metadata = None

  def __len__(self):
    return len(self._ds)

  def __getitem__(self, index):
    return _decode(self._ds[_check_index(index, len(self))])

  def __getitems__(self, indices):
    """Batched read (grain uses it when present): list of example dicts."""
    indices = [_check_index(i, len(self)) for i in indices]
    return [_decode(r) for r in self._ds.__getitems__(indices)]

  def __repr__(self):
    return f"Source({self.path!r}, split={self.split!r}, num_records={len(self)})"

  def metadata(self):
    """Per-record {"num_samples": int32 [N], "id"/"language"/"speaker": str [N]}.

    Cached in `<dataset folder>/<split>.metadata.npz` after the first call.
    """
    if self._metadata is None:
      cache = self._cache_path()
      self._metadata = _load_cache(cache, len(self)) if cache else None
      if self._metadata is None:
        self._metadata = self._scan_metadata()
        if cache:
          _save_cache(cache, self._metadata)
    return self._metadata

  def _cache_path(self):
    # Sliced splits ("train[:10%]") are not cached: they are cheap to rescan.
    if _PLAIN_SPLIT.match(self.split):
      return os.path.join(self.path, f"{self.split}.metadata.npz")
    return None

  def _scan_metadata(self):
    n = len(self)
    strings = {"id": [], "language": [], "speaker": []}
    num_samples = np.zeros((n,), np.int32)
    for start in range(0, n, _CHUNK):
      for j, r in enumerate(self._ds.__getitems__(list(range(start, min(n, start + _CHUNK))))):
        num_samples[start + j] = r["num_samples"]
        for k, v in strings.items():
          v.append(_to_str(r[k]))
    return {"num_samples": num_samples, **{k: np.asarray(v, str) for k, v in strings.items()}}


def open_source(name, *, data_dir, split, config=None):
  """Opens a built split for random access.

  Args:
    name: dataset name as built (`demo_corpus`, `librispeech`, ...), optionally
      "name/config".
    data_dir: the `--data_dir` the dataset was built into.
    split: a split name, a TFDS slice such as "train[:100]", or several joined by "+"
      ("train_clean_100+train_clean_360+train_other_500": LibriSpeech 960 h), read in order.
    config: builder config (language, corpus name), if the dataset has one.

  Returns:
    A `Source`.

  Raises:
    FileNotFoundError: naming the missing folder and the build command.
    ValueError: for an unknown split (lists the available ones).
  """
  if "/" in name:
    name, config = name.split("/", 1)
  data_dir = os.fspath(data_dir)
  build_cmd = (f"python -m jaxssl.data.build --dataset={name} --source=<corpus dir> "
               f"--data_dir={data_dir}" + (f" --config={config}" if config else ""))
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data_dir {data_dir!r} does not exist. Build it with:\n  {build_cmd}")
  ds_dir = os.path.join(data_dir, name, config) if config else os.path.join(data_dir, name)
  versions = _versions(ds_dir)
  if not versions:
    configs = _configs(os.path.join(data_dir, name))
    hint = f" It has configs {configs}: pass config=..." if configs and not config else ""
    raise FileNotFoundError(
        f"No built dataset at {ds_dir!r}.{hint} Build it with:\n  {build_cmd}")
  version = versions[-1]
  path = os.path.join(ds_dir, version)
  builder = tfds.builder_from_directory(path)
  for part in split.split("+"):  # "train_clean_100+train_clean_360": several splits, in order.
    base_split = part.split("[", 1)[0]
    if base_split not in builder.info.splits:
      raise ValueError(f"Split {part!r} not in {path!r}; available: "
                       f"{sorted(builder.info.splits)}. Build it with:\n  {build_cmd}")
  full_name = f"{name}/{config}:{version}" if config else f"{name}:{version}"
  # An explicit version makes TFDS read features from the folder, not from a
  # same-named registered builder (TFDS has its own TF-based `librispeech`).
  ds = tfds.data_source(full_name, data_dir=data_dir, split=split, download=False)
  return Source(ds, path=path, split=split)


class SyntheticSource:
  """Deterministic fake speech with the `Source` interface.

  Record i: length uniform in [min_samples, max_samples] (fixed by `seed`),
  audio = two harmonics of a random pitch plus noise, language
  `languages[i % len(languages)]`, speaker f"spk{i % 8}". Metadata comes
  without generating audio.
  """

  def __init__(self, num_records, *, seed=0, min_samples=16000, max_samples=48000,
               languages=("en", "fr")):
    if num_records <= 0 or not 0 < min_samples <= max_samples or not languages:
      raise ValueError(f"SyntheticSource: need num_records > 0, 0 < min_samples <= max_samples "
                       f"and languages; got {num_records}, {min_samples}, {max_samples}, "
                       f"{languages}.")
    self.seed = seed
    self.languages = tuple(languages)
    self._lengths = np.random.default_rng([seed, 0]).integers(
        min_samples, max_samples + 1, size=num_records).astype(np.int32)

  def __len__(self):
    return len(self._lengths)

  def __getitem__(self, index):
    i = _check_index(index, len(self))
    n = int(self._lengths[i])
    rng = np.random.default_rng([self.seed, 1, i])
    f0 = rng.uniform(90.0, 300.0)
    t = np.arange(n, dtype=np.float32) / 16000.0
    x = (0.3 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
         + 0.15 * np.sin(2 * np.pi * 2.5 * f0 * t)
         + 0.05 * rng.standard_normal(n).astype(np.float32))
    return {
        "audio": np.round(x * 32767).astype(np.int16),
        "id": f"synthetic-{i:08d}",
        "text": "",
        "speaker": f"spk{i % 8}",
        "language": self.languages[i % len(self.languages)],
        "phones": "",
        "phone_starts": np.zeros((0,), np.int32),
        "phone_ends": np.zeros((0,), np.int32),
        "num_samples": n,
    }

  def __getitems__(self, indices):
    return [self[i] for i in indices]

  def metadata(self):
    n = len(self)
    return {
        "num_samples": self._lengths.copy(),
        "id": np.asarray([f"synthetic-{i:08d}" for i in range(n)], str),
        "language": np.asarray([self.languages[i % len(self.languages)] for i in range(n)], str),
        "speaker": np.asarray([f"spk{i % 8}" for i in range(n)], str),
    }


def _check_index(index, n):
  if not isinstance(index, (int, np.integer)):
    raise TypeError(f"Record index must be an int, got {type(index).__name__}.")
  index = int(index)
  if not -n <= index < n:
    raise IndexError(f"Record index {index} out of range for {n} records.")
  return index % n


def _to_str(v):
  return v.decode("utf-8") if isinstance(v, bytes) else v


def _decode(record):
  """TFDS returns Text features as bytes (callers get str) and arrays that view
  the record buffer read-only (callers get a writable copy)."""
  return {k: np.array(v) if isinstance(v, np.ndarray) else _to_str(v)
          for k, v in record.items()}


def _versions(ds_dir):
  """Built version folders under ds_dir, oldest first."""
  if not os.path.isdir(ds_dir):
    return []
  found = [d for d in os.listdir(ds_dir) if _VERSION_DIR.match(d)
           and os.path.exists(os.path.join(ds_dir, d, "dataset_info.json"))]
  return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def _configs(name_dir):
  if not os.path.isdir(name_dir):
    return []
  return sorted(d for d in os.listdir(name_dir) if _versions(os.path.join(name_dir, d)))


def _load_cache(path, num_records):
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = {k: z[k] for k in METADATA_KEYS}
  except (OSError, ValueError, KeyError) as e:
    logging.warning("Ignoring unreadable metadata cache %s: %s", path, e)
    return None
  if any(len(v) != num_records for v in meta.values()):
    logging.warning("Ignoring stale metadata cache %s (record count changed).", path)
    return None
  return meta


def _save_cache(path, meta):
  tmp = f"{path}.tmp{os.getpid()}.npz"
  try:
    np.savez(tmp, **meta)
    os.replace(tmp, path)  # Atomic: concurrent readers never see half a file.
  except OSError as e:  # A read-only dataset folder: just don't cache.
    logging.warning("Could not cache metadata at %s: %s", path, e)
