"""The frozen teacher of a distillation run: any jaxssl or imported checkpoint.

`load_teacher` reads the checkpoint's config.json (which objective, which architecture) and its
weights straight into shards laid out by the same logical-axis rules as the student, optionally
cast to bfloat16 (weights and compute). `Teacher.targets` is the forward the distillation step
runs inside its compiled program: hidden states of the target layers, no dropout, no LayerDrop,
wrapped in `stop_gradient`. The teacher's params are a separate, non-donated argument of that
step, so they are read, never written.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc

from jaxssl import objectives
from jaxssl import pretrained
from jaxssl.data import batching
from jaxssl.models import variants
from jaxssl.training import checkpointing
from jaxssl.training import partitioning

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen upstream. `params` are global arrays laid out by `shardings`."""
  config: Any
  objective: Any
  params: Any
  shardings: Any
  layers: tuple

  @property
  def num_layers(self):
    return variants.get(self.config.model.variant).num_layers

  @property
  def dim(self):
    return variants.get(self.config.model.variant).embed_dim

  def targets(self, params, batch):
    """Hidden states of the target layers. batch audio/valid [B, S] -> float32 [B, N, T, D]."""
    _, hidden, _ = self.objective.represent(params, {"audio": batch["audio"],
                                                     "valid": batch["valid"]})
    out = jnp.stack([hidden[l] for l in self.layers], axis=1).astype(jnp.float32)
    return jax.lax.stop_gradient(out)


def _cast(x, dtype):
  return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x


def load_teacher(path, *, layers, mesh, rules=partitioning.LOGICAL_AXIS_RULES,
                 dtype="float32"):
  """Loads a frozen teacher into shards of `mesh`.

  Args:
    path: a jaxssl workdir, a ckpt/<step> directory or a `python -m jaxssl.convert` output.
    layers: teacher hidden-state indices to predict (1..L; 0 is the blocks' input).
    mesh: the student's mesh; the teacher's params are sharded by the same logical rules.
    rules: logical-to-mesh rules.
    dtype: "float32" or "bfloat16" (weights and compute).

  Returns:
    A `Teacher`.

  Raises:
    ValueError: unknown dtype, a target layer the teacher lacks, or encoder weights missing
      from the checkpoint.
  """
  config, objective, layers = _prepare(pretrained.load_config(path), layers, dtype, where=path)
  boxed = jax.eval_shape(objective.init, jax.random.PRNGKey(0), batching.dummy_batch())
  shardings = partitioning.state_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(boxed), shardings)
  params, report = checkpointing.load_params(path, abstract)
  encoder = "speech_encoder/" if "speech_encoder" in params else ""
  bad = [p for p in report["missing"] + report["shape_mismatch"] if p.startswith(encoder)]
  if bad or not report["taken"]:
    raise ValueError(f"distill.teacher={path!r}: the checkpoint does not match its config.json "
                     f"({len(bad)} encoder parameters missing or misshapen, e.g. {bad[:3]}).")
  # Pretraining heads a converted checkpoint lacks stay abstract; the teacher never uses them.
  params = _prune(params, lambda x: isinstance(x, jax.Array))
  shardings = _prune_like(shardings, params)
  return _finish(config, objective, params, shardings, layers, dtype)


def from_params(config, params, *, layers, mesh, rules=partitioning.LOGICAL_AXIS_RULES,
                dtype="float32"):
  """A `Teacher` from a pretraining config and its params in memory (tests, benchmarks)."""
  config, objective, layers = _prepare(mlc.ConfigDict(config.to_dict()), layers, dtype,
                                       where="<params>")
  boxed = jax.eval_shape(objective.init, jax.random.PRNGKey(0), batching.dummy_batch())
  shardings = _prune_like(partitioning.state_shardings(boxed, mesh, rules), params)
  params = jax.device_put(params, shardings)
  return _finish(config, objective, params, shardings, layers, dtype)


def _prepare(config, layers, dtype, *, where):
  if dtype not in DTYPES:
    raise ValueError(f"distill.teacher_dtype={dtype!r}; choose from {DTYPES}.")
  num_layers = variants.get(config.model.variant).num_layers
  layers = tuple(int(l) for l in layers)
  if not layers or min(layers) < 0 or max(layers) > num_layers:
    raise ValueError(f"distill.target_layers={layers}: the teacher at {where!r} has "
                     f"{num_layers} layers (hidden states 0..{num_layers}).")
  with config.unlocked():
    config.model.dtype = dtype
  return config, objectives.build(config), layers


def _finish(config, objective, params, shardings, layers, dtype):
  if dtype != "float32":
    params = jax.jit(lambda p: jax.tree.map(lambda x: _cast(x, jnp.dtype(dtype)), p),
                     out_shardings=shardings)(params)
  return Teacher(config=config, objective=objective, params=params, shardings=shardings,
                 layers=layers)


def _prune(tree, keep):
  if isinstance(tree, dict):
    out = {k: _prune(v, keep) for k, v in tree.items()}
    return {k: v for k, v in out.items() if v is not None and not (isinstance(v, dict) and not v)}
  return tree if keep(tree) else None


def _prune_like(tree, like):
  if isinstance(like, dict):
    return {k: _prune_like(tree[k], v) for k, v in like.items()}
  return tree
