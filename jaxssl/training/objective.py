"""What the training engine needs of an objective, with the default of every optional hook.

An objective is a model plus its loss. The engine (`engine.py`) calls, in this order:

  constants(mesh, rules)     frozen inputs of every step, e.g. a teacher's weights: (pytree,
                             NamedSharding tree); passed to each step, never donated or updated.
  init(rng, batch)           the boxed parameters (`nn.Partitioned`, logical axis names kept).
  init_state(params)         the objective's own state (EMA weights, codebook statistics...):
                             a pytree built from the boxed params, so it is sharded by the same
                             logical axes and checkpointed with them. Default: none ({}).
  initial_params(params, constants)
                             adjusts a fresh (not resumed) init, e.g. copies teacher layers.
  variant(step)              a hashable that picks the step's compiled program (a supernet's
                             subnet, fine-tuning's frozen-encoder phase); None: one program.
  specialize(variant)        the objective that step traces.
  prepare(constants, batch)  inside the compiled step, before the loss (e.g. teacher targets).
  loss(params, batch, rng, *, step, train, state)
                             (scalar loss, dict of scalar metrics); `state` is the objective's.
  update_state(state, params, step)
                             inside the compiled step, after the optimizer update.
  log_extras(step)           host scalars logged with the step (e.g. the subnet index).

Pretraining objectives (built from a config by `jaxssl.objectives`) may also override
  make_loader(config, source)  the training batches (default: `pipeline.make_train_loader`);
  dry_run_report()             figures `--dry_run` prints beside the compiled step's;
and give `represent(params, batch) -> (x, hidden states, frame valid)` for probes.

Only `init` and `loss` are required; subclass `Objective` for the defaults of the rest.
"""
import jax

from jaxssl.data import pipeline


class Objective:
  """Base class: the optional hooks' defaults (see the module docstring)."""
  has_constants = False  # True when `constants` loads something (e.g. a teacher).

  def init(self, rng, batch):
    raise NotImplementedError

  def loss(self, params, batch, rng, *, step, train=True, state=None):
    raise NotImplementedError

  def constants(self, mesh, rules):
    del mesh, rules
    return {}, {}

  def init_state(self, params):
    del params
    return {}

  def initial_params(self, params, constants):
    del constants
    return params

  def variant(self, step):
    del step
    return None

  def specialize(self, variant):
    del variant
    return self

  def prepare(self, constants, batch):
    del constants
    return batch

  def update_state(self, state, params, step):
    del params, step
    return state

  def log_extras(self, step):
    del step
    return {}

  def make_loader(self, config, *, source=None):
    """This host's rows of every global training batch (see `pipeline.make_train_loader`)."""
    return pipeline.make_train_loader(config.data, seed=config.seed,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count(), source=source)

  def dry_run_report(self):
    return {}
