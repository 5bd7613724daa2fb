"""One probe run, s3prl style: train on a frozen upstream, pick the best dev step, score test.

  python -m jaxssl.evaluate --config=configs/probes/phone.py --config.upstream=<ckpt dir>
      --workdir=workdir/probes/phone_w2v2

The flow (s3prl's runner, https://arxiv.org/abs/2105.01051): read the splits' targets and build
the vocabulary from train; run the upstream over whole utterances in length buckets (features
computed once and kept in memory with `cache_features`, else recomputed every epoch); train the
probe with Adam for `optim.total_steps`, evaluating on dev every `optim.eval_every_steps` and
keeping the best dev parameters; score test with those. For utterance-level tasks without layer
norm, the hidden states are mean-pooled per layer before the probe, which is exact (weighted
sum, projector and pooling are all linear) and makes speaker / language probes nearly free.

Writes to the workdir: results.json (metrics, layer weights, loss curve, sizes, timings, config),
results.md (a table) and layer_weights.png.
"""
import functools
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from jaxssl import cli
from jaxssl import validate
from jaxssl.data import pipeline
from jaxssl.data import sources
from jaxssl.evaluation import metrics as metrics_lib
from jaxssl.evaluation import probes
from jaxssl.evaluation import tasks
from jaxssl.evaluation import upstreams

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

LOWER_IS_BETTER = ("per", "wer", "cer")
# Frame-level inputs are padded to a multiple of this many frames, so that the length buckets
# of train, dev and test mostly share shapes (each new shape compiles the probe again).
FRAME_MULTIPLE = 32


def open_splits(config, *, source_fn=None):
  """{"train", "dev", "test"} -> Source of the probe's data (holdout of train when asked)."""
  d, s = config.data, config.splits
  source_fn = source_fn or (lambda split: sources.open_source(d.name, data_dir=d.data_dir,
                                                              split=split))
  if s.by_utterance:
    full = source_fn(s.train)
    meta = full.metadata()
    parts = tasks.holdout_split(meta["speaker"], meta["id"], dev_fraction=s.dev_fraction,
                                test_fraction=s.test_fraction, seed=s.seed)
    return {k: tasks.SubsetSource(full, v, name=f"{s.train}:{k}") for k, v in parts.items()}
  out = {k: source_fn(getattr(s, k)) for k in ("train", "dev", "test")}
  if s.max_train_utterances:  # A fixed, evenly spread subset (quick in-training evals).
    n = len(out["train"])
    keep = np.unique(np.linspace(0, n - 1, min(n, s.max_train_utterances)).astype(np.int64))
    out["train"] = tasks.SubsetSource(out["train"], keep, name=f"{s.train}[subset]")
  return out


class FeatureStream:
  """Upstream features and targets of one split, as probe inputs, batch by batch.

  `epoch(e)` yields (inputs, index): inputs is the jit-ready dict of `probes.ProbeTrainer`,
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
      ids = [self.targets.ids[i] if i >= 0 else np.zeros(0, np.int32) for i in index]
      labels = np.zeros((len(index), self.label_len), np.int32)
      for r, x in enumerate(ids):
        labels[r, :len(x)] = x
      inputs["labels"] = labels
      inputs["label_valid"] = np.arange(self.label_len)[None] < np.array([len(x) for x in ids])[
          :, None]
      rows = real & probes.ctc_feasible(ids, num_frames) & (num_frames > 0)
    else:
      inputs["labels"] = np.where(real, np.asarray(self.targets.ids)[np.maximum(index, 0)], -1)
      rows = real
      if self.pool:  # Exact for linear probes: pool each layer first (see module docstring).
        w = jnp.asarray(valid, jnp.float32)[:, None, :, None]
        pooled = (jnp.asarray(hidden) * w).sum(2, keepdims=True) / jnp.maximum(
            w.sum(2, keepdims=True), 1.0)
        inputs["hidden"], inputs["valid"] = pooled, jnp.asarray(real)[:, None]
    inputs["rows"] = rows.astype(np.float32)
    return inputs, index

  def epoch(self, e=0):
    if self.cache and self._cached is not None:
      order = np.random.default_rng([self.seed, e]).permutation(len(self._cached))
      yield from (self._cached[i] for i in (order if e else range(len(self._cached))))
      return
    loader = pipeline.make_eval_loader(self.data_cfg, split=self.name, seed=self.seed + e,
                                       source=self.source)
    kept = []
    try:
      for batch in loader:
        item = self._inputs(batch)
        if self.cache:
          kept.append(item)
        yield item
    finally:  # Also when training stops mid-epoch and the generator is dropped.
      loader.close()
    if self.cache:
      self._cached = kept

  def endless(self):
    e = 0
    while True:
      yield from self.epoch(e)
      e += 1


def score(task, vocab, targets, predictions):
  """Task metrics from {record index: prediction} (frame label lists or class ids)."""
  index = sorted(predictions)
  if task.kind == "utterance":
    return {"accuracy": metrics_lib.accuracy([predictions[i] for i in index],
                                             np.asarray(targets.ids)[index])}
  hyps = [vocab.decode(predictions[i]) for i in index]
  refs = [targets.tokens[i] for i in index]
  if task.name == "phone":
    return {"per": metrics_lib.token_error_rate(refs, hyps)}
  refs, hyps = [tasks.chars_to_text(r) for r in refs], [tasks.chars_to_text(h) for h in hyps]
  return {"wer": metrics_lib.word_error_rate(refs, hyps),
          "cer": metrics_lib.char_error_rate(refs, hyps)}


def evaluate_split(trainer, params, stream, task, vocab):
  """Predicts every utterance of `stream`'s split; returns its metrics plus the mean "loss"."""
  predictions, losses = {}, []
  for inputs, index in stream.epoch(0):
    pred, loss = trainer.predict(params, inputs)
    pred, valid = np.asarray(pred), np.asarray(inputs["valid"])
    losses.append(float(loss))
    decoded = (metrics_lib.ctc_greedy_decode(pred, valid) if task.kind == "ctc" else pred)
    for row, i in enumerate(index):
      if i >= 0:
        predictions[int(i)] = decoded[row]
  out = score(task, vocab, stream.targets, predictions)
  out["loss"] = float(np.mean(losses))
  return out


@functools.lru_cache(maxsize=8)
def _trainer(probe, lr, clip_norm, weight_decay):
  """One ProbeTrainer (and its compiled steps) per probe setting, reused by repeated evals."""
  return probes.ProbeTrainer(probe, lr=lr, clip_norm=clip_norm, weight_decay=weight_decay)


def run(config, workdir, *, upstream=None, source_fn=None, plot=True):
  """Trains and scores one probe; writes results.json / results.md / layer_weights.png.

  Args:
    config: a probe config (configs/probes/*.py): task, upstream, data, splits, probe, optim.
    workdir: the output directory.
    upstream: an `upstreams.Upstream` to use instead of loading `config.upstream` (the
      pretraining evals hook passes the live model).
    source_fn: `split name -> Source` instead of opening config.data (tests).
    plot: write layer_weights.png.

  Returns:
    The results dict (also in results.json).
  """
  start = time.perf_counter()
  task = tasks.get(config.task)
  if upstream is None:
    upstream = upstreams.load(config.upstream, arch=config.upstream_arch, seed=config.seed)
  data_cfg = config.data.copy_and_resolve_references()
  with data_cfg.unlocked():
    data_cfg.normalize = upstream.normalize  # Waveforms as the upstream was pretrained on.
  splits = open_splits(config, source_fn=source_fn)
  tokens = {k: tasks.read_tokens(task, src) for k, src in splits.items()}
  vocab = tasks.build_vocab(task, tokens["train"])
  targets = {k: tasks.make_targets(task, tokens[k], vocab, split=k) for k in splits}
  label_len = max(8, -(-max(t.max_length() for t in targets.values()) // 8) * 8)
  pool = task.kind == "utterance" and not config.probe.layer_norm
  streams = {k: FeatureStream(k, splits[k], targets[k], upstream, data_cfg, task,
                              label_len=label_len, pool=pool, cache=config.cache_features,
                              seed=config.seed) for k in splits}

  probe = probes.Probe(kind=task.kind, num_outputs=len(vocab), **config.probe)
  o = config.optim
  trainer = _trainer(probe, o.lr, o.clip_norm, o.weight_decay)
  total, every = config.total_steps, config.eval_every_steps
  if total <= 0 or every <= 0:
    raise ValueError(f"total_steps={total} and eval_every_steps={every} must be > 0.")
  train = streams["train"].endless()
  inputs, _ = next(train)
  state = trainer.init(jax.random.PRNGKey(config.seed), inputs)
  metric = task.metrics[0]
  sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
  best, curve, dev_curve = None, [], []
  for step in range(1, total + 1):
    if step > 1:
      inputs, _ = next(train)
    state, loss = trainer.step(state, inputs)
    if step % config.log_every_steps == 0 or step == 1:
      curve.append((step, float(loss)))
    if step % every == 0 or step == total:
      dev = evaluate_split(trainer, state["params"], streams["dev"], task, vocab)
      dev_curve.append((step, dev))
      logging.info("probe %s step %d: train loss %.4f, dev %s", task.name, step, float(loss), dev)
      if best is None or sign * dev[metric] < sign * best[1][metric]:
        best = (step, dev, jax.device_get(state["params"]))
  best_step, dev, params = best
  test = evaluate_split(trainer, params, streams["test"], task, vocab)
  results = dict(
      task=task.name, upstream=upstream.name, dataset=config.data.name,
      upstream_layers=upstream.num_hidden, upstream_dim=upstream.dim,
      frame_rate=upstream.frame_rate, num_outputs=len(vocab),
      chance_accuracy=(1.0 / len(vocab)) if task.kind == "utterance" else None,
      utterances={k: len(v) for k, v in splits.items()}, best_step=best_step,
      dev=dev, test=test, layer_weights=probes.layer_weights(params).tolist(),
      train_curve=curve, dev_curve=dev_curve, seconds=time.perf_counter() - start,
      config=json.loads(config.to_json_best_effort()))
  write_results(results, workdir, plot=plot)
  return results


def write_results(results, workdir, *, plot=True):
  """results.json, results.md and (with `plot`) layer_weights.png in `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1, ensure_ascii=False)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown_table([results]))
  if plot:
    plot_layer_weights(results["layer_weights"],
                       os.path.join(workdir, "layer_weights.png"),
                       title=f"{results['task']} probe on {os.path.basename(results['upstream'])}")


def _percent(name, value):
  return f"{100 * value:.2f}" if name in LOWER_IS_BETTER + ("accuracy",) else f"{value:.4g}"


def markdown_table(rows):
  """A markdown table of probe results (one row per results dict; metrics in %)."""
  names = sorted({m for r in rows for m in r["test"] if m != "loss"})
  head = ["task", "upstream"] + [f"dev {m} %" for m in names] + [f"test {m} %" for m in names]
  head += ["best step", "train / dev / test utts", "seconds"]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    u = r["utterances"]
    cells = [r["task"], os.path.basename(os.path.normpath(r["upstream"]))]
    cells += [_percent(m, r["dev"][m]) if m in r["dev"] else "" for m in names]
    cells += [_percent(m, r["test"][m]) if m in r["test"] else "" for m in names]
    cells += [str(r["best_step"]), f"{u['train']} / {u['dev']} / {u['test']}",
              f"{r['seconds']:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot_layer_weights(weights, path, *, title=""):
  """Bar chart of the softmax layer weights (index 0 = the Transformer's input)."""
  fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * len(weights) + 1.5), 2.8))
  ax.bar(range(len(weights)), weights, color="tab:blue")
  ax.axhline(1.0 / len(weights), color="gray", ls="--", lw=1, label="uniform")
  ax.set_xlabel("hidden state (0 = encoder input)")
  ax.set_ylabel("softmax weight")
  ax.set_xticks(range(len(weights)))
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def evals_due(config, step):
  """Names of the pretraining config's `evals` that run at `step` (every_steps > 0 divides it)."""
  evals = config.get("evals", None) or {}
  return [name for name, e in evals.items() if e.every_steps > 0 and step % e.every_steps == 0]


class EvalsError(validate.ConfigError):
  """An `evals` entry cannot run on its data; the message names the entry and the fix."""


def check_pretraining_evals(config, source=None):
  """Opens the splits of every `evals` entry due in this run and reads a few labels, before
  training starts.

  A missing split, a dataset without the task's labels (e.g. phones on LibriSpeech or a
  local_audio corpus) would otherwise fail at the first eval step, hours in.

  Raises:
    EvalsError: one line naming `evals.<name>` and how to fix or drop it.
  """
  for name, e in (config.get("evals", None) or {}).items():
    if not 0 < e.every_steps <= config.total_steps:  # Never due in this run.
      continue
    c = _eval_config(config, e, 0)
    try:
      splits = open_splits(c, source_fn=(lambda _: source) if source is not None else None)
      task = tasks.get(c.task)
      for split_name, split in splits.items():
        if not len(split):
          raise ValueError(f"its {split_name} split is empty")
        head = tasks.SubsetSource(split, np.arange(min(len(split), 64)), name=split_name)
        tasks.read_tokens(task, head)
    except (FileNotFoundError, ValueError, KeyError) as err:
      text = " ".join(ln.strip() for ln in str(err).strip().splitlines()) or repr(err)
      raise EvalsError(f"evals.{name} ({c.task} on {c.data.name}): {text} Fix its data or "
                       f"drop it with --config.evals.{name}.every_steps=0.") from None


def _eval_config(pretrain_config, e, step):
  """A probe config from one `evals` entry: data name / dir default to the pretraining data's."""
  c = e.copy_and_resolve_references()
  with c.unlocked():
    c.data.name = c.data.name or pretrain_config.data.name
    c.data.data_dir = c.data.data_dir or pretrain_config.data.data_dir
    c.upstream = f"step_{step}"
  return c


def run_pretraining_evals(config, params, *, step, workdir, writer=None, source=None):
  """The pretraining `evals` hook: probes the live model, logs quality against compute.

  Every due entry of `config.evals` (a probe config with `every_steps`) trains and scores its
  probe on `params` as a frozen upstream. Each call appends {"step", "cumulative_flops",
  <name>: {"dev", "test", "layer_weights"}} to workdir/evals.jsonl and redraws
  workdir/evals.png (test metric against cumulative training FLOPs); the probe's own files go
  to workdir/evals/<name>/step_<step>/. Single-process runs only (others log a warning).

  Args:
    config: the pretraining config.
    params: the train state's params (sharded arrays are fine).
    step: the current step.
    workdir: the pretraining run directory.
    writer: the trainer's MetricsWriter: gets "eval/<name>/<split>_<metric>" scalars, and the
      probe's time is left out of its throughput window. Its `flops_per_step` (XLA's count of one
      train step on all devices) times `step` is the cumulative compute.
    source: a Source to use for every split instead of opening the data (the trainer's, in
      tests with synthetic data).

  Returns:
    The scalars written.
  """
  names = evals_due(config, step)
  if not names:
    return {}
  if jax.process_count() > 1:
    logging.warning("evals run in single-process jobs only; skipping %s at step %d.", names,
                    step)
    return {}
  start = time.perf_counter()
  upstream = upstreams.from_params(config, params, name=f"step_{step}")
  flops = float(getattr(writer, "flops_per_step", 0.0) or 0.0) * step
  record, scalars = {"step": int(step), "cumulative_flops": flops}, {}
  for name in names:
    out = os.path.join(workdir, "evals", name, f"step_{step:07d}")
    results = run(_eval_config(config, config.evals[name], step), out, upstream=upstream,
                  source_fn=(lambda _: source) if source is not None else None)
    record[name] = {k: results[k] for k in ("dev", "test", "layer_weights")}
    scalars.update({f"eval/{name}/{split}_{m}": v for split in ("dev", "test")
                    for m, v in results[split].items()})
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "evals.jsonl"), "a") as f:
      f.write(json.dumps(record) + "\n")
    plot_evals(workdir)
  for name in names:
    cli.say(f"step {step}: eval {name} " + ", ".join(
        f"{split} {_metric_text(record[name][split])}" for split in ("dev", "test")))
  if writer is not None:
    writer.exclude_time(time.perf_counter() - start)
    writer.write(step, scalars)
  return scalars


def _metric_text(metrics):
  """"PER 70.7%" / "accuracy 54.0%" / "WER 12.3%" from a split's metrics (loss left out)."""
  return ", ".join(f"{k.upper() if k in ('per', 'wer', 'cer') else k} {100 * v:.1f}%"
                   for k, v in metrics.items() if k != "loss")


def plot_evals(workdir):
  """workdir/evals.png: every eval's test metric against cumulative training compute."""
  with open(os.path.join(workdir, "evals.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = list({r["step"]: r for r in rows}.values())  # A resumed run may repeat a step.
  series = {}
  for r in rows:
    x = r["cumulative_flops"] / 1e15 if r["cumulative_flops"] else r["step"]
    for name, v in r.items():
      if isinstance(v, dict):
        for m, value in v["test"].items():
          if m != "loss":
            series.setdefault(f"{name} test {m}", []).append((x, 100 * value))
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for label, pts in series.items():
    ax.plot(*zip(*sorted(pts)), marker="o", label=label)
  ax.set_xlabel("cumulative training PFLOPs" if rows[0]["cumulative_flops"] else "step")
  ax.set_ylabel("%")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, "evals.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
