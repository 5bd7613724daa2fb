"""Building blocks with logical sharding axes: Dense, LayerNorm, FeedForward, GradMultiply.

Every parameter is created with `nn.with_logical_partitioning`, so the mesh rules in
training/partitioning.py decide how it is sharded (MaxText / Flax lm1b style).
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import constants

# fairseq's init_bert_params: N(0, 0.02) weights, zero biases, for every Transformer linear layer.
bert_init = nn.initializers.normal(stddev=0.02)
# PyTorch nn.Linear's default (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class Dense(nn.Module):
  """A Dense layer whose kernel and bias carry logical axis names. [..., Din] -> [..., features]."""
  features: int
  axes: Sequence[str | None] = ("embed", "mlp")
  use_bias: bool = True
  kernel_init: Callable[..., Any] = bert_init
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(
        self.features, use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(self.kernel_init, tuple(self.axes)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (self.axes[-1],)),
        name="dense")(x)


def layer_norm(name, dtype=jnp.float32, axis_name="norm", epsilon=1e-5):
  """LayerNorm (eps 1e-5 as in PyTorch) with logically named, replicated scale and bias."""
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_name,)))


def gelu(x):
  # fairseq and transformers use the exact (erf) GELU; flax's default is the tanh approximation.
  return nn.gelu(x, approximate=False)


class FeedForward(nn.Module):
  """Position-wise MLP: fc1 -> GELU -> dropout -> fc2. [B, T, D] -> [B, T, D]."""
  mlp_dim: int
  activation_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    h = Dense(self.mlp_dim, axes=("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
    h = nn.with_logical_constraint(gelu(h), ("act_batch", "act_time", "act_mlp"))
    h = nn.Dropout(self.activation_dropout_rate)(h, deterministic=not train)
    return Dense(x.shape[-1], axes=("mlp", "embed"), dtype=self.dtype, name="fc2")(h)


def grad_multiply(x, scale: float):
  """Identity forward, gradient scaled by `scale` (fairseq GradMultiply on the CNN encoder)."""
  if scale == 1.0:
    return x
  if scale == 0.0:
    return jax.lax.stop_gradient(x)
  return _scaled_grad(x, float(scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scaled_grad(x, scale):
  del scale
  return x


def _scaled_grad_fwd(x, scale):
  del scale
  return x, None


def _scaled_grad_bwd(scale, _, g):
  return (g * scale,)


_scaled_grad.defvjp(_scaled_grad_fwd, _scaled_grad_bwd)


def cosine(a, b):
  """cos(a, b) over the last axis (broadcasting), each norm clamped at 1e-8 as
  torch.nn.functional.cosine_similarity. [..., D], [..., D] -> [...] float."""
  an = jnp.maximum(jnp.linalg.norm(a, axis=-1), constants.COSINE_EPS)
  bn = jnp.maximum(jnp.linalg.norm(b, axis=-1), constants.COSINE_EPS)
  return jnp.sum(a * b, -1) / (an * bn)
