"""LoRA: low-rank adapters on chosen Dense kernels of a frozen model, merge and un-merge.

Hu et al. 2021 (https://arxiv.org/abs/2106.09685), docs/reference.md, peft's `LoraConfig`:
y = x W + (alpha / r) · dropout(x) A B with A [in, r] random (peft's kaiming-uniform, U(±1/√in))
and B [r, out] zero, so an adapted model starts exactly at the pretrained one. (Flax kernels are
[in, out], so A here is peft's lora_A transposed, B its lora_B transposed.)

Design: the adapters are their own parameter tree, `{"<module path>": {"lora_a", "lora_b"}}`
nested like the model's params (peft/speech_encoder/encoder/layer_00/self_attn/query/dense/
lora_a), and `adapt(deltas)` is a flax method interceptor that adds each adapter's output to the
output of the `nn.Dense` it targets. The models need no edits, and the adapter branch costs what
it costs in peft: x A, then (x A) B, and gradients for A and B only. A params-level transform
(W + (α/r) A B inside the loss) is the other clean way, but differentiating through the merged
kernel computes the full [in, out] weight gradient of every adapted matrix (the cost of full
fine-tuning for those matrices) and cannot apply peft's input dropout. It is what `merge` does
for inference, where no gradient is needed: merged outputs equal the adapted ones.
Limitation: the interceptor sees one layer at a time, so scanned layers (model.scan_layers) are
not supported while training; `merge` / `unmerge` work on stacked [L, in, out] kernels too.
"""
import contextlib
import re
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxssl.training import optimizers


def target_paths(params, pattern: str) -> list[str]:
  """'/'-paths of the Dense kernels whose path fullmatches `pattern` (params without 'params').

  Raises:
    ValueError: when nothing matches, naming a few kernel paths to choose from.
  """
  regex = re.compile(pattern)
  kernels = [optimizers.param_path(p) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if optimizers.param_path(p).endswith("/kernel") and x.ndim >= 2]
  found = [k for k in kernels if regex.fullmatch(k)]
  if not found:
    raise ValueError(f"peft.targets={pattern!r} matches no Dense kernel; kernels look like "
                     f"{kernels[:3]}.")
  return found


def _module_path(kernel_path: str) -> str:
  return kernel_path[:-len("/kernel")]


def _kernel(params, kernel_path):
  return traverse_util.flatten_dict(params, sep="/")[kernel_path]


def init(rng, params, *, targets: str, rank: int, dtype=jnp.float32):
  """Adapters for the kernels matching `targets`: A ~ U(±1/√in) [..., in, r], B = 0 [..., r, out].

  Args:
    rng: PRNG key.
    params: the model params (unboxed or boxed; only shapes are read).
    targets: regex over kernel paths, e.g. r".*/self_attn/(query|value)/dense/kernel".
    rank: r.
    dtype: adapter dtype.

  Returns:
    Nested dict: module path -> {"lora_a", "lora_b"}.
  """
  if rank < 1:
    raise ValueError(f"peft.rank must be >= 1, got {rank}.")
  params = nn.unbox(params)
  flat = {}
  for i, path in enumerate(target_paths(params, targets)):
    w = _kernel(params, path)
    *lead, d_in, d_out = w.shape
    bound = 1.0 / d_in**0.5
    a = jax.random.uniform(jax.random.fold_in(rng, i), (*lead, d_in, rank), dtype, -bound, bound)
    flat[_module_path(path) + "/lora_a"] = a
    flat[_module_path(path) + "/lora_b"] = jnp.zeros((*lead, rank, d_out), dtype)
  return traverse_util.unflatten_dict(flat, sep="/")


def modules(adapters) -> dict:
  """Module path ('a/b/dense') -> that module's adapter dict, from a nested adapter tree."""
  out = {}

  def walk(node, prefix):
    if any(not isinstance(v, dict) for v in node.values()):
      out[prefix] = node
      return
    for k, v in node.items():
      walk(v, f"{prefix}/{k}" if prefix else k)

  walk(adapters, "")
  return out


def delta_weight(adapter, scale):
  """The adapter's kernel update (alpha / r) · A B, [..., in, out]."""
  return scale * jnp.einsum("...ir,...ro->...io", adapter["lora_a"], adapter["lora_b"])


def lora_deltas(adapters, *, scale: float, dropout_rate: float = 0.0, rng=None):
  """Module path -> `x -> (alpha / r) · dropout(x) A B`, for `adapt`.

  Args:
    adapters: from `init`.
    scale: alpha / r.
    dropout_rate: peft's lora_dropout on the adapter's input; needs `rng` when > 0.
    rng: dropout key (None: no dropout, as in evaluation).
  """
  fns = {}
  for i, (path, adapter) in enumerate(sorted(modules(adapters).items())):
    key = None if rng is None or dropout_rate <= 0 else jax.random.fold_in(rng, i)

    def fn(x, adapter=adapter, key=key):
      if key is not None:
        keep = jax.random.bernoulli(key, 1.0 - dropout_rate, x.shape)
        x = jnp.where(keep, x / (1.0 - dropout_rate), 0.0).astype(x.dtype)
      return scale * ((x @ adapter["lora_a"].astype(x.dtype)) @ adapter["lora_b"].astype(x.dtype))

    fns[path] = fn
  return fns


@contextlib.contextmanager
def adapt(deltas: dict[str, Callable]):
  """A context manager: inside it, every `nn.Dense` whose module path is a key of `deltas`
  returns `dense(x) + deltas[path](x)`.

  Use around `model.apply(...)`. The paths are relative to the applied root module
  ("speech_encoder/encoder/layer_00/self_attn/query/dense" for the CTC model).

  Raises (at apply time):
    ValueError: when a target is never called (e.g. it sits inside scanned layers).
  """
  seen = set()

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != "__call__" or not isinstance(context.module, nn.Dense):
      return next_fun(*args, **kwargs)
    path = "/".join(context.module.path)
    y = next_fun(*args, **kwargs)
    if path in deltas:
      seen.add(path)
      y = y + deltas[path](args[0]).astype(y.dtype)
    return y

  with nn.intercept_methods(interceptor):
    yield
  missing = sorted(set(deltas) - seen)
  if missing:
    raise ValueError(f"peft adapters on {missing[:2]} were never applied: the model has no such "
                     "Dense call (scanned layers, model.scan_layers=True, are not supported "
                     "while training adapters).")


def merge(params, adapters, *, scale: float, delta_fn=delta_weight):
  """Params with each adapted kernel replaced by W + ΔW (inference without the adapter branch).

  Args:
    params: the model params (unboxed), nested dict.
    adapters: from `init` (or AdaLoRA's, with its `delta_fn`).
    scale: the adapter scale (alpha / r).
    delta_fn: `(adapter, scale) -> [..., in, out]`.

  Returns:
    A new params dict (the input is not modified).
  """
  return _apply(params, adapters, scale, delta_fn, 1.0)


def unmerge(params, adapters, *, scale: float, delta_fn=delta_weight):
  """The inverse of `merge`: W - ΔW on every adapted kernel."""
  return _apply(params, adapters, scale, delta_fn, -1.0)


def _apply(params, adapters, scale, delta_fn, sign):
  flat = traverse_util.flatten_dict(params, sep="/")
  for path, adapter in modules(adapters).items():
    key = path + "/kernel"
    if key not in flat:
      raise ValueError(f"peft adapter {path!r} has no kernel {key!r} in the params.")
    w = flat[key]
    flat[key] = (w + sign * delta_fn(adapter, scale).astype(w.dtype)).astype(w.dtype)
  return traverse_util.unflatten_dict(flat, sep="/")


def num_params(tree) -> int:
  """Number of scalars in a (possibly boxed) pytree."""
  return int(sum(x.size for x in jax.tree.leaves(nn.unbox(tree))))
