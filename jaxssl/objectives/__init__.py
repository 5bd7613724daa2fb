"""Objectives: a model plus its loss. A config's `objective.name` is a key here."""
from jaxssl.objectives import hubert
from jaxssl.objectives import melhubert
from jaxssl.objectives import wav2vec2
from jaxssl.distill import objective as distill  # pylint: disable=g-bad-import-order

OBJECTIVES = {"wav2vec2": wav2vec2.Wav2Vec2Objective, "hubert": hubert.HubertObjective,
              "melhubert": melhubert.MelHubertObjective, "distill": distill.DistillObjective}


def get(name):
  if name not in OBJECTIVES:
    raise ValueError(f"Unknown objective {name!r}; choose from {sorted(OBJECTIVES)}.")
  return OBJECTIVES[name]


def build(config):
  """The objective named by `config.objective.name`, holding the whole config."""
  return get(config.objective.name)(config)

