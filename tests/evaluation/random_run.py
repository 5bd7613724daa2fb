"""A "pretrained" run directory with random weights of the right shapes, for fine-tuning tests."""
import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from jaxssl import pretrained
from jaxssl.training import checkpointing


def params(config, *, seed, scale=0.1):
  """N(0, scale^2) parameters of `config`'s model (pretraining heads included)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                      pretrained.abstract_params(config))  # pylint: disable=protected-access


def save(config, run, *, seed=3, scale=0.1):
  """Writes `config` and a step-1 checkpoint of `params(config)` into `run`; returns them."""
  params_ = params(config, seed=seed, scale=scale)
  ckpt = checkpointing.Checkpointer(run, common.ckpt(every_steps=1, keep=2))
  ckpt.save(1, {"params": params_}, {"step": 1}, force=True)
  ckpt.wait()
  ckpt.close()
  checkpointing.save_config(config, run)
  return params_
