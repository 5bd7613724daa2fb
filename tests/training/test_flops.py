"""FLOPs counting: closed forms of the traced count, and scanned layers counted in full."""
import jax
import numpy as np

from configs.wav2vec2 import demo
from jaxssl.training import flops
from jaxssl import pretrain


def _with(config, **fields):
  """A copy of a locked config with dotted fields replaced."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for path, value in fields.items():
      section, _, field = path.rpartition(".")
      (config[section] if section else config)[field] = value
  return config


def test_jaxpr_flops_closed_forms():
  def scanned(c, w):  # 5 steps of [4, 8] @ [8, 8].
    return jax.lax.scan(lambda c, _: (c @ w, None), c, None, length=5)[0]
  x, w = jax.ShapeDtypeStruct((4, 8), np.float32), jax.ShapeDtypeStruct((8, 8), np.float32)
  assert flops.jaxpr_flops(jax.make_jaxpr(scanned)(x, w)) == 5 * 2 * 4 * 8 * 8

  def conv(a, k, groups):  # [B, W, C] * [K, C / groups, O], stride 2.
    return jax.lax.conv_general_dilated(a, k, (2,), "VALID", feature_group_count=groups,
                                        dimension_numbers=("NWC", "WIO", "NWC"))
  a = jax.ShapeDtypeStruct((2, 101, 6), np.float32)
  for groups in (1, 3):
    k = jax.ShapeDtypeStruct((5, 6 // groups, 12), np.float32)
    out_elems = 2 * ((101 - 5) // 2 + 1) * 12
    assert flops.jaxpr_flops(jax.make_jaxpr(lambda a, k, g=groups: conv(a, k, g))(a, k)) == (
        2 * out_elems * 5 * (6 // groups))

  # Remat recomputes the forward matmul in the backward pass: one more [4, 8] @ [8, 8].
  def loss(w, c, remat):
    f = (lambda c: jax.numpy.tanh(c @ w)) if not remat else jax.checkpoint(
        lambda c: jax.numpy.tanh(c @ w))
    return f(c).sum()
  plain = flops.jaxpr_flops(jax.make_jaxpr(jax.grad(lambda w, c: loss(w, c, False)))(w, x))
  remat = flops.jaxpr_flops(jax.make_jaxpr(jax.grad(lambda w, c: loss(w, c, True)))(w, x))
  assert plain == 2 * 2 * 4 * 8 * 8 and remat == plain + 2 * 4 * 8 * 8


def test_step_flops_do_not_depend_on_scanning_layers():
  counts = []
  for scan in (False, True):
    step = pretrain.abstract_step(_with(demo.get_config(), **{"model.scan_layers": scan}))
    counts.append(flops.jaxpr_flops(step["step_fn"].trace(*step["args"]).jaxpr))
  assert counts[0] == counts[1] > 0


def test_program_flops_of_a_step_do_not_depend_on_scanning_layers():
  # XLA's cost analysis alone counts a scanned block once (LARGE came out below BASE).
  out = {}
  for scan in (False, True):
    step = pretrain.abstract_step(_with(demo.get_config(), **{"model.scan_layers": scan}))
    traced = step["step_fn"].trace(*step["args"])
    out[scan] = (flops.program_flops(traced), flops.xla_flops(traced.lower()))
  (plain, plain_xla), (scanned, scanned_xla) = out[False], out[True]
  assert plain == plain_xla  # Nothing to add back without loops.
  assert scanned_xla < 0.8 * plain_xla  # The undercount being corrected (3 layers -> 1).
  np.testing.assert_allclose(scanned, plain, rtol=0.03)
