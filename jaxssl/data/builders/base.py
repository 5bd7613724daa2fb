"""Shared TFDS builder for local speech corpora, written as array_record without TensorFlow.

Every corpus builder lists `Entry`s (a path plus labels) per split; this base
class decodes them with `audio.load_audio` on a few threads, validates the
labels, skips bad files into a `SkipLog`, and yields examples with one fixed
feature set, so training code reads every corpus the same way.

TFDS without TensorFlow: `tfds.features.Audio`, `tfds.load` and `as_dataset`
import TF, but `GeneratorBasedBuilder.download_and_prepare` with
`file_format="array_record"` and `tfds.data_source` do not, as long as the
features are `Tensor`/`Text`/`Scalar`. Audio is therefore a 1-D int16 Tensor.
Two TFDS pieces still need replacing: its split writer buffers each split and
spills to disk through `tf.io.gfile` past 1 GB, so `_generate_splits` streams
shards with `writer.write_split` instead; and `dataset_info_from_configs`
wants a package folder with metadata files, so `_info` builds
`tfds.core.DatasetInfo` directly.

Builders are not put in TFDS's global registry (`skip_registration=True`):
`librispeech` and `common_voice` already name TFDS's own TF-based builders.
`jaxssl.data.builders.REGISTRY` is the registry; reading goes through files.
"""
import concurrent.futures
import dataclasses
import os
import time

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from jaxssl import constants
from jaxssl.data import audio
from jaxssl.data.builders import skips as skips_lib
from jaxssl.data.builders import writer

# Raw little-endian bytes instead of TFDS's default int64 varint list: 4x
# faster to serialize and read, and the records hold exactly 2 bytes/sample.
_BYTES = tfds.features.Encoding.BYTES


@dataclasses.dataclass(frozen=True)
class Entry:
  """One utterance to build: an audio path and its labels.

  Phone times are in samples at `label_rate` (converted to 16 kHz samples on
  write); `phones`, `phone_starts` and `phone_ends` have equal lengths.
  """
  id: str
  path: str
  text: str = ""
  speaker: str = ""
  language: str = ""
  phones: tuple = ()
  phone_starts: tuple = ()
  phone_ends: tuple = ()
  label_rate: int = constants.SAMPLE_RATE


class BadLabel(Exception):
  """Labels that do not fit their audio (e.g. phone times past the end)."""


def features():
  """The one feature set all jaxssl speech datasets share."""
  return tfds.features.FeaturesDict({
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding=_BYTES),
      "id": tfds.features.Text(),
      "text": tfds.features.Text(),
      "speaker": tfds.features.Text(),
      "language": tfds.features.Text(),
      "phones": tfds.features.Text(),  # Space-separated IPA phones, "" if none.
      "phone_starts": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "phone_ends": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "num_samples": tfds.features.Scalar(dtype=np.int32),
  })


class SpeechBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder: subclasses implement `_list_entries(source, skips)`.

  Args (constructor, besides TFDS's `data_dir`, `config`, `file_format`...):
    source: the local corpus directory (or manifest file for `local_audio`).
      Defaults to `download_config.manual_dir`.
    num_workers: decoding threads (libsndfile and soxr release the GIL).
    splits: build only these splits (default: all found in the source).
    show_progress: draw a tqdm bar per split.
    max_shard_bytes: start a new array_record shard past this size.
  """
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the local corpus directory: `python -m jaxssl.data.build --source=DIR`, or "
      "`download_config=tfds.download.DownloadConfig(manual_dir=DIR)`.")
  DESCRIPTION = ""
  HOMEPAGE = ""
  CITATION = ""
  SOURCE_IS_FILE_OK = False  # local_audio also accepts a manifest file.
  ANY_CONFIG_OK = False  # local_audio/common_voice: any name is a config.

  # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and
  # prepared"; nothing is downloaded here, and `jaxssl.data.build` prints its own summary.
  def _log_download_bytes(self):
    pass

  def _log_download_done(self):
    pass

  def __init__(self, *, source=None, splits=None, num_workers=4, show_progress=True,
               max_shard_bytes=writer.MAX_SHARD_BYTES, **kwargs):
    self._source = os.fspath(source) if source is not None else None
    self._splits = tuple(splits) if splits else None
    self._num_workers = max(1, int(num_workers))
    self._show_progress = show_progress
    self._max_shard_bytes = max_shard_bytes
    self.skips = skips_lib.SkipLog()
    config = kwargs.get("config")
    if isinstance(config, str) and not self.ANY_CONFIG_OK and config not in self.builder_configs:
      choices = sorted(self.builder_configs)
      raise ValueError(f"{self.name}: unknown config {config!r}; " +
                       (f"choose from {choices}." if choices else "it takes no config."))
    if isinstance(config, str) and self.ANY_CONFIG_OK and config not in self.builder_configs:
      kwargs["config"] = tfds.core.BuilderConfig(name=config)
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION, features=features(),
        homepage=self.HOMEPAGE or None, citation=self.CITATION or None,
        # Records keep the source's (sorted) order: builds are reproducible
        # and record i is easy to find; training shuffles indices anyway.
        disable_shuffling=True)

  def _list_entries(self, source, skips):
    """Returns {split: [Entry, ...]} for the corpus at `source`."""
    raise NotImplementedError

  def _source_path(self, dl_manager):
    source = self._source if self._source is not None else os.fspath(dl_manager.manual_dir)
    if not os.path.exists(source):
      raise FileNotFoundError(f"{self.name}: source {source!r} does not exist.")
    if os.path.isfile(source) and not self.SOURCE_IS_FILE_OK:
      raise NotADirectoryError(f"{self.name}: source {source!r} must be a directory.")
    return source

  def _split_generators(self, dl_manager):
    source = self._source_path(dl_manager)
    self._resolved_source = source
    entries = self._list_entries(source, self.skips)
    splits = {s: e for s, e in entries.items() if e}
    if not splits:
      raise ValueError(f"{self.name}: found no audio files under {source!r}.")
    if self._splits is not None:
      missing = sorted(set(self._splits) - set(splits))
      if missing:
        raise ValueError(f"{self.name}: split(s) {missing} not found under {source!r}; "
                         f"found {sorted(splits)}.")
      splits = {s: splits[s] for s in self._splits}
    for split in splits:
      splits[split] = _drop_duplicates(split, splits[split], self.skips)
      self.skips.num_candidates[split] += len(splits[split])
    return {split: self._generate_examples(split, es) for split, es in splits.items()}

  def _generate_examples(self, split, entries):
    """Yields (index, example) in entry order, skipping bad files."""
    bar = tqdm.tqdm(total=len(entries), desc=f"{self.name}/{split}", unit="utt",
                    disable=not self._show_progress, smoothing=0.05, dynamic_ncols=True)
    written, audio_samples, start = 0, 0, time.time()
    try:
      for index, (entry, result) in enumerate(
          _ordered_map(self._load, entries, self._num_workers)):
        bar.update(1)
        if isinstance(result, Exception):
          reason = getattr(result, "reason", skips_lib.BAD_LABEL)
          detail = getattr(result, "detail", str(result))
          self.skips.add(split, reason, entry.path, detail)
        else:
          written += 1
          audio_samples += result["num_samples"]
          yield index, result
        if index % 64 == 0 or index == len(entries) - 1:
          elapsed = max(time.time() - start, 1e-6)
          bar.set_postfix(audio_h=f"{audio_samples / constants.SAMPLE_RATE / 3600:.2f}",
                          audio_s_per_s=f"{audio_samples / constants.SAMPLE_RATE / elapsed:.0f}",
                          skipped=self.skips.num_skipped(split), refresh=False)
    finally:
      bar.close()
    self.skips.num_written[split] += written
    if not written:
      # TFDS cannot write an empty split; say why instead of its bare assert.
      raise ValueError(
          f"{self.name}: every one of the {len(entries)} files in split {split!r} was skipped "
          f"({self.skips.counts[split]}); e.g. {self.skips.examples[split]}")

  def _load(self, entry):
    """Entry -> example dict, or the BadAudio/BadLabel explaining why not."""
    try:
      x = audio.load_audio(entry.path, target_rate=constants.SAMPLE_RATE)
      starts, ends = _phone_times(entry, len(x))
    except (audio.BadAudio, BadLabel) as e:
      return e
    return {
        "audio": x,
        "id": entry.id,
        "text": entry.text,
        "speaker": entry.speaker,
        "language": entry.language,
        "phones": " ".join(entry.phones),
        "phone_starts": starts,
        "phone_ends": ends,
        "num_samples": len(x),
    }

  def _generate_splits(self, dl_manager, download_config):
    # Replaces TFDS's buffered writer, which needs TensorFlow (and RAM for the
    # whole split) past 1 GB per split; see `writer`.
    del download_config
    if self.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      raise ValueError(f"{self.name}: jaxssl builders write array_record only, "
                       f"not {self.info.file_format}.")
    return [writer.write_split(examples, split=split, features=self.info.features,
                               filename_template=self._get_filename_template(split),
                               max_shard_bytes=self._max_shard_bytes)
            for split, examples in self._split_generators(dl_manager).items()]

  def _download_and_prepare(self, dl_manager, download_config):
    super()._download_and_prepare(dl_manager, download_config)
    # self.data_dir is still the temporary folder here, so skipped.json moves
    # with the dataset when TFDS renames it into place.
    self.skip_summary = self.skips.write(
        self.data_dir, dataset=self.name,
        config=self.builder_config.name if self.builder_config else None,
        version=str(self.version), source=getattr(self, "_resolved_source", None))
    logging.info("%s: skipped %d file(s) %s; details in skipped.json beside the dataset.",
                 self.name, self.skip_summary["num_skipped"], self.skip_summary["skipped"])


def _phone_times(entry, num_samples):
  """Phone start/end times as int32 16 kHz samples, validated against the audio."""
  n = len(entry.phones)
  if len(entry.phone_starts) != n or len(entry.phone_ends) != n:
    if n and not entry.phone_starts and not entry.phone_ends:
      return np.zeros((0,), np.int32), np.zeros((0,), np.int32)  # Phones without times.
    raise BadLabel(f"{n} phones but {len(entry.phone_starts)} starts and "
                   f"{len(entry.phone_ends)} ends")
  scale = constants.SAMPLE_RATE / entry.label_rate
  starts = np.round(np.asarray(entry.phone_starts, np.float64) * scale).astype(np.int32)
  ends = np.round(np.asarray(entry.phone_ends, np.float64) * scale).astype(np.int32)
  if n and ((starts < 0).any() or (ends < starts).any() or ends.max() > num_samples):
    raise BadLabel(f"phone times out of order or past the audio's {num_samples} samples")
  return starts.reshape(-1), ends.reshape(-1)


def _drop_duplicates(split, entries, skips):
  """Keeps the first Entry per id; later ones are skipped as bad labels."""
  seen, out = set(), []
  for e in entries:
    if e.id in seen:
      skips.add(split, skips_lib.BAD_LABEL, e.path, f"duplicate utterance id {e.id!r}")
    else:
      seen.add(e.id)
      out.append(e)
  return out


def _ordered_map(fn, items, num_workers):
  """Yields (item, fn(item)) in order, computing a bounded window ahead on threads."""
  if num_workers == 1:
    for item in items:
      yield item, fn(item)
    return
  window = 4 * num_workers  # Bounds memory: at most this many decoded clips wait.
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    pending = []
    for item in items:
      pending.append((item, pool.submit(fn, item)))
      if len(pending) >= window:
        head, fut = pending.pop(0)
        yield head, fut.result()
    for item, fut in pending:
      yield item, fut.result()
