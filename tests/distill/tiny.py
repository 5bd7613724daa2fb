"""Shared pieces of the distillation tests: a tiny HuBERT teacher checkpoint and student configs."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs.distill import demo
from configs.distill import lighthubert
from configs.hubert import demo as hubert_demo
from jaxssl import objectives
from jaxssl.data import sources
from jaxssl.interop import native


def teacher_config():
  """configs/hubert/demo.py:runlocal: the "tiny" variant (2 pre-LN layers, 32-d, 2 heads)."""
  return hubert_demo.get_config("runlocal")


def batch(size=2, samples=8_000, seed=0):
  """Random audio; odd rows end 1,500 samples early (padding). Numpy, so no eager jax ops."""
  lengths = np.array([samples - 1_500 * (i % 2) for i in range(size)])
  valid = np.arange(samples)[None] < lengths[:, None]
  audio = np.random.default_rng(seed).normal(size=(size, samples)).astype(np.float32) * valid
  return {"audio": jnp.asarray(audio), "valid": jnp.asarray(valid)}


@functools.lru_cache(maxsize=None)
def _teacher_params(seed):
  return nn.unbox(jax.jit(objectives.build(teacher_config()).init)(jax.random.PRNGKey(seed),
                                                                    batch()))


def write_teacher(path, seed=1):
  """A randomly initialised tiny HuBERT saved as a jaxssl checkpoint; returns (config, params)."""
  config, params = teacher_config(), _teacher_params(seed)
  native.save(path, config, params)
  return config, params


@functools.lru_cache(maxsize=None)
def supernet_params(seed=0):
  """Random params of the tiny supernet (`supernet_config`), initialised once per session."""
  from jaxssl.distill import lighthubert as lighthubert_lib  # pylint: disable=g-import-not-at-top
  obj = lighthubert_lib.LightHubertObjective(supernet_config("unused"))
  return nn.unbox(jax.jit(obj.init)(jax.random.PRNGKey(seed), batch()))


def student_config(teacher_path, *, layers=1, steps=4):
  c = demo.get_config(f"runlocal,layers={layers},teacher={teacher_path}")
  c.total_steps = steps
  c.ckpt.every_steps = steps
  return c


def supernet_config(teacher_path, *, stage=2, stage1="", steps=4):
  """The "tiny" space: a supernet of the tiny teacher's shape (32-d, 2 layers of 2 16-d heads)."""
  extra = f",stage1={stage1}" if stage1 else ""
  c = lighthubert.get_config(f"space=demo,runlocal,stage={stage},teacher={teacher_path}{extra}")
  c.total_steps = steps
  c.ckpt.every_steps = steps
  return c


def source():
  return sources.SyntheticSource(16, seed=0, min_samples=8_000, max_samples=12_000)
