"""Objectives: a model plus its loss. A config's `objective.name` is a key of `REGISTRY`.

Built in: wav2vec2, hubert, melhubert, best_rq, data2vec2 (here) and distill (registered by
`jaxssl.distill`).
A new objective subclasses `jaxssl.training.objective.Objective` and registers itself:

  objectives.register("my_objective", MyObjective)  # MyObjective(config) -> objective
"""
from jaxssl import registry
from jaxssl.objectives import best_rq
from jaxssl.objectives import data2vec2
from jaxssl.objectives import hubert
from jaxssl.objectives import melhubert
from jaxssl.objectives import wav2vec2
from jaxssl.training import objective as objective_lib

REGISTRY = registry.Registry("objective", "objective.name")


def register(name, cls=None, *, replace=False):
  """Registers `cls(config) -> Objective` under `name` (a decorator without `cls`)."""
  if cls is None:
    return lambda c: register(name, c, replace=replace)
  if not (isinstance(cls, type) and issubclass(cls, objective_lib.Objective)):
    raise TypeError(f"objective {name!r}: {cls!r} must subclass "
                    "jaxssl.training.objective.Objective.")
  return REGISTRY.register(name, cls, replace=replace)


def get(name):
  return REGISTRY.get(name)


def build(config):
  """The objective named by `config.objective.name`, holding the whole config."""
  return get(config.objective.name)(config)


register("wav2vec2", wav2vec2.Wav2Vec2Objective)
register("hubert", hubert.HubertObjective)
register("melhubert", melhubert.MelHubertObjective)
register("best_rq", best_rq.BestRqObjective)
register("data2vec2", data2vec2.Data2Vec2Objective)
