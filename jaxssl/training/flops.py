"""FLOPs of a compiled program: XLA's cost analysis, with scanned loops counted in full.

XLA's cost analysis counts the body of a while loop once. A model with `model.scan_layers`
(LARGE, XLS-R, the pod recipes) runs its Transformer block as a scan, so the raw figure misses
all but one layer: the LARGE encoder came out at half of BASE's FLOPs per second of speech.
`program_flops` adds back what the loops leave out, from the traced program: the matmul and
convolution FLOPs of every scan body times (length - 1). Elementwise work inside a scanned body
is still counted once (a few percent of a Transformer block).

  traced = jax.jit(f).trace(*args)
  compiled = traced.lower().compile()
  flops = program_flops(traced, compiled, num_devices=mesh.size)  # All devices, one call.
"""
import math

import flax.linen as nn
import jax
from jax.extend import core as jax_core

from jaxssl import constants
from jaxssl.data import batching


def jaxpr_flops(closed_jaxpr, *, unroll_scans=True):
  """Matmul and convolution FLOPs of a traced program (2 per multiply-add), whole batch.

  Args:
    closed_jaxpr: e.g. `jax.make_jaxpr(f)(*args)` or `jax.jit(f).trace(*args).jaxpr`.
    unroll_scans: True counts a scan's body `length` times (what runs); False once (what
      XLA's cost analysis counts). Remat's recomputation counts as often as the jaxpr runs it.

  Returns:
    int FLOPs; elementwise ops are left out.
  """
  def eqn_flops(eqn):
    name, params = eqn.primitive.name, eqn.params
    if name == "dot_general":
      (contract, _), _ = params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    if name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      rhs_spec = params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
      per_output = rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])
      return 2 * math.prod(eqn.outvars[0].aval.shape) * per_output
    subs = [walk(sub) for sub in jax_core.jaxprs_in_params(params)]
    if name == "scan" and unroll_scans:
      return params["length"] * sum(subs)
    if name == "cond":
      return max(subs, default=0)
    return sum(subs)

  def walk(jaxpr):
    return sum(eqn_flops(eqn) for eqn in jaxpr.eqns)

  return walk(closed_jaxpr.jaxpr)


def xla_flops(compiled_or_lowered):
  """FLOPs of XLA's cost analysis (per device for a partitioned program; 0.0 if none).

  Older jax versions return a one-element list of dicts, newer ones a dict.
  """
  cost = compiled_or_lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost.get("flops", 0.0)) if cost else 0.0


def program_flops(traced, compiled_or_lowered=None, *, num_devices=1):
  """FLOPs of one call on all devices: XLA's count plus the scan iterations it leaves out.

  Args:
    traced: `jax.jit(f).trace(*args)` (abstract args are fine).
    compiled_or_lowered: its compiled (per-device cost) or lowered (whole program) form;
      default `traced.lower()`, which needs no compilation.
    num_devices: devices the compiled program is partitioned over (1 for a lowered one).
  """
  if compiled_or_lowered is None:
    compiled_or_lowered = traced.lower()
  missed = (jaxpr_flops(traced.jaxpr, unroll_scans=True) -
            jaxpr_flops(traced.jaxpr, unroll_scans=False))
  return xla_flops(compiled_or_lowered) * num_devices + missed


def macs_per_second(objective, seconds: float = 1.0):
  """Multiply-accumulates of the encoder's forward pass per second of speech.

  XLA's cost analysis of the objective's `represent` on one utterance of `seconds` (abstract
  shapes only: nothing is allocated), halved (one MAC = 2 FLOPs). Pretraining heads are left
  out, as papers count the model that is kept after pretraining.
  """
  s = int(round(seconds * constants.SAMPLE_RATE))
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in batching.dummy_batch(s).items()}
  params = nn.unbox(jax.eval_shape(objective.init, jax.random.PRNGKey(0), batch))
  traced = jax.jit(lambda p, b: objective.represent(p, b)[0]).trace(params, batch)
  return program_flops(traced) / 2.0 / seconds
