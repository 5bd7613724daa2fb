"""Frame-level target labels (k-means units) stored beside a built dataset, read with the audio.

HuBERT (https://arxiv.org/abs/2106.07447) trains on offline cluster labels at `label_rate` Hz
(100 for MFCC units, 50 for units of a model's layer). A label set lives in
`<dataset version folder>/labels/<name>/` (or any directory given as `data.labels`):

  meta.json              label_rate, num_clusters, how they were made; written last, so its
                         presence marks a complete set
  codebook.npy           [K, D] centroids (written by `python -m jaxssl.kmeans`)
  <split>.labels.npy     every utterance's labels, concatenated (int16/int32, memory-mapped)
  <split>.offsets.npy    int64 [N + 1] start of utterance i in the above
  <split>.ids.npy        str [N] utterance ids, in the split's record order

Label i of an utterance describes the audio around sample i * hop + center_offset_samples,
hop = 16000 / label_rate. With `data.labels` set, the pipeline snaps each crop start to a whole
label frame, so labels are cropped in step with the audio, and adds to every batch
"labels" int32 [B, T_labels] and "labels_valid" bool [B, T_labels], T_labels = crop // hop + 1.
An utterance whose label count does not fit its audio's duration (`count_range`: from whole
25 ms windows, as Kaldi fbank or the CNN frame it, to centred frames, as librosa does, +-0) is an
error that names the utterance and both lengths (fairseq only warns, #5097).
"""
import json
import os

import numpy as np

from jaxssl import constants

META = "meta.json"


class LabelError(ValueError):
  """Labels that do not fit the audio or the config; the message names the file/utterance."""


def hop_for(label_rate, sample_rate=constants.SAMPLE_RATE):
  """Samples per label frame (160 at 100 Hz, 320 at 50 Hz)."""
  if label_rate <= 0 or sample_rate % label_rate:
    raise LabelError(f"data.label_rate={label_rate} must divide the sample rate {sample_rate}.")
  return sample_rate // int(label_rate)


def expected_count(num_samples, label_rate):
  """round(num_samples * label_rate / 16000): the label count of an utterance, +-1."""
  labels = np.asarray(num_samples) * label_rate / constants.SAMPLE_RATE
  return np.floor(labels + 0.5).astype(np.int64)


def labels_per_crop(crop_samples, label_rate):
  """T_labels of a crop of `crop_samples` samples (enough for CNN and 10 ms mel frames)."""
  return int(crop_samples) // hop_for(label_rate) + 1


def write_split(directory, split, ids, labels):
  """Writes one split's labels.

  Args:
    directory: the label set directory (created).
    split: split name ("train", "dev", ...).
    ids: N utterance ids, in the split's record order.
    labels: N int arrays [T_i] of cluster ids.
  """
  if len(ids) != len(labels):
    raise ValueError(f"write_split: {len(ids)} ids but {len(labels)} label arrays.")
  os.makedirs(directory, exist_ok=True)
  lengths = np.array([len(x) for x in labels], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  flat = np.concatenate([np.asarray(x, np.int64) for x in labels]) if labels else np.zeros(0)
  dtype = np.int16 if not len(flat) or flat.max() < 2 ** 15 else np.int32
  np.save(os.path.join(directory, f"{split}.labels.npy"), flat.astype(dtype))
  np.save(os.path.join(directory, f"{split}.offsets.npy"), offsets)
  np.save(os.path.join(directory, f"{split}.ids.npy"), np.asarray(list(ids), str))


def write_meta(directory, **meta):
  """Writes meta.json (label_rate and num_clusters are required); call it last."""
  for key in ("label_rate", "num_clusters"):
    if key not in meta:
      raise ValueError(f"write_meta: {key!r} is required.")
  tmp = os.path.join(directory, META + ".tmp")
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(directory, META))  # Atomic: a half-written set has no meta.


def resolve(name, dataset_path=None):
  """The directory of label set `name`: a path as given, or `<dataset_path>/labels/<name>`."""
  if os.sep in name or os.path.isabs(name) or dataset_path is None:
    return name
  return os.path.join(dataset_path, "labels", name)


class LabelSet:
  """One split of a label set: `len`, `[i]` -> int32 [T_i], `ids`, `lengths`, `meta`."""

  def __init__(self, directory, split):
    self.directory = os.fspath(directory)
    # "train[:10%]" reads the labels of "train"; "a+b" those of a, then b (as the source reads).
    self.parts = [part.split("[", 1)[0] for part in split.split("+")]
    self.split = "+".join(self.parts)
    path = os.path.join(self.directory, META)
    if not os.path.exists(path):
      raise LabelError(f"No label set at {self.directory!r} (missing {META}). Make one with:\n"
                       f"  python -m jaxssl.kmeans --out={self.directory} ...")
    with open(path) as f:
      self.meta = json.load(f)
    offsets, ids = [], []
    for part in self.parts:
      prefix = os.path.join(self.directory, part)
      if not os.path.exists(prefix + ".labels.npy"):
        have = sorted(f.split(".")[0] for f in os.listdir(self.directory)
                      if f.endswith(".ids.npy"))
        raise LabelError(f"Label set {self.directory!r} has no split {part!r}; it has {have}.")
      offsets.append(np.load(prefix + ".offsets.npy"))
      ids.append(np.load(prefix + ".ids.npy"))
    self._labels = None
    self._offsets = offsets
    self._first_row = np.cumsum([0] + [len(x) for x in ids])  # Row where each part starts.
    self.ids = np.concatenate(ids)
    self.lengths = np.concatenate([np.diff(o) for o in offsets])

  @property
  def label_rate(self):
    return self.meta["label_rate"]

  @property
  def num_clusters(self):
    return self.meta["num_clusters"]

  def _flat(self):
    if self._labels is None:  # Memory-mapped on first use (also after unpickling in a worker).
      self._labels = [np.load(os.path.join(self.directory, f"{part}.labels.npy"), mmap_mode="r")
                      for part in self.parts]
    return self._labels

  def __len__(self):
    return len(self.ids)

  def __getitem__(self, i):
    k = int(np.searchsorted(self._first_row, i, side="right")) - 1
    j = i - self._first_row[k]
    offsets = self._offsets[k]
    return np.asarray(self._flat()[k][offsets[j]:offsets[j + 1]], np.int32)

  def __getstate__(self):
    return {**self.__dict__, "_labels": None}  # grain workers reopen the memory map.

  def check(self, ids, num_samples):
    """Maps records to label rows by id and checks every duration (see `check_lengths`).

    Args:
      ids: the source's N record ids, or None to match by position (same count required).
      num_samples: int [N] record lengths in samples.

    Returns:
      int64 [N] label row of each record.
    """
    where = f"labels {self.directory}/{self.split}"
    if ids is None:
      if len(self) != len(num_samples):
        raise LabelError(f"{where}: {len(self)} utterances, but the split has "
                         f"{len(num_samples)} records.")
      rows = np.arange(len(num_samples))
    else:
      position = {str(u): i for i, u in enumerate(self.ids)}
      missing = [str(u) for u in ids if str(u) not in position]
      if missing:
        raise LabelError(f"{where}: no labels for {len(missing)} of {len(ids)} utterances "
                         f"(first: {missing[0]!r}); were they made for another build?")
      rows = np.array([position[str(u)] for u in ids], np.int64)
    names = self.ids[rows] if ids is None else ids
    check_lengths(names, num_samples, self.lengths[rows], self.label_rate, where=where)
    return rows


def count_range(num_samples, label_rate, window=400):
  """(fewest, most) labels an utterance of `num_samples` samples may have: from frames of a
  `window`-sample window kept whole (Kaldi fbank's snip_edges, the CNN's receptive field:
  1 + (S - window) // hop) to centred frames (librosa: round(S / hop) + 1)."""
  num_samples = np.asarray(num_samples, np.int64)
  fewest = 1 + np.maximum(num_samples - window, 0) // hop_for(label_rate)
  return fewest, expected_count(num_samples, label_rate) + 1


def check_lengths(ids, num_samples, num_labels, label_rate, *, where="labels"):
  """Raises LabelError for the first utterance whose label count is outside `count_range`,
  naming it and both lengths."""
  num_samples = np.asarray(num_samples, np.int64)
  num_labels = np.asarray(num_labels, np.int64)
  fewest, most = count_range(num_samples, label_rate)
  bad = np.nonzero((num_labels < fewest) | (num_labels > most))[0]
  if len(bad):
    i = bad[0]
    raise LabelError(
        f"{where}: utterance {str(ids[i])!r} has {num_labels[i]} labels at {label_rate} Hz "
        f"({num_labels[i] / label_rate:.3f} s) but {num_samples[i]} audio samples "
        f"({num_samples[i] / constants.SAMPLE_RATE:.3f} s, {fewest[i]} to {most[i]} labels "
        f"expected); {len(bad)} utterance(s) disagree. Is data.label_rate right "
        f"(100 for MFCC labels, 50 for model-layer labels)?")


def snap_offsets(offsets, label_rate):
  """Crop starts rounded down to whole label frames, so audio and labels stay aligned."""
  hop = hop_for(label_rate)
  return np.asarray(offsets, np.int64) // hop * hop


def crop(rows, offsets, length, label_rate):
  """Labels of cropped utterances.

  Args:
    rows: B int arrays [T_i] (None for a padding row).
    offsets: int [B] audio crop starts in samples, multiples of the label hop.
    length: crop length L in samples.
    label_rate: Hz.

  Returns:
    labels int32 [B, L // hop + 1] (0 on padding), valid bool of the same shape.
  """
  hop = hop_for(label_rate)
  t = labels_per_crop(length, label_rate)
  labels = np.zeros((len(rows), t), np.int32)
  valid = np.zeros((len(rows), t), bool)
  for i, (x, off) in enumerate(zip(rows, offsets)):
    if x is None:
      continue
    if off % hop:
      raise LabelError(f"Crop offset {off} is not a multiple of the label hop {hop}.")
    seg = x[off // hop:off // hop + t]
    labels[i, :len(seg)] = seg
    valid[i, :len(seg)] = True
  return labels, valid


class _WithLabels:
  """A pipeline `load` that snaps crop starts to label frames and adds the cropped labels.

  A class rather than a closure so that grain can pickle it into worker processes.
  """

  def __init__(self, load, label_set, rows, label_rate):
    self.load, self.label_set, self.rows, self.label_rate = load, label_set, rows, label_rate

  def __call__(self, plan):
    plan = {**plan, "offsets": snap_offsets(plan["offsets"], self.label_rate)}
    batch = self.load(plan)
    rows = [self.label_set[self.rows[i]] if i >= 0 else None for i in plan["indices"]]
    batch["labels"], batch["labels_valid"] = crop(rows, plan["offsets"], plan["length"],
                                                  self.label_rate)
    return batch


def attach(load, data_cfg, source, meta, *, split):
  """The pipeline hook: `load` itself without `data.labels`, else a labelled `load`.

  Args:
    load: `plan -> batch` (pipeline._load bound to the source).
    data_cfg: the `data` section; reads `labels` (name or directory) and `label_rate`.
    source: the split's Source (its `path`, if any, locates label sets given by name).
    meta: `source.metadata()`.
    split: the split being read (names the label file).

  Raises:
    LabelError: a missing set or split, a label_rate that disagrees with the set's, or an
      utterance whose label and audio lengths differ by more than one frame.
  """
  name = data_cfg.get("labels", "")
  if not name:
    return load
  directory = resolve(name, getattr(source, "path", None))
  label_set = LabelSet(directory, split)
  rate = data_cfg.get("label_rate", 0)
  if rate != label_set.label_rate:
    raise LabelError(f"data.label_rate={rate} but the labels in {directory!r} are at "
                     f"{label_set.label_rate} Hz.")
  ids = meta.get("id") if hasattr(meta, "get") else None
  rows = label_set.check(ids, meta["num_samples"])
  return _WithLabels(load, label_set, rows, rate)
