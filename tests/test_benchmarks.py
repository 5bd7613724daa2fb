"""Benchmarks: the speed changes keep numerics, and the scripts' core functions run at tiny sizes.

Model-code optimisations recorded in experiments/benchmarks/NOTES.md are checked here against the
XLA reference they replace (values and gradients). The benchmark scripts' functions are run on
tiny configs and their outputs checked for structure and sanity; timings are never asserted.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.models import encoder


@pytest.mark.parametrize("batch,time,dim,kernel,groups", [
    (2, 37, 32, 8, 4), (3, 20, 24, 7, 3), (1, 50, 16, 16, 16), (2, 9, 12, 16, 2)])
def test_grouped_conv_gradients_match_xla(batch, time, dim, kernel, groups):
  """The positional conv's custom kernel gradient equals autodiff of lax's grouped conv."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, time, dim)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, dim // groups, dim)), jnp.float32)
  t_out = time + 2 * (kernel // 2) - kernel + 1
  cotangent = jnp.asarray(rng.standard_normal((batch, t_out, dim)), jnp.float32)

  def reference(x, w):
    pad = kernel // 2
    y = jax.lax.conv_general_dilated(x, w, (1,), [(pad, pad)], feature_group_count=groups,
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    return jnp.sum(y * cotangent)

  def ours(x, w):
    return jnp.sum(encoder.grouped_conv1d(x, w, groups) * cotangent)

  np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-6)
  for got, want in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(reference, (0, 1))(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
