"""Best-dev selection for probes and fine-tuning: an engine callback and resumable epochs.

`DevSelection` scores dev every `every` steps (and at the last step), logs the scores, and keeps
the parameters of the best one in `workdir/best/<step>` (orbax); its record (best step, dev
curve) is part of the engine's checkpoint, so a resumed run selects exactly as an uninterrupted
one. `EpochLoader` turns "the batches of epoch e" into the endless, resumable loader the engine
takes (state: epoch and position in it).
"""
import os
import shutil

import jax
import orbax.checkpoint as ocp

from jaxssl.evaluation import results as results_lib
from jaxssl.training import engine


class DevSelection(engine.Callback):
  """Scores dev on the live params; keeps the best step's params on disk.

  Args:
    evaluate: `params -> dict of dev metrics`.
    workdir: the run directory (the params go to workdir/best/<step>).
    every: score every this many steps; also at `total`.
    after: no scoring before this step, except at `total` (fairseq validate_after_updates).
    total: the run's last step.
    metric: the metric that selects; `lower_is_better` says which way.
    name: the log prefix of the dev scalars ("eval/<name>/dev_<metric>").
  """
  name = "dev_selection"

  def __init__(self, evaluate, workdir, *, every, total, metric, lower_is_better, name="dev",
               after=0):
    self.evaluate, self.every, self.total, self.after = evaluate, every, total, after
    self.metric, self.sign, self.label = metric, 1.0 if lower_is_better else -1.0, name
    self.directory = os.path.join(os.path.abspath(workdir), "best")
    self.best_step, self.best_dev, self.curve = None, None, []

  def after_step(self, step, state, writer):
    if (step % self.every or step < self.after) and step != self.total:
      return
    dev = self.evaluate(state.params)
    self.curve.append((step, dev))
    writer.write(step, {f"eval/{self.label}/dev_{k}": v
                        for k, v in results_lib.flat_metrics(dev).items()})
    if self.best_dev is None or self.sign * dev[self.metric] < self.sign * self.best_dev[
        self.metric]:
      self._save(step, state.params)
      self.best_step, self.best_dev = step, dev

  def _save(self, step, params):
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(self.directory, str(step)), params, force=True)
    checkpointer.wait_until_finished()
    # Keep this and the previous best: a resume replays the steps since its checkpoint, which
    # saves any newer best again.
    for old in sorted((int(d) for d in os.listdir(self.directory) if d.isdigit()))[:-2]:
      shutil.rmtree(os.path.join(self.directory, str(old)), ignore_errors=True)

  def best_params(self, like):
    """The best step's params, restored with the shapes and shardings of `like`."""
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          like)
    return ocp.StandardCheckpointer().restore(
        os.path.join(self.directory, str(self.best_step)), target)

  def get_state(self):
    return dict(best_step=self.best_step, best_dev=self.best_dev,
                curve=[[s, d] for s, d in self.curve])

  def set_state(self, state):
    if state:
      self.best_step, self.best_dev = state["best_step"], state["best_dev"]
      self.curve = [(s, d) for s, d in state["curve"]]


class EpochLoader:
  """Endless epochs of `epoch_fn(epoch, skip)` (an iterator of batches from position `skip`),
  with the engine loader's get_state / set_state / close."""

  def __init__(self, epoch_fn):
    self.epoch_fn = epoch_fn
    self.epoch, self.position, self._it = 0, 0, None

  def __iter__(self):
    return self

  def __next__(self):
    while True:
      if self._it is None:
        self._it = iter(self.epoch_fn(self.epoch, self.position))
      try:
        item = next(self._it)
      except StopIteration:
        self.epoch, self.position, self._it = self.epoch + 1, 0, None
        continue
      self.position += 1
      return item

  def get_state(self):
    return {"epoch": self.epoch, "position": self.position}

  def set_state(self, state):
    self.close()
    self.epoch, self.position = int(state["epoch"]), int(state["position"])

  def close(self):
    if self._it is not None and hasattr(self._it, "close"):
      self._it.close()  # Closes the split's loader (a generator's finally).
    self._it = None
