"""Probes during pretraining (a config's `evals`): quality against cumulative compute.

Each `evals` entry is a probe config with `every_steps`; `run_pretraining_evals` trains and scores
it on the live params (as a frozen upstream) and appends to workdir/evals.jsonl, redrawing
workdir/evals.png. `check_pretraining_evals` opens every entry's data before training starts.
"""
import json
import logging
import os
import time

import jax
import matplotlib
import numpy as np

from jaxssl import cli
from jaxssl import validate
from jaxssl.evaluation import probing
from jaxssl.evaluation import results as results_lib
from jaxssl.evaluation import tasks
from jaxssl.evaluation import upstreams

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


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
      splits = results_lib.open_splits(
          c, source_fn=(lambda _: source) if source is not None else None)
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
      probe's time is left out of its throughput window. Its `flops_total` (XLA's count of each
      train step's program on all devices, summed) is the cumulative compute.
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
  flops = float(getattr(writer, "flops_total", 0.0) or 0.0)
  record, scalars = {"step": int(step), "cumulative_flops": flops}, {}
  for name in names:
    out = os.path.join(workdir, "evals", name, f"step_{step:07d}")
    results = probing.run(_eval_config(config, config.evals[name], step), out,
                          upstream=upstream, checkpoints=False,
                          source_fn=(lambda _: source) if source is not None else None)
    record[name] = {k: results[k] for k in ("dev", "test", "layer_weights")}
    scalars.update({f"eval/{name}/{split}_{m}": v for split in ("dev", "test")
                    for m, v in results_lib.flat_metrics(results[split]).items()})
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
                   for k, v in metrics.items() if k != "loss" and not isinstance(v, dict))


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
          if m != "loss" and not isinstance(value, dict):
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
