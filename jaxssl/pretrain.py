"""Pretraining jobs: a config's objective (any registered one, distillation included) trained by
the engine, with the config's probes (`evals`) run on the live model as it trains.

  result = pretrain.train_and_evaluate(config, workdir)   # what `python -m jaxssl.main` runs
  report = pretrain.dry_run(config)                       # `--dry_run`: sizes and FLOPs only

Both `check` the config first: join the job's processes (`config.distributed`), then validate it
against all their devices (`jaxssl.validate`), so the Python API rejects what the command line
rejects.
"""
from jaxssl import distill  # pylint: disable=unused-import (registers objective "distill")
from jaxssl import feature_stats
from jaxssl import objectives
from jaxssl import validate
from jaxssl.data import pipeline
from jaxssl.evaluation import pretraining_evals as evals_lib
from jaxssl.training import engine
from jaxssl.training import optimizers

NonFiniteError = engine.NonFiniteError


def check(config):
  """Joins the job's processes (config.distributed; a no-op when single or already joined),
  then validates `config` against the devices of all of them.

  Raises:
    validate.ConfigError: naming the inconsistent field(s).
  """
  engine.init_distributed(config)  # Before anything counts devices (it starts the backend).
  validate.validate(config)


class PretrainingEvals(engine.Callback):
  """The config's `evals` probes on the live params, at their `every_steps` (quality vs cost)."""
  name = "evals"

  def __init__(self, config, workdir, source=None):
    self.config, self.workdir, self.source = config, workdir, source

  def after_step(self, step, state, writer):  # Returns at once when no eval is due.
    evals_lib.run_pretraining_evals(self.config, state.params, step=step, workdir=self.workdir,
                                    writer=writer, source=self.source)


def with_data_facts(config, source=None):
  """`config` with what it takes from the training data filled in, so that config.json (and so
  every checkpoint) carries it: a frontend's training-set statistics (`feature_stats`) and the
  languages that per-language metrics are named after."""
  config = feature_stats.fill_config(config, source)
  obj = config.get("objective", {})
  if obj.get("per_language_metrics") and not obj.get("languages"):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.objective.languages = tuple(pipeline.training_languages(config.data, source))
  return config


def train_and_evaluate(config, workdir, *, objective=None, source=None):
  """Trains `config` in `workdir`, resuming from its newest intact checkpoint if there is one.

  Args:
    config: the experiment ConfigDict (sections: data, model, ..., optim, schedule, mesh, ckpt).
    workdir: run directory: ckpt/, metrics.jsonl, TensorBoard events, config.json.
    objective: default `jaxssl.objectives.build(config)`.
    source: optional data source for the loader and the evals (e.g. `sources.SyntheticSource`).

  Returns:
    The last logged metrics (host floats, "train/..." and "perf/...") plus "step",
    "preempted", "origin" and "num_compiled" (see `engine.train`).

  Raises:
    validate.ConfigError: the config is inconsistent, or an `evals` entry cannot run.
    engine.NonFiniteError, checkpointing.CheckpointError: see `engine.train`.
  """
  check(config)
  config = with_data_facts(config, source)
  objective = objectives.build(config) if objective is None else objective
  evals_lib.check_pretraining_evals(config, source=source)  # Fails now, not hours in.
  tx, lr_schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  result = engine.train(
      config, workdir, objective=objective, tx=tx, lr_schedule=lr_schedule,
      make_loader=lambda: objective.make_loader(config, source=source),
      callbacks=[PretrainingEvals(config, workdir, source)])
  result.pop("state")
  return result


def abstract_step(config, *, objective=None, devices=None):
  """`engine.abstract_step` for `config`'s objective and optimizer (see there); `jaxssl.aot`
  compiles it for a TPU topology."""
  config = feature_stats.fill_config(config, required=False)
  objective = objectives.build(config) if objective is None else objective
  tx, lr_schedule = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
  return engine.abstract_step(config, objective, tx=tx, lr_schedule=lr_schedule,
                              devices=devices)


def dry_run(config, *, objective=None):
  """The compiled step's size and cost from abstract shapes (`engine.dry_run`), plus the
  objective's own figures; trains nothing. Objectives with constants (a distillation teacher)
  report their sizes without compiling."""
  check(config)
  config = feature_stats.fill_config(config, required=False)
  objective = objectives.build(config) if objective is None else objective
  report = objective.dry_run_report()
  try:  # The data it would train on, when it is there.
    report["data"] = pipeline.describe(config.data)
  except (FileNotFoundError, ValueError) as e:
    report["data"] = f"not opened: {e}"
  if objective.has_constants:
    return report
  return engine.dry_run(abstract_step(config, objective=objective)) | report
