"""Shared pieces of the PEFT tests: a tiny CTC objective, a batch, and a few train steps."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from configs.finetune import peft as peft_configs
from jaxssl import pretrained
from jaxssl.evaluation import finetune
from jaxssl.evaluation import finetune_objectives
from jaxssl.peft import objective as peft_objective
from jaxssl.training import optimizers

VOCAB = 5
SCHEDULE = mlc.ConfigDict(dict(name="constant", warmup_steps=0))


def base_objective(make=finetune_objectives.CTCObjective, num_outputs=VOCAB):
  """The CTC (or `make`'s) objective of the runlocal demo model, dropout-free (deterministic
  losses); returns it and the model config."""
  config = pretrained.load_config("configs/wav2vec2/demo.py:runlocal")
  off = {"feature_grad_mult": 0.0, "layerdrop_rate": 0.0, "dropout_rate": 0.0,
         "activation_dropout_rate": 0.0}
  model = finetune._model_config(config, off)  # pylint: disable=protected-access
  masking = mlc.ConfigDict(dict(prob=0.0, span=10, min_spans=2))
  return make(model, masking, num_outputs), model


def batch(num=2, samples=4800, seed=0):
  rng = np.random.default_rng(seed)
  return {"audio": jnp.asarray(rng.standard_normal((num, samples)), jnp.float32),
          "valid": jnp.ones((num, samples), bool),
          "labels": jnp.asarray(rng.integers(1, VOCAB, (num, 3)), jnp.int32),
          "label_valid": jnp.ones((num, 3), bool), "rows": jnp.ones(num)}


def peft_objective_for(method, total_steps=20, base=None, **overrides):
  """`method` wrapped around `base` (default: the CTC `base_objective()`)."""
  base, model = base or base_objective()
  cfg = peft_configs.section(method, total_steps=total_steps)
  with cfg.unlocked():
    cfg.update(overrides)
  return peft_objective.wrap(base, cfg, model)


def init(objective, seed=0):
  return nn.unbox(objective.init(jax.random.PRNGKey(seed), batch()))


def optimizer(objective, total_steps=20, lr=1e-2, trainable=peft_configs.PEFT_TRAINABLE):
  optim = mlc.ConfigDict(dict(name="adamw", lr=lr, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.0,
                              clip_norm=0.0, grad_accum_steps=1, trainable=trainable))
  tx, _ = optimizers.make_finetune_optimizer(optim, SCHEDULE, total_steps,
                                             heads=finetune_objectives.HEADS)
  if isinstance(objective, peft_objective.PeftObjective):
    tx = peft_objective.wrap_optimizer(tx, objective.cfg, total_steps)
  return tx


def train(objective, params, tx, steps, *, data=None):
  """`steps` jitted updates on one batch; returns (params, opt_state, last step's metrics)."""
  data = data or batch()

  @jax.jit
  def step(params, opt_state, i):
    (_, metrics), grads = jax.value_and_grad(
        lambda p: objective.loss(p, data, jax.random.PRNGKey(i), step=i), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  opt_state, metrics = tx.init(params), {}
  for i in range(steps):
    params, opt_state, metrics = step(params, opt_state, i)
  return params, opt_state, metrics

