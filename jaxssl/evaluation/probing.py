"""One probe run, s3prl style: train on a frozen upstream, pick the best dev step, score test.

  python -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream=<ckpt dir>
      --workdir=workdir/probes/phone_w2v2

The flow (s3prl's runner, https://arxiv.org/abs/2105.01051): read the splits' targets and build
the vocabulary from train; run the upstream over whole utterances in length buckets (features
computed once and kept per utterance with `cache_features`, else recomputed every epoch); train
the probe (`probes.ProbeObjective`) with the engine for `total_steps`, scoring dev every
`eval_every_steps` and keeping the best dev parameters (`selection.DevSelection`); score test with
those. Like every engine job it resumes exactly after a kill (checkpoints every
`eval_every_steps`). For utterance-level tasks without layer norm or SpecAugment, the hidden
states are mean-pooled per layer before the probe, which is exact (weighted sum, projector and
pooling are all linear) and makes speaker / language probes nearly free.

As s3prl's shuffling DataLoaders, every training epoch draws a new utterance-level permutation
from (seed, epoch) and cuts it into batches within the length buckets (`epoch_batches`), cached
features included (the cache holds utterances; batches are assembled per epoch). With
`data.train_crop_samples` > 0 the training utterances are read as random crops of that many
samples, new every epoch and encoded every time (s3prl voxceleb1 `max_timestep`: shorter
utterances whole), while dev and test are whole utterances. `specaug` (configs/probes/asr.py)
adds s3prl's SpecAugment to the probe's training inputs (`probes.SpecAugment`).

Writes to the workdir: results.json (metrics, layer weights, loss curve, sizes, timings, config),
results.md (a table), layer_weights.png, metrics.jsonl and ckpt/.
"""
import functools
import json
import logging
import os
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from jaxssl import constants
from jaxssl.data import batching
from jaxssl.data import pipeline
from jaxssl.evaluation import metrics as metrics_lib
from jaxssl.evaluation import probes
from jaxssl.evaluation import results as results_lib
from jaxssl.evaluation import selection
from jaxssl.evaluation import tasks
from jaxssl.evaluation import upstreams
from jaxssl.training import engine
from jaxssl.training import metrics as training_metrics

# Frame-level inputs are padded to a multiple of this many frames, so that the length buckets
# of train, dev and test mostly share shapes (each new shape compiles the probe again).
FRAME_MULTIPLE = 32
MAX_BUCKETS = 4  # Padded lengths per split (= probe compiles).
_STREAM_EPOCH = 0x70726F  # Separates the probe's epoch draws from other (seed, epoch) streams.


def epoch_batches(lengths, edges, batch_size, *, seed, epoch, crop=0):
  """The batches of one probe epoch: a fresh utterance-level shuffle, cut into length buckets.

  A permutation of all records drawn from (seed, epoch) is split by bucket (the smallest edge
  that holds a record's length, cropped to `crop`), each bucket's records are cut into batches
  in that random order (the last one padded with -1), and the batches are shuffled. So every
  record is in exactly one batch per epoch and batch membership changes between epochs, as
  s3prl's shuffling DataLoaders (its length bucketing only groups similar lengths).

  Args:
    lengths: int [N] utterance lengths (samples).
    edges: ascending padded lengths (`batching.eval_bucket_edges` of the cropped lengths).
    batch_size: utterances per batch.
    seed, epoch: the randomness.
    crop: > 0: every record longer than this is read as a random window of `crop` samples,
      uniform over its start offsets (s3prl voxceleb1 `max_timestep`); shorter ones whole.

  Returns:
    list of {"indices": int64 [batch_size] (-1 = padding), "offsets": int64 [batch_size] crop
    starts, "length": padded samples}.
  """
  lengths = np.asarray(lengths, np.int64)
  rng = np.random.default_rng([_STREAM_EPOCH, seed, epoch])
  order = rng.permutation(len(lengths))
  offsets = np.zeros(len(lengths), np.int64)
  if crop:
    offsets = (rng.random(len(lengths)) * np.maximum(lengths - crop + 1, 1)).astype(np.int64)
    lengths = np.minimum(lengths, crop)
  bucket = np.searchsorted(edges, lengths[order], side="left")
  if len(order) and bucket.max() >= len(edges):
    raise ValueError(f"An utterance of {lengths.max()} samples exceeds the last bucket edge "
                     f"{edges[-1]}.")
  plans = []
  for k, edge in enumerate(edges):
    members = order[bucket == k]
    for start in range(0, len(members), batch_size):
      indices = np.full(batch_size, -1, np.int64)
      part = members[start:start + batch_size]
      indices[:len(part)] = part
      plans.append(dict(indices=indices, offsets=np.where(indices >= 0, offsets[indices], 0),
                        length=int(edge)))
  return [plans[i] for i in rng.permutation(len(plans))]


def _load_plan(source, plan, *, normalize):
  """Reads one planned batch: {"audio", "valid", "index"} (crops at the plan's offsets)."""
  indices = plan["indices"]
  keys = [int(i) for i in indices if i >= 0]
  get_many = getattr(source, "__getitems__", None)
  records = iter(get_many(keys) if get_many else [source[k] for k in keys])
  audios = [next(records)["audio"] if i >= 0 else None for i in indices]
  audio, valid = batching.crop_batch(audios, plan["offsets"], plan["length"],
                                     normalize=normalize)
  return {"audio": audio, "valid": valid, "index": indices.astype(np.int32)}


def read_batches(source, plans, data_cfg):
  """The audio batches of `plans`, in order, read (and prefetched) by a grain loader."""
  if not plans:
    return
  load = functools.partial(_load_plan, source, normalize=data_cfg.normalize)
  dataset = grain.MapDataset.range(len(plans)).map(plans.__getitem__).map(load)
  loader = pipeline.Loader(dataset, num_workers=data_cfg.num_workers, languages=[],
                           speakers=[], shape_fn=lambda t: (len(plans[t]["indices"]),
                                                            plans[t]["length"]),
                           num_steps=len(plans))
  try:
    for _ in range(len(plans)):
      yield next(loader)
  finally:  # Also when training stops mid-epoch and the generator is dropped.
    loader.close()


class FeatureStream:
  """Upstream features and targets of one split, as probe inputs, batch by batch.

  `epoch(e)` yields (inputs, index): inputs is the batch of `probes.ProbeObjective`, index the
  [B] record indices (-1 on padding rows), in the batches of `epoch_batches(seed, e)`: a new
  utterance-level shuffle every epoch. With `cache` every utterance's features (its row of the
  batch that first encoded it, at its bucket's padded length) are kept on the host and later
  batches are assembled from them: the same inputs as without the cache, where every batch is
  read and encoded again. `crop` > 0 reads random crops of that many samples, new every epoch
  (so it cannot be combined with `cache`).
  """

  def __init__(self, name, source, targets, upstream, data_cfg, task, *, label_len, pool, cache,
               seed, crop=0, batch_size=0):
    if cache and crop:
      raise ValueError(f"Split {name!r}: crops (data.train_crop_samples={crop}) change every "
                       f"epoch, so their features cannot be cached.")
    self.name, self.source, self.targets, self.upstream = name, source, targets, upstream
    self.data_cfg, self.task = data_cfg, task
    self.label_len, self.pool, self.cache, self.seed, self.crop = label_len, pool, cache, seed, crop
    self.batch_size = batch_size or data_cfg.batch_size
    self.lengths = np.asarray(source.metadata()["num_samples"], np.int64)
    self.edges = batching.eval_bucket_edges(
        np.minimum(self.lengths, crop) if crop else self.lengths, MAX_BUCKETS)
    self._rows = {}  # With cache: record index -> (hidden [L, T, D], valid [T]) numpy.

  def batches(self, e):
    """The plans (record indices, crop offsets, padded length) of epoch `e`."""
    return epoch_batches(self.lengths, self.edges, self.batch_size, seed=self.seed,
                         epoch=e, crop=self.crop)

  def _encode(self, batch):
    """(hidden [B, L, T, D], valid [B, T]) of one audio batch: the upstream's states, padded
    to FRAME_MULTIPLE frames (ctc) or mean-pooled per layer (`pool`: T = 1)."""
    hidden, valid = self.upstream(batch)
    pad = -hidden.shape[2] % FRAME_MULTIPLE
    if pad and self.task.kind == "ctc":  # Shared shapes across splits: fewer probe compiles.
      hidden = jnp.pad(jnp.asarray(hidden), ((0, 0), (0, 0), (0, pad), (0, 0)))
      valid = jnp.pad(jnp.asarray(valid), ((0, 0), (0, pad)))
    if self.pool:  # Exact for linear probes: pool each layer first (see module docstring).
      w = jnp.asarray(valid, jnp.float32)[:, None, :, None]
      hidden = (jnp.asarray(hidden) * w).sum(2, keepdims=True) / jnp.maximum(
          w.sum(2, keepdims=True), 1.0)
      valid = jnp.asarray(np.asarray(batch["index"]) >= 0)[:, None]
    return hidden, valid

  def _inputs(self, hidden, valid, index):
    """The probe's batch: the features plus the targets of records `index`."""
    real = index >= 0
    inputs = {"hidden": hidden, "valid": valid}
    if self.task.kind == "ctc":
      num_frames = np.asarray(valid).sum(-1)
      inputs.update(probes.ctc_targets(self.targets, index, self.label_len, num_frames))
      return inputs
    inputs["labels"] = np.where(real, np.asarray(self.targets.ids)[np.maximum(index, 0)], -1)
    inputs["rows"] = real.astype(np.float32)
    return inputs

  def _keep(self, hidden, valid, index):
    hidden, valid = np.asarray(hidden), np.asarray(valid)
    for row, i in enumerate(index):
      if i >= 0:
        self._rows[int(i)] = (hidden[row], valid[row])

  def _assemble(self, index):
    """(hidden, valid) of a batch from the cached rows (zeros on padding rows)."""
    first_hidden, first_valid = self._rows[int(index[index >= 0][0])]
    hidden = np.zeros((len(index),) + first_hidden.shape, first_hidden.dtype)
    valid = np.zeros((len(index),) + first_valid.shape, bool)
    for row, i in enumerate(index):
      if i >= 0:
        hidden[row], valid[row] = self._rows[int(i)]
    return hidden, valid

  def epoch(self, e=0, skip=0):
    """The batches of epoch `e` from position `skip` on (the skipped ones are not read)."""
    plans = self.batches(e)[skip:]
    if not self.cache:
      for batch in read_batches(self.source, plans, self.data_cfg):
        index = np.asarray(batch["index"]).astype(np.int64)
        yield self._inputs(*self._encode(batch), index), index
      return
    # Each record is in one batch per epoch: the batches to encode are known up front.
    todo = [any(int(i) not in self._rows for i in p["indices"] if i >= 0) for p in plans]
    audio = read_batches(self.source, [p for p, t in zip(plans, todo) if t], self.data_cfg)
    try:
      for plan, encode in zip(plans, todo):
        index = plan["indices"]
        if encode:
          self._keep(*self._encode(next(audio)), index)
        yield self._inputs(*self._assemble(index), index), index
    finally:
      audio.close()

  def loader(self):
    """The engine's training loader: endless epochs of probe inputs, resumable."""
    return selection.EpochLoader(lambda e, skip: (x for x, _ in self.epoch(e, skip)))


def evaluate_split(predict, params, stream, task, vocab):
  """Predicts every utterance of `stream`'s split with `predict(params, inputs) -> (labels,
  loss)`; returns its metrics plus the mean "loss"."""
  predictions, losses = {}, []
  for inputs, index in stream.epoch(0):
    pred, loss = predict(params, inputs)
    pred, valid = np.asarray(pred), np.asarray(inputs["valid"])
    losses.append(float(loss))
    decoded = (metrics_lib.ctc_greedy_decode(pred, valid) if task.kind == "ctc" else pred)
    for row, i in enumerate(index):
      if i >= 0:
        predictions[int(i)] = decoded[row]
  out = results_lib.score(task, vocab, stream.targets, predictions)
  out["loss"] = float(np.mean(losses))
  return out


def run(config, workdir, *, upstream=None, source_fn=None, plot=True, checkpoints=True):
  """Trains and scores one probe; writes results.json / results.md / layer_weights.png.

  Args:
    config: a probe config (configs/probes/*.py): task, upstream, data, splits, probe, optim.
    workdir: the output directory (resumes from its ckpt/ when there is one).
    upstream: an `upstreams.Upstream` to use instead of loading `config.upstream` (the
      pretraining evals hook passes the live model).
    source_fn: `split name -> Source` instead of opening config.data (tests).
    plot: write layer_weights.png.
    checkpoints: False trains without saving or resuming (the pretraining evals' probes).

  Returns:
    The results dict (also in results.json), or {"preempted": True, "step"} when SIGTERM
    stopped the run after saving a checkpoint.
  """
  start = time.perf_counter()
  task = tasks.get(config.task)
  total, every = config.total_steps, config.eval_every_steps
  if total <= 0 or every <= 0:
    raise ValueError(f"total_steps={total} and eval_every_steps={every} must be > 0.")
  if upstream is None:
    upstream = upstreams.load(config.upstream, arch=config.upstream_arch, seed=config.seed)
  data_cfg = config.data.copy_and_resolve_references()
  with data_cfg.unlocked():
    data_cfg.normalize = upstream.normalize  # Waveforms as the upstream was pretrained on.
  splits = results_lib.open_splits(config, source_fn=source_fn, workdir=workdir)
  tokens = {k: tasks.read_tokens(task, src) for k, src in splits.items()}
  vocab = tasks.build_vocab(task, tokens["train"])
  targets = {k: tasks.make_targets(task, tokens[k], vocab, split=k,
                                   languages=tasks.languages_of(splits[k])) for k in splits}
  label_len = max(8, -(-max(t.max_length() for t in targets.values()) // 8) * 8)
  specaug = probes.specaug_from_config(config.get("specaug"))
  # Pre-pooling is exact only when nothing acts on the frames between layer sum and pooling.
  pool = task.kind == "utterance" and not config.probe.layer_norm and specaug is None
  crop = train_crop(config)
  if crop and config.cache_features:
    logging.info("data.train_crop_samples=%d: new crops every epoch, so the training features "
                 "are computed every step; only dev and test are cached.", crop)
  streams = {k: FeatureStream(k, splits[k], targets[k], upstream, data_cfg, task,
                              label_len=label_len, pool=pool, seed=config.seed,
                              cache=config.cache_features and not (k == "train" and crop),
                              crop=crop if k == "train" else 0,
                              batch_size=0 if k == "train" else data_cfg.get("eval_batch_size", 0))
             for k in splits}

  objective = probes.ProbeObjective(probes.Probe(kind=task.kind, num_outputs=len(vocab),
                                                 specaug=specaug, **config.probe))
  predict = jax.jit(objective.predict)
  tx, lr_schedule = probes.make_optimizer(config.optim.lr, clip_norm=config.optim.clip_norm,
                                          weight_decay=config.optim.weight_decay)
  metric = task.metrics[0]
  dev = selection.DevSelection(
      lambda params: evaluate_split(predict, params, streams["dev"], task, vocab), workdir,
      every=every, total=total, metric=metric,
      lower_is_better=metric in results_lib.LOWER_IS_BETTER, name=f"probe_{task.name}")
  # The probe trains on one device, as s3prl's; the upstream's features are its inputs.
  run_config = mlc.ConfigDict(dict(
      total_steps=total, log_every_steps=config.log_every_steps, seed=config.seed,
      mesh=dict(data=-1, fsdp=1, tensor=1), ckpt=dict(every_steps=every, keep=2, init_from=""),
      task=config.to_dict()))
  out = engine.train(run_config, workdir, objective=objective, tx=tx, lr_schedule=lr_schedule,
                     make_loader=streams["train"].loader, callbacks=[dev],
                     checkpoints=checkpoints, progress=checkpoints,
                     devices=jax.local_devices()[:1])
  if out["preempted"]:  # Saved at SIGTERM; the same call resumes.
    return dict(preempted=True, step=out["step"])
  params = dev.best_params(out["state"].params)
  logging.info("probe %s: best dev step %d: %s", task.name, dev.best_step, dev.best_dev)
  test = evaluate_split(predict, params, streams["test"], task, vocab)
  results = dict(
      task=task.name, upstream=upstream.name, dataset=config.data.name,
      upstream_layers=upstream.num_hidden, upstream_dim=upstream.dim,
      frame_rate=upstream.frame_rate, num_outputs=len(vocab),
      chance_accuracy=(1.0 / len(vocab)) if task.kind == "utterance" else None,
      utterances={k: len(v) for k, v in splits.items()}, best_step=dev.best_step,
      dev=dev.best_dev, test=test, layer_weights=probes.layer_weights(params).tolist(),
      train_curve=train_curve(workdir), dev_curve=dev.curve,
      seconds=time.perf_counter() - start, config=json.loads(config.to_json_best_effort()))
  results_lib.write_results(results, workdir, plot=plot)
  return results


def train_crop(config):
  """`data.train_crop_samples` (0: train on whole utterances), checked."""
  crop = int(config.data.get("train_crop_samples", 0) or 0)
  if crop < 0 or 0 < crop < constants.SAMPLE_RATE // 10:
    raise ValueError(f"data.train_crop_samples={crop} must be 0 (whole utterances) or at least "
                     f"{constants.SAMPLE_RATE // 10} samples (0.1 s).")
  return crop


def train_curve(workdir):
  """[(step, train loss)] of a run's metrics.jsonl (every logged step)."""
  rows = training_metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
