"""A parameter-efficient fine-tuning objective around the CTC or utterance objective.

`wrap(base, peft_cfg)` keeps the base objective's loss and predict and changes what trains:
- "lora" / "adalora": params gain a "peft" entry (the adapters, `lora.init` / `adalora.init`),
  the loss runs the base model with the adapters intercepted into its Dense layers, the whole
  pretrained encoder behind `stop_gradient` (no weight gradient is computed for it), plus
  AdaLoRA's orthogonality term; `predict` and `export` use the merged weights, so the exported
  checkpoint is a plain model (loadable as an upstream) with no adapter branch.
- "ladder": the base model is swapped for `ladder.LadderModel` (side network under "peft"; the
  base's `head` name and `pooled` flag carry over, so it serves CTC and utterance tasks).
Only "peft/..." and the head ("ctc_proj/..." or "classifier/...") may train (`optim.trainable`);
frozen parameters get `optax.set_to_zero()` through the optimizer's multi_transform and so hold
no optimizer state.

The `peft` config section (configs/finetune/peft.py) holds every method's fields; each method
reads its own. `REGISTRY` maps `peft.method` to a `Method`; a fork adds one with
`peft_objective.register("name", Method(...))`.
"""
import dataclasses
import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import registry
from jaxssl.models import variants
from jaxssl.peft import adalora
from jaxssl.peft import ladder
from jaxssl.peft import lora
from jaxssl.training import optimizers
from jaxssl.training import objective as objective_lib

FROZEN = "speech_encoder"  # The pretrained encoder: frozen by every PEFT method.


@dataclasses.dataclass(frozen=True)
class Adapters:
  """Low-rank adapters added to the encoder's Dense kernels (LoRA, AdaLoRA).

  Attributes:
    init: (rng, params, targets=regex, rank) -> the adapters pytree.
    deltas: (adapters, scale, dropout_rate, rng) -> `lora.adapt`'s per-layer delta functions.
    delta_weight: one adapter -> its dense weight update (for merging).
    rank_field: the `peft` field holding the initial rank ("rank" or "init_r").
  """
  init: Callable
  deltas: Callable
  delta_weight: Callable
  rank_field: str = "rank"


@dataclasses.dataclass(frozen=True)
class Method:
  """What one PEFT method changes. The defaults change nothing (full fine-tuning).

  Attributes:
    freezes_encoder: whether the pretrained encoder is frozen (every method but "full").
    adapters: low-rank adapters intercepted into the encoder's Dense layers, or None.
    regularizer: (adapters, peft section) -> (loss term, metrics), or None.
    model: (peft section, encoder `model` section) -> the model constructor replacing the
      base's `make_model` (the ladder's, with its side network), or None.
    optimizer: (tx, peft section, total_steps) -> tx (AdaLoRA's rank allocator), or None.
  """
  freezes_encoder: bool = True
  adapters: Adapters | None = None
  regularizer: Callable | None = None
  model: Callable | None = None
  optimizer: Callable | None = None


def _orthogonality(adapters, cfg):
  if cfg.orth_reg_weight <= 0:
    return 0.0, {}
  reg = adalora.orth_regularizer(adapters)
  return cfg.orth_reg_weight * reg, {"orth_reg": reg}


def _ladder_model(cfg, model_config):
  v = variants.get(model_config.variant)
  heads = cfg.side_heads or (v.num_heads if (v.embed_dim // cfg.reduction) % v.num_heads == 0
                             else 1)
  side = functools.partial(
      ladder.LadderSide, reduction=cfg.reduction, num_heads=heads,
      layer_norm_first=model_config.layer_norm_first, dropout_rate=cfg.dropout,
      activation_dropout_rate=cfg.dropout, dtype=jnp.dtype(model_config.dtype))
  return functools.partial(ladder.LadderModel, side=side)


def _rank_allocator(tx, c, total_steps):
  return adalora.allocator(tx, init_r=c.init_r, target_r=c.target_r, total_step=total_steps,
                           tinit=c.tinit, tfinal=c.tfinal, delta_t=c.delta_t, beta1=c.beta1,
                           beta2=c.beta2)


REGISTRY = registry.Registry("PEFT method", "peft.method")
register = REGISTRY.register
register("full", Method(freezes_encoder=False))
register("lora", Method(adapters=Adapters(lora.init, lora.lora_deltas, lora.delta_weight)))
register("adalora", Method(
    adapters=Adapters(adalora.init, adalora.deltas, adalora.delta_weight, rank_field="init_r"),
    regularizer=_orthogonality, optimizer=_rank_allocator))
register("ladder", Method(model=_ladder_model))


def check(peft_cfg, trainable: str):
  """Validates the `peft` section against `optim.trainable`; returns the method name."""
  method = peft_cfg.method
  if REGISTRY.get(method).freezes_encoder:
    bad = [p for p in (f"{FROZEN}/encoder/layer_00/self_attn/query/dense/kernel",
                       f"{FROZEN}/encoder/pos_conv/bias")
           if re.fullmatch(trainable, p)]
    if bad or not re.fullmatch(trainable, "peft/x"):
      raise ValueError(f"optim.trainable={trainable!r} with peft.method={method!r}: the encoder "
                       "is frozen, so the regex must match 'peft/...' (and the head), not "
                       f"'{FROZEN}/...' (e.g. r'ctc_proj/.*|peft/.*' or "
                       "r'classifier/.*|peft/.*').")
  return method


@dataclasses.dataclass(frozen=True)
class PeftObjective(objective_lib.Objective):
  """`init` / `loss` / `predict` of `base` with a PEFT method (see the module docstring).

  Attributes:
    base: the wrapped objective (e.g. `evaluation.finetune_objectives.CTCObjective`); its
      `make_model` is replaced for the ladder.
    cfg: the `peft` config section.
    freeze_encoder: forwarded to `base` (the recipe's head-only first updates).
  """
  base: Any
  cfg: Any
  freeze_encoder: bool = False

  @property
  def method(self) -> Method:
    return REGISTRY.get(self.cfg.method)

  @property
  def _base(self):
    return dataclasses.replace(self.base, freeze_encoder=self.freeze_encoder)

  @property
  def _rank(self) -> int:
    return self.cfg[self.method.adapters.rank_field]

  @property
  def scale(self) -> float:
    """alpha / r (LoRA); alpha / init_r (AdaLoRA, peft's scaling / ranknum)."""
    return float(self.cfg.alpha) / self._rank

  def deltas(self, adapters, rng):
    """`lora.adapt`'s delta functions of `adapters` (dropout on the adapter input with `rng`)."""
    return self.method.adapters.deltas(adapters, scale=self.scale,
                                       dropout_rate=self.cfg.dropout, rng=rng)

  def variant(self, step):
    return self.base.variant(step)  # The recipe's frozen-encoder phase.

  def specialize(self, variant):
    return dataclasses.replace(self, freeze_encoder=bool(variant))

  def init(self, rng, batch):
    k_base, k_peft = jax.random.split(rng)
    params = self._base.init(k_base, batch)
    if self.method.adapters is not None:
      params = dict(params, peft=self.method.adapters.init(
          k_peft, params, targets=self.cfg.targets, rank=self._rank))
    return params

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    params = dict(params)
    # No weight gradient for the frozen encoder: only activations flow back (LoRA) or nothing
    # does (ladder, whose model detaches the hidden states itself).
    params[FROZEN] = jax.lax.stop_gradient(params[FROZEN])
    if self.method.adapters is None:  # The side network (ladder) lives in the model itself.
      return self._base.loss(params, batch, rng, step=step, train=train)
    adapters = params.pop("peft")
    k_drop = jax.random.fold_in(rng, 0x1a) if train else None
    with lora.adapt(self.deltas(adapters, k_drop)):
      loss, metrics = self._base.loss(params, batch, rng, step=step, train=train)
    metrics = dict(metrics)
    if self.method.regularizer is not None:
      term, reg_metrics = self.method.regularizer(adapters, self.cfg)
      loss = loss + term
      metrics.update(reg_metrics)
    return loss, metrics

  def export(self, params):
    """Inference params: adapters merged into the kernels (LoRA / AdaLoRA), else unchanged."""
    if self.method.adapters is None:
      return params
    params = dict(params)
    adapters = params.pop("peft")
    return lora.merge(params, adapters, scale=self.scale,
                      delta_fn=self.method.adapters.delta_weight)

  def predict(self, params, batch):
    return self._base.predict(self.export(params), batch)


def wrap(base, peft_cfg, model_config):
  """`base` as a PEFT objective, or `base` itself for peft.method == "full".

  Args:
    base: an objective with fields `freeze_encoder` and `make_model` and the class attributes
      `head` / `pooled` (evaluation.finetune_objectives.CTCObjective, UtteranceObjective).
    peft_cfg: the `peft` section.
    model_config: the encoder's `model` section (width, heads, pre/post-LN for the ladder).
  """
  method = REGISTRY.get(peft_cfg.method)
  if not method.freezes_encoder:
    return base
  if method.adapters is not None and model_config.get("scan_layers", False):
    raise ValueError(f"peft.method={peft_cfg.method!r} needs model.scan_layers=False (adapters "
                     "are applied layer by layer).")
  if method.model is not None:
    base = dataclasses.replace(base, make_model=method.model(peft_cfg, model_config))
  return PeftObjective(base, peft_cfg)


def wrap_optimizer(tx, peft_cfg, total_steps):
  """The method's optimizer wrapper around `tx` (AdaLoRA's rank allocator); else `tx`."""
  method = REGISTRY.get(peft_cfg.method)
  return tx if method.optimizer is None else method.optimizer(tx, peft_cfg, total_steps)


def _bytes(tree) -> int:
  return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(nn.unbox(tree)) if hasattr(x, "shape")))


def report(params, opt_state, trainable: str) -> dict:
  """Parameter and optimizer-state sizes of a (possibly abstract) train state.

  Returns:
    dict: total_params, trainable_params, trainable_fraction, opt_state_bytes, param_bytes.
  """
  labels = optimizers.trainable_labels(trainable)(params)
  sizes = jax.tree.map(lambda x: int(np.prod(x.shape)), nn.unbox(params))
  total = sum(jax.tree.leaves(sizes))
  train = sum(s for s, lab in zip(jax.tree.leaves(sizes), jax.tree.leaves(labels))
              if lab == "train")
  return dict(total_params=int(total), trainable_params=int(train),
              trainable_fraction=train / max(total, 1), opt_state_bytes=_bytes(opt_state),
              param_bytes=_bytes(params))


def final_ranks(opt_state):
  """AdaLoRA's per-matrix ranks from the optimizer state (None for the other methods)."""
  if isinstance(opt_state, adalora.AllocatorState):
    return adalora.ranks(opt_state)
  return None
