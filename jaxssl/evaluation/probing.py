"""One probe run, s3prl style: train on a frozen upstream, pick the best dev step, score test.

  python -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream=<ckpt dir>
      --workdir=workdir/probes/phone_w2v2

The flow (s3prl's runner, https://arxiv.org/abs/2105.01051): read the splits' targets and build
the vocabulary from train; run the upstream over whole utterances in length buckets (features
computed once and kept in memory with `cache_features`, else recomputed every epoch); train the
probe (`probes.ProbeObjective`) with the engine for `total_steps`, scoring dev every
`eval_every_steps` and keeping the best dev parameters (`selection.DevSelection`); score test with
those. Like every engine job it resumes exactly after a kill (checkpoints every
`eval_every_steps`). For utterance-level tasks without layer norm, the hidden states are
mean-pooled per layer before the probe, which is exact (weighted sum, projector and pooling are
all linear) and makes speaker / language probes nearly free.

Writes to the workdir: results.json (metrics, layer weights, loss curve, sizes, timings, config),
results.md (a table), layer_weights.png, metrics.jsonl and ckpt/.
"""
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

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


class FeatureStream:
  """Upstream features and targets of one split, as probe inputs, batch by batch.

  `epoch(e)` yields (inputs, index): inputs is the batch of `probes.ProbeObjective`,
  index the [B] record indices (-1 on padding rows). With `cache` the first epoch's batches are
  kept and later epochs replay them in a (seed, epoch) permutation; without it every epoch
  re-reads the split in new batches (eval loader seed + epoch) and reruns the upstream.
  """

  def __init__(self, name, source, targets, upstream, data_cfg, task, *, label_len, pool, cache,
               seed):
    self.name, self.source, self.targets, self.upstream = name, source, targets, upstream
    self.data_cfg, self.task = data_cfg, task
    self.label_len, self.pool, self.cache, self.seed = label_len, pool, cache, seed
    self._cached = None

  def _inputs(self, batch):
    hidden, valid = self.upstream(batch)
    pad = -hidden.shape[2] % FRAME_MULTIPLE
    if pad and self.task.kind == "ctc":  # Shared shapes across splits: fewer probe compiles.
      hidden = jnp.pad(jnp.asarray(hidden), ((0, 0), (0, 0), (0, pad), (0, 0)))
      valid = jnp.pad(jnp.asarray(valid), ((0, 0), (0, pad)))
    index = np.asarray(batch["index"])
    real = index >= 0
    num_frames = np.asarray(valid).sum(-1)
    inputs = {"hidden": hidden, "valid": valid}
    if self.task.kind == "ctc":
      inputs.update(probes.ctc_targets(self.targets, index, self.label_len, num_frames))
      return inputs, index
    inputs["labels"] = np.where(real, np.asarray(self.targets.ids)[np.maximum(index, 0)], -1)
    inputs["rows"] = real.astype(np.float32)
    if self.pool:  # Exact for linear probes: pool each layer first (see module docstring).
      w = jnp.asarray(valid, jnp.float32)[:, None, :, None]
      pooled = (jnp.asarray(hidden) * w).sum(2, keepdims=True) / jnp.maximum(
          w.sum(2, keepdims=True), 1.0)
      inputs["hidden"], inputs["valid"] = pooled, jnp.asarray(real)[:, None]
    return inputs, index

  def epoch(self, e=0, skip=0):
    """The batches of epoch `e` from position `skip` on (the skipped ones are read, not
    encoded, unless the epoch-0 cache is being built)."""
    if self.cache and self._cached is None and e > 0:
      for _ in self.epoch(0):  # A resumed run: build the epoch-0 cache first.
        pass
    if self.cache and self._cached is not None:
      order = np.random.default_rng([self.seed, e]).permutation(len(self._cached))
      yield from (self._cached[i] for i in (order if e else range(len(self._cached)))[skip:])
      return
    loader = pipeline.make_eval_loader(self.data_cfg, split=self.name, seed=self.seed + e,
                                       source=self.source)
    kept = []
    try:
      for position, batch in enumerate(loader):
        if position < skip and not self.cache:
          continue
        item = self._inputs(batch)
        if self.cache:
          kept.append(item)
        if position >= skip:
          yield item
    finally:  # Also when training stops mid-epoch and the generator is dropped.
      loader.close()
    if self.cache:
      self._cached = kept

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
  splits = results_lib.open_splits(config, source_fn=source_fn)
  tokens = {k: tasks.read_tokens(task, src) for k, src in splits.items()}
  vocab = tasks.build_vocab(task, tokens["train"])
  targets = {k: tasks.make_targets(task, tokens[k], vocab, split=k) for k in splits}
  label_len = max(8, -(-max(t.max_length() for t in targets.values()) // 8) * 8)
  pool = task.kind == "utterance" and not config.probe.layer_norm
  streams = {k: FeatureStream(k, splits[k], targets[k], upstream, data_cfg, task,
                              label_len=label_len, pool=pool, cache=config.cache_features,
                              seed=config.seed) for k in splits}

  objective = probes.ProbeObjective(probes.Probe(kind=task.kind, num_outputs=len(vocab),
                                                 **config.probe))
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


def train_curve(workdir):
  """[(step, train loss)] of a run's metrics.jsonl (every logged step)."""
  rows = training_metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
