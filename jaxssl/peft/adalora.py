"""AdaLoRA: SVD-form adapters whose total rank is reallocated by importance during training.

Zhang et al. 2023 (https://arxiv.org/abs/2303.10512), docs/reference.md, as peft implements it
(peft/tuners/adalora/{layer,model}.py, `AdaLoraConfig`, `RankAllocator`):
- ΔW = P Λ Q · alpha / r_init, P [in, r] (peft's lora_A^T), Λ [r] (lora_E), Q [r, out] (lora_B^T);
  P, Q ~ N(0, 0.02), Λ = 0, so training starts at the pretrained model.
- Orthogonality regulariser R = mean over the 2n matrices of ||P^T P - I||_F and ||Q Q^T - I||_F,
  added to the loss with weight `orth_reg_weight` (0.5).
- Importance of every entry: I = |p · ∂L/∂p| with p the updated parameter, sensitivity smoothed by
  an EMA (beta1) and its uncertainty |I - Ī| by another (beta2); score = Ī · Ū. A triplet i of a
  matrix scores s(Λ_i) + mean_in s(P_:,i) + mean_out s(Q_i,:).
- Budget (total rank over all matrices): init_r · n for `tinit` steps, then a cubic decrease to
  target_r · n over [tinit, total - tfinal]; every `deltaT` steps the triplets scoring at or
  below the (init_bgt - budget)-th smallest score get Λ_i = 0. At step total - tfinal the last
  pattern is fixed and enforced on every later step (the final fine-tuning phase).

The allocator is an optax wrapper (`allocator`) around the whole optimizer: it sees the gradients
and the updated parameters, keeps the EMAs and the rank pattern in the optimizer state, and masks
Λ through the update it returns. One difference from peft: the importance uses the gradient
before global-norm clipping (peft reads p.grad after the trainer clipped it).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from jaxssl.peft import lora


def init(rng, params, *, targets: str, rank: int, dtype=jnp.float32):
  """AdaLoRA triplets for the 2-D kernels matching `targets`.

  Returns:
    Nested dict: module path -> {"lora_a": P [in, r], "lora_e": Λ [r], "lora_b": Q [r, out]}.
  """
  if rank < 1:
    raise ValueError(f"peft.init_r must be >= 1, got {rank}.")
  flat = {}
  for i, path in enumerate(lora.target_paths(params, targets)):
    w = traverse_util.flatten_dict(params, sep="/")[path]
    w = getattr(w, "value", w)
    if w.ndim != 2:
      raise ValueError(f"AdaLoRA needs 2-D kernels; {path} is {w.shape} (model.scan_layers?).")
    k_a, k_b = jax.random.split(jax.random.fold_in(rng, i))
    module = path[:-len("/kernel")]
    flat[module + "/lora_a"] = 0.02 * jax.random.normal(k_a, (w.shape[0], rank), dtype)
    flat[module + "/lora_e"] = jnp.zeros((rank,), dtype)
    flat[module + "/lora_b"] = 0.02 * jax.random.normal(k_b, (rank, w.shape[1]), dtype)
  return traverse_util.unflatten_dict(flat, sep="/")


def delta_weight(adapter, scale):
  """P diag(Λ) Q · scale, [in, out]."""
  return scale * (adapter["lora_a"] * adapter["lora_e"]) @ adapter["lora_b"]


def deltas(adapters, *, scale: float, dropout_rate: float = 0.0, rng=None):
  """Module path -> `x -> scale · ((dropout(x) P) Λ) Q`, for `lora.adapt`."""
  fns = {}
  for i, (path, ad) in enumerate(sorted(lora.modules(adapters).items())):
    key = None if rng is None or dropout_rate <= 0 else jax.random.fold_in(rng, i)

    def fn(x, ad=ad, key=key):
      if key is not None:
        keep = jax.random.bernoulli(key, 1.0 - dropout_rate, x.shape)
        x = jnp.where(keep, x / (1.0 - dropout_rate), 0.0).astype(x.dtype)
      h = (x @ ad["lora_a"].astype(x.dtype)) * ad["lora_e"].astype(x.dtype)
      return scale * (h @ ad["lora_b"].astype(x.dtype))

    fns[path] = fn
  return fns


def orth_regularizer(adapters):
  """Mean over all P and Q of ||P^T P - I||_F and ||Q Q^T - I||_F (peft's regu_loss)."""
  terms = []
  for ad in lora.modules(adapters).values():
    eye = jnp.eye(ad["lora_e"].shape[0])
    for cov in (ad["lora_a"].T @ ad["lora_a"], ad["lora_b"] @ ad["lora_b"].T):
      # Tiny epsilon: the Frobenius norm's gradient is undefined at exactly zero.
      terms.append(jnp.sqrt(jnp.sum(jnp.square(cov - eye)) + 1e-12))
  return sum(terms) / len(terms)


def budget_schedule(step, *, init_bgt, target_bgt, tinit, tfinal, total_step, delta_t):
  """peft's RankAllocator.budget_schedule, traceable: (budget int32 [], mask_ind bool [])."""
  step = jnp.asarray(step)
  span = max(total_step - tfinal - tinit, 1)
  mul = 1.0 - (step - tinit) / span
  cubic = jnp.floor((init_bgt - target_bgt) * mul**3 + target_bgt).astype(jnp.int32)
  budget = jnp.where(step <= tinit, init_bgt,
                     jnp.where(step > total_step - tfinal, target_bgt, cubic))
  mask_ind = jnp.where(step <= tinit, False,
                       jnp.where(step > total_step - tfinal, True, step % delta_t == 0))
  return budget.astype(jnp.int32), mask_ind


class AllocatorState(NamedTuple):
  """count: updates so far; ipt / unc: EMA sensitivity and uncertainty (like the adapters);
  rank_mask: module path tree -> bool [r], the last allocated pattern; inner: wrapped state."""
  count: jax.Array
  ipt: dict
  unc: dict
  rank_mask: dict
  inner: optax.OptState


def _masks_like(adapters):
  return traverse_util.unflatten_dict(
      {p + "/lora_e": jnp.ones(a["lora_e"].shape, bool)
       for p, a in lora.modules(adapters).items()}, sep="/")


def triplet_scores(ipt, unc):
  """Module path -> [r] triplet importance from the EMA trees (peft's mask_to_budget)."""
  out = {}
  mods_i, mods_u = lora.modules(ipt), lora.modules(unc)
  for path in sorted(mods_i):
    s = {k: mods_i[path][k] * mods_u[path][k] for k in ("lora_a", "lora_e", "lora_b")}
    out[path] = s["lora_e"] + s["lora_a"].mean(0) + s["lora_b"].mean(1)
  return out


def allocator(inner: optax.GradientTransformation, *, init_r: int, target_r: int,
              total_step: int, tinit: int = 0, tfinal: int = 0, delta_t: int = 1,
              beta1: float = 0.85, beta2: float = 0.85, key: str = "peft"):
  """Wraps the optimizer with AdaLoRA's importance tracking and rank-budget masking.

  Args:
    inner: the optimizer of the whole params tree.
    init_r, target_r: initial and final average rank per matrix (budgets r · n).
    total_step: updates of the run; tinit / tfinal: warmup and final phases; delta_t: steps
      between reallocations; beta1 / beta2: EMA factors of sensitivity and uncertainty.
    key: the params entry holding the AdaLoRA adapters (from `init`).

  Returns:
    A GradientTransformation whose state is an `AllocatorState`.
  """
  if not 0 < target_r <= init_r:
    raise ValueError(f"peft.target_r must be in [1, init_r={init_r}], got {target_r}.")
  if tinit + tfinal >= total_step:
    raise ValueError(f"peft.tinit + peft.tfinal ({tinit} + {tfinal}) must be < total_steps "
                     f"({total_step}): no step would reallocate the budget.")
  if delta_t < 1:
    raise ValueError(f"peft.delta_t must be >= 1, got {delta_t}.")

  def init_fn(params):
    adapters = jax.tree.map(jnp.asarray, params[key])
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), adapters)
    return AllocatorState(jnp.zeros((), jnp.int32), zeros, zeros, _masks_like(adapters),
                          inner.init(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("the AdaLoRA allocator needs params in tx.update.")
    out, inner_state = inner.update(updates, state.inner, params)
    grads, adapters = updates[key], params[key]
    new = jax.tree.map(lambda p, u: p + u, adapters, out[key])  # peft scores after the step.
    step = state.count
    n = len(lora.modules(adapters))
    active = step < total_step - tfinal
    ipt_now = jax.tree.map(lambda p, g: jnp.abs(p * g).astype(jnp.float32), new, grads)
    ipt = jax.tree.map(lambda a, i: beta1 * a + (1 - beta1) * i, state.ipt, ipt_now)
    unc = jax.tree.map(lambda u, i, a: beta2 * u + (1 - beta2) * jnp.abs(i - a),
                       state.unc, ipt_now, ipt)
    keep_old = lambda new_, old: jax.tree.map(lambda x, y: jnp.where(active, x, y), new_, old)
    ipt, unc = keep_old(ipt, state.ipt), keep_old(unc, state.unc)

    budget, mask_ind = budget_schedule(step, init_bgt=init_r * n, target_bgt=target_r * n,
                                       tinit=tinit, tfinal=tfinal, total_step=total_step,
                                       delta_t=delta_t)
    scores = triplet_scores(ipt, unc)
    flat_scores = jnp.concatenate([scores[p] for p in sorted(scores)])
    k = init_r * n - budget  # The k lowest-scoring triplets (and ties) are masked.
    threshold = jnp.where(k >= 1, jnp.sort(flat_scores)[jnp.maximum(k - 1, 0)], -jnp.inf)
    final_switch = step == total_step - tfinal
    allocate = (active & mask_ind) | final_switch
    enforce = allocate | (step > total_step - tfinal)
    old_masks = lora.modules(state.rank_mask)
    masks, new_updates = {}, dict(out)
    flat_out = traverse_util.flatten_dict(out[key], sep="/")
    for path in sorted(scores):
      m = jnp.where(allocate, scores[path] > threshold, old_masks[path]["lora_e"])
      masks[path + "/lora_e"] = m
      e_old = traverse_util.flatten_dict(adapters, sep="/")[path + "/lora_e"]
      e_new = e_old + flat_out[path + "/lora_e"]
      e_new = jnp.where(enforce & ~m, 0.0, e_new)
      flat_out[path + "/lora_e"] = (e_new - e_old).astype(e_old.dtype)
    new_updates[key] = traverse_util.unflatten_dict(flat_out, sep="/")
    # peft resets the importance when the final pattern is fixed.
    ipt = jax.tree.map(lambda x: jnp.where(final_switch, 0.0, x), ipt)
    unc = jax.tree.map(lambda x: jnp.where(final_switch, 0.0, x), unc)
    return new_updates, AllocatorState(step + 1, ipt, unc,
                                       traverse_util.unflatten_dict(masks, sep="/"), inner_state)

  return optax.GradientTransformation(init_fn, update_fn)


def ranks(state: AllocatorState) -> dict[str, int]:
  """Module path -> rank of its last allocated pattern (number of kept triplets)."""
  return {p: int(jnp.sum(m["lora_e"])) for p, m in lora.modules(state.rank_mask).items()}
