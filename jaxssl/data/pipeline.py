"""The input pipeline: TFDS array_record sources -> host-local numpy batches.

Read top to bottom: `make_train_loader` picks the records to train on, then
builds a grain pipeline over *step numbers*:

  grain.MapDataset.range(inf)
      .map(plan)       # step t -> the global batch of step t: record indices,
                       #   crop offsets and shape, a pure function of (seed, t)
      .map(host_slice) # this host's rows of that global batch
      .map(load)       # read, crop, pad, scale to float32, normalise

Planning the *global* batch and slicing it per host (rather than grain's
per-host `ShardOptions`, which shards records) makes the data a run sees
independent of the number of hosts: the P hosts of step t together hold
exactly the batch a single host would get. It also lets every host agree on
the step's shape (curriculum, dynamic batching, eval buckets) without any
communication. The loader's state is just the next step ({"step": t}), so it
goes into the checkpoint and a resumed run sees the same data.
Strategies (samplers, curricula, selection) live in `sampling.py`, shapes and
batch assembly in `batching.py`.
"""
import functools
import math
import sys

from absl import logging
import grain
import numpy as np

from jaxssl import constants
from jaxssl.data import audio as audio_lib
from jaxssl.data import batching
from jaxssl.data import labels as labels_lib
from jaxssl.data import sampling
from jaxssl.data import sources

_CURRICULA = ("", "crop_length", "max_duration")


class Loader:
  """An iterator of host-local batches with a checkpointable state.

  Element t of the underlying MapDataset is the batch of step t, so the whole
  state is the next step: {"step": t}. Restoring it slices the dataset at t,
  which also works after changing data.num_workers.

  Attributes:
    languages: sorted language codes; batch["language"] indexes into it.
    speakers: sorted speaker ids; batch["speaker"] indexes into it.
  """

  def __init__(self, dataset, *, num_workers, languages, speakers, shape_fn, num_steps=None):
    self._dataset = dataset
    self._num_workers = num_workers
    self._shape_fn = shape_fn
    self._num_steps = num_steps
    self._step = 0
    self._iter = None  # Started lazily: worker processes only once needed.
    self.languages = languages
    self.speakers = speakers

  def _start(self):
    # Each element is a whole batch (megabytes), so prefetch only a couple.
    ds = self._dataset[self._step:].to_iter_dataset(
        grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
    if self._num_workers:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._num_workers))
    self._iter = iter(ds)

  def __iter__(self):
    return self

  def __next__(self):
    if self._iter is None:
      self._start()
    batch = next(self._iter)
    self._step += 1
    return batch

  def __len__(self):
    if self._num_steps is None:
      raise TypeError("The training loader is endless.")
    return self._num_steps

  @property
  def step(self):
    """Index of the next batch."""
    return self._step

  def get_state(self):
    """JSON-serialisable state; `set_state` on a fresh loader resumes here."""
    return {"step": self._step}

  def set_state(self, state):
    try:
      step = int(state["step"])
    except (TypeError, KeyError, ValueError):
      raise ValueError(f"Loader state must be {{'step': int}}, got {state!r}.") from None
    self.close()
    self._step = step

  def batch_shape(self, step=None):
    """(global batch size, length in samples) of `step` (default: the next one)."""
    return self._shape_fn(self._step if step is None else step)

  def seconds_per_batch(self, step=None):
    """Padded audio seconds in the *global* batch of `step` (default: next)."""
    batch_size, length = self.batch_shape(step)
    return batch_size * length / constants.SAMPLE_RATE

  def close(self):
    """Stops prefetch threads / worker processes (restarted by `next`)."""
    if self._iter is not None and hasattr(self._iter, "close"):
      self._iter.close()
    self._iter = None


def make_train_loader(data_cfg, *, seed, process_index=0, process_count=1, source=None):
  """Endless pretraining batches of random fixed-length crops.

  Args:
    data_cfg: the `data` config section (configs/common.py `data()`).
    seed: data seed (>= 0); the stream is a pure function of (seed, step).
    process_index, process_count: this host and the number of hosts.
    source: a Source (see sources.py); default: `open_source(data_cfg...)`.

  Returns:
    A `Loader` yielding {"audio": float32 [B/P, L], "valid": bool [B/P, L],
    "language": int32 [B/P], "speaker": int32 [B/P]}, where L is
    data.crop_samples (or the curriculum / dynamic-batching length of the step).
    With data.labels set (see labels.py), crops start on whole label frames and batches also
    hold "labels" int32 [B/P, L // hop + 1] and "labels_valid" bool of that shape.
  """
  _check_config(data_cfg, seed=seed, process_index=process_index, process_count=process_count)
  source = _open(data_cfg, data_cfg.split) if source is None else source
  meta = source.metadata()
  records = _records_to_train_on(data_cfg, source, meta)
  languages, language_ids = np.unique(meta["language"], return_inverse=True)
  speakers, speaker_ids = np.unique(meta["speaker"], return_inverse=True)

  plan = TrainPlan(data_cfg, seed=seed, lengths=meta["num_samples"], records=records,
                   language_ids=language_ids, process_count=process_count)
  load = functools.partial(_load, source, language_ids=language_ids.astype(np.int32),
                           speaker_ids=speaker_ids.astype(np.int32),
                           normalize=data_cfg.normalize)
  load = labels_lib.attach(load, data_cfg, source, meta, split=data_cfg.split)
  dataset = (grain.MapDataset.range(sys.maxsize)
             .map(plan)
             .map(functools.partial(_host_slice, index=process_index, count=process_count))
             .map(load))
  return Loader(dataset, num_workers=data_cfg.num_workers, languages=[str(x) for x in languages],
                speakers=[str(x) for x in speakers], shape_fn=plan.shape)


class TrainPlan:
  """step -> the global batch of that step (indices, crop offsets, length)."""

  def __init__(self, data_cfg, *, seed, lengths, records, language_ids, process_count):
    self.seed = seed
    self.lengths = np.asarray(lengths, np.int64)
    self.records = records
    self.crop = data_cfg.crop_samples
    self.batch_size = data_cfg.batch_size
    self.curriculum = data_cfg.curriculum
    self.sampler = sampling.make_sampler(data_cfg.sampling, seed=seed, language=language_ids,
                                         durations=self.lengths, records=records)
    # Pools: the record subsets a step may draw from, keyed by small ints.
    self.pools = {0: records}
    self.buckets = None
    if data_cfg.dynamic_batch_sec > 0:
      # A fixed multiple (not the host count) keeps global batches host-invariant.
      self.buckets = batching.dynamic_buckets(
          self.lengths[records],
          target_samples=round(data_cfg.dynamic_batch_sec * constants.SAMPLE_RATE),
          crop_samples=self.crop, multiple=_multiple(data_cfg, process_count),
          groups=data_cfg.get("batch_groups", 1),
          max_buckets=data_cfg.get("dynamic_batch_buckets", 4),
          weights=self.sampler.weights(records))
      for k in range(len(self.buckets.lengths)):
        self.pools[10 + k] = records[self.buckets.assignment == k]
    elif self.curriculum.name == "max_duration":
      # Below the final length only utterances that fit are drawn (whole, padded).
      for k in range(1, 4):
        limit = self.crop * k // 4
        self.pools[k] = records[self.lengths[records] <= limit]
        if not len(self.pools[k]) and limit >= self._length(0):
          raise ValueError(f"data.curriculum max_duration: no utterance is <= {limit} samples; "
                           f"raise data.curriculum.start_samples above {limit}.")

  def _length(self, step):
    c = self.curriculum
    return sampling.curriculum_length(step, final_samples=self.crop,
                                      start_samples=c.start_samples, ramp_steps=c.ramp_steps)

  def _pool(self, step):
    """(pool key, global batch size, length) for `step`."""
    if self.buckets is not None:
      k = self.buckets.choose(seed=self.seed, step=step)
      return 10 + k, self.buckets.batch_sizes[k], self.buckets.lengths[k]
    if self.curriculum.name == "crop_length":
      return 0, self.batch_size, self._length(step)
    if self.curriculum.name == "max_duration":
      length = self._length(step)
      key = 0 if length == self.crop else {self.crop * k // 4: k for k in (1, 2, 3)}[length]
      return key, self.batch_size, length
    return 0, self.batch_size, self.crop

  def shape(self, step):
    """(global batch size, length) of `step`."""
    return self._pool(step)[1:]

  def __call__(self, step):
    key, batch_size, length = self._pool(step)
    # A bucket drawn in proportion to its (resampled) mass samples with the records' weights;
    # a pool the step is given (curricula) samples the languages at p_l.
    indices = self.sampler.sample(step, batch_size, key, self.pools[key],
                                  weighted=self.buckets is not None)
    offsets = batching.crop_offsets(self.lengths[indices], length, seed=self.seed, step=step)
    return {"indices": indices, "offsets": offsets, "length": length}


def _multiple(data_cfg, process_count):
  """What every dynamic batch size is a multiple of (with data.batch_groups)."""
  return math.lcm(data_cfg.get("dynamic_batch_multiple", 8), process_count)


def nominal_batch_shape(data_cfg, process_count=1):
  """(global batch, length) of the longest crop: the shape `--dry_run`, `jaxssl.aot` and the
  config checks use. Fixed crops: (data.batch_size, data.crop_samples); dynamic batching: the
  bucket at data.crop_samples (the largest activations; the other buckets have shorter crops
  and about the same audio, `batching.budget_batch_size`)."""
  if data_cfg.dynamic_batch_sec <= 0:
    return data_cfg.batch_size, data_cfg.crop_samples
  size = batching.budget_batch_size(round(data_cfg.dynamic_batch_sec * constants.SAMPLE_RATE),
                                    data_cfg.crop_samples,
                                    multiple=_multiple(data_cfg, process_count),
                                    groups=data_cfg.get("batch_groups", 1))
  return size, data_cfg.crop_samples


def _host_slice(plan, *, index, count):
  """This host's contiguous rows of the global batch plan."""
  per_host = len(plan["indices"]) // count
  rows = slice(index * per_host, (index + 1) * per_host)
  return {**plan, "indices": plan["indices"][rows], "offsets": plan["offsets"][rows]}


def _load(source, plan, *, language_ids, speaker_ids, normalize, with_index=False):
  """Reads the planned records and assembles the numpy batch (-1 = padding row)."""
  indices = plan["indices"]
  audios = _read_audio(source, indices)
  audio, valid = batching.crop_batch(audios, plan["offsets"], plan["length"],
                                     normalize=normalize)
  real = indices >= 0
  batch = {"audio": audio, "valid": valid,
           "language": np.where(real, language_ids[indices], -1).astype(np.int32),
           "speaker": np.where(real, speaker_ids[indices], -1).astype(np.int32)}
  if with_index:
    batch["index"] = indices.astype(np.int32)
  return batch


def _read_audio(source, indices):
  """int16 audio of each record (None for -1), batched when the source can."""
  keys = [int(i) for i in indices if i >= 0]
  getitems = getattr(source, "__getitems__", None)
  records = iter(getitems(keys) if getitems else [source[k] for k in keys])
  return [next(records)["audio"] if i >= 0 else None for i in indices]


def make_eval_loader(data_cfg, *, split, seed, process_index=0, process_count=1, max_buckets=4,
                     source=None, languages=None):
  """One pass over `split`: whole utterances padded to <= max_buckets lengths.

  Args:
    data_cfg: the `data` section; batch_size (global) and normalize are used.
    split: the split to read (when `source` is None).
    seed: orders the batches; every host gets the same bucket at each step.
    process_index, process_count: this host and the number of hosts.
    max_buckets: at most this many padded lengths (= compiles).
    source: a Source; default `open_source(data_cfg.name, split=split)`.
    languages: language list to index into (e.g. the training loader's, so
      ids agree); default: this split's sorted languages.

  Returns:
    A finite `Loader` (len() = number of steps) yielding the training keys plus
    "index": int32 [B/P] record index, -1 on padding rows (whose "valid" is
    all False and "language"/"speaker" are -1).
  """
  _check_config(data_cfg, seed=seed, process_index=process_index, process_count=process_count)
  source = _open(data_cfg, split) if source is None else source
  meta = source.metadata()
  lengths = np.asarray(meta["num_samples"], np.int64)
  if not len(lengths):
    raise ValueError(f"Eval split {split!r} of {data_cfg.name!r} is empty.")
  present = {str(x) for x in meta["language"]}
  languages = sorted(present) if languages is None else [str(x) for x in languages]
  unknown = sorted(present - set(languages))
  if unknown:
    raise ValueError(f"Eval split {split!r} has languages {unknown} missing from {languages}.")
  position = {lang: i for i, lang in enumerate(languages)}
  language_ids = np.array([position[str(x)] for x in meta["language"]], np.int32)
  speakers, speaker_ids = np.unique(meta["speaker"], return_inverse=True)

  edges = batching.eval_bucket_edges(lengths, max_buckets)
  batches = batching.eval_batches(lengths, edges, data_cfg.batch_size, seed=seed)
  plans = [{"indices": idx, "offsets": np.zeros(len(idx), np.int64), "length": length}
           for length, idx in batches]
  load = functools.partial(_load, source, language_ids=language_ids,
                           speaker_ids=speaker_ids.astype(np.int32),
                           normalize=data_cfg.normalize, with_index=True)
  load = labels_lib.attach(load, data_cfg, source, meta, split=split)
  dataset = (grain.MapDataset.range(len(plans))
             .map(plans.__getitem__)
             .map(functools.partial(_host_slice, index=process_index, count=process_count))
             .map(load))
  return Loader(dataset, num_workers=data_cfg.num_workers, languages=languages,
                speakers=[str(x) for x in speakers], num_steps=len(plans),
                shape_fn=lambda t: (data_cfg.batch_size, batches[t][0]))


def describe(data_cfg, source=None):
  """What the `data` section opens: dataset, split, records, hours and languages (the training
  split's metadata; `--dry_run` prints it). Raises what `sources.open_source` raises."""
  source = _open(data_cfg, data_cfg.split) if source is None else source
  meta = source.metadata()
  return dict(dataset=data_cfg.name, split=data_cfg.split, records=int(len(meta["num_samples"])),
              hours=float(np.sum(meta["num_samples"]) / constants.SAMPLE_RATE / 3600),
              languages=sorted({str(x) for x in meta["language"]}))


def training_languages(data_cfg, source=None):
  """The sorted language names of the training split: what batch["language"] indexes."""
  source = _open(data_cfg, data_cfg.split) if source is None else source
  return [str(x) for x in np.unique(source.metadata()["language"])]


def _open(data_cfg, split):
  return sources.open_source(data_cfg.name, data_dir=data_cfg.data_dir, split=split)


def _records_to_train_on(data_cfg, source, meta):
  """Record indices kept by data selection and the minimum length."""
  lengths = np.asarray(meta["num_samples"], np.int64)
  records = np.arange(len(lengths), dtype=np.int64)
  sel = data_cfg.selection
  if sel.score_file:
    if "id" in meta:
      ids = [str(i) for i in meta["id"]]
    else:  # Reads every record (decodes audio): fine for small corpora only.
      logging.warning("Source metadata has no 'id'; reading all %d records.", len(lengths))
      ids = [source[int(i)]["id"] for i in records]
    records = sampling.select_by_score(ids, sel.score_file, sel.keep_fraction)
  min_samples = data_cfg.min_samples or audio_lib.MIN_SAMPLES
  records = records[lengths[records] >= min_samples]
  if not len(records):
    raise ValueError(f"No record of {data_cfg.name!r}/{data_cfg.split} is left after selection "
                     f"and data.min_samples={min_samples}.")
  return records


def _check_config(c, *, seed, process_index, process_count):
  """Clear errors, naming the field, for a bad `data` section."""
  def need(ok, msg):
    if not ok:
      raise ValueError(msg)
  need(isinstance(seed, (int, np.integer)) and seed >= 0, f"seed must be an int >= 0, got {seed}.")
  need(0 <= process_index < process_count,
       f"process_index={process_index} must be in [0, process_count={process_count}).")
  need(c.batch_size > 0 and c.batch_size % process_count == 0,
       f"data.batch_size={c.batch_size} must be a positive multiple of "
       f"process_count={process_count}.")
  need(c.crop_samples > 0, f"data.crop_samples must be > 0, got {c.crop_samples}.")
  need(c.min_samples >= 0, f"data.min_samples must be >= 0, got {c.min_samples}.")
  need(c.num_workers >= 0, f"data.num_workers must be >= 0, got {c.num_workers}.")
  need(c.sampling.name in ("uniform", "temperature"),
       f"Unknown data.sampling.name {c.sampling.name!r}; choose from ['temperature', 'uniform'].")
  need(c.sampling.alpha >= 0, f"data.sampling.alpha must be >= 0, got {c.sampling.alpha}.")
  cur = c.curriculum
  need(cur.name in _CURRICULA, f"Unknown data.curriculum.name {cur.name!r}; choose from "
       f"{list(_CURRICULA)}.")
  if cur.name:
    need(cur.ramp_steps > 0, f"data.curriculum.ramp_steps must be > 0, got {cur.ramp_steps}.")
    need(0 <= cur.start_samples <= c.crop_samples,
         f"data.curriculum.start_samples={cur.start_samples} must be in [0, data.crop_samples].")
  need(c.dynamic_batch_sec >= 0, f"data.dynamic_batch_sec must be >= 0, got "
       f"{c.dynamic_batch_sec}.")
  need(c.dynamic_batch_multiple >= 1, "data.dynamic_batch_multiple must be >= 1.")
  need(c.get("dynamic_batch_buckets", 4) >= 1, "data.dynamic_batch_buckets must be >= 1.")
  groups = c.get("batch_groups", 1)
  need(groups >= 1, f"data.batch_groups must be >= 1, got {groups}.")
  need(c.dynamic_batch_sec > 0 or c.batch_size % groups == 0,
       f"data.batch_size={c.batch_size} does not split into data.batch_groups={groups}.")
  need(not (c.dynamic_batch_sec > 0 and cur.name),
       "data.dynamic_batch_sec and data.curriculum cannot be combined (shapes would multiply).")
  sel = c.selection
  need(0 < sel.keep_fraction <= 1,
       f"data.selection.keep_fraction must be in (0, 1], got {sel.keep_fraction}.")
  need(sel.score_file or sel.keep_fraction == 1,
       "data.selection.keep_fraction < 1 needs data.selection.score_file.")
