"""AdaLoRA: peft's budget schedule, the rank budget held at every reallocation, masked singular
values, the orthogonality regulariser, and a model-level run with frozen weights untouched."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxssl.peft import adalora
from jaxssl.peft import lora
from jaxssl.peft import objective as peft_objective
from tests.peft import helpers


def _peft_budget(step, init_bgt, target_bgt, tinit, tfinal, total_step, delta_t):
  """peft's RankAllocator.budget_schedule, verbatim in Python."""
  if step <= tinit:
    return init_bgt, False
  if step > total_step - tfinal:
    return target_bgt, True
  mul_coeff = 1 - (step - tinit) / (total_step - tfinal - tinit)
  return int((init_bgt - target_bgt) * (mul_coeff**3) + target_bgt), step % delta_t == 0


def test_budget_schedule_is_peft_s_cubic_schedule():
  kw = dict(init_bgt=36, target_bgt=12, tinit=10, tfinal=20, total_step=100, delta_t=7)
  for step in range(101):
    budget, mask_ind = adalora.budget_schedule(step, **kw)
    assert (int(budget), bool(mask_ind)) == _peft_budget(step, **kw), step


def _toy(n=3, d=8, r=6):
  rng = np.random.default_rng(0)
  kernels = {f"m{i}": {"kernel": jnp.asarray(rng.standard_normal((d, d)), jnp.float32)}
             for i in range(n)}
  params = {"peft": adalora.init(jax.random.PRNGKey(0), kernels, targets=r"m\d/kernel", rank=r)}
  x = jnp.asarray(rng.standard_normal((32, d)), jnp.float32)
  # Module i must learn a rank-(2i+1) map of growing size: its triplets matter more.
  targets = [jnp.asarray(rng.standard_normal((d, 2 * i + 1)) @ rng.standard_normal(
      (2 * i + 1, d)), jnp.float32) * (i + 1) for i in range(n)]

  def loss(p):
    ads = lora.modules(p["peft"])
    return sum(jnp.mean(jnp.square(x @ adalora.delta_weight(ads[f"m{i}"], 1.0) - x @ t))
               for i, t in enumerate(targets)) + 0.1 * adalora.orth_regularizer(p["peft"])

  return params, loss


def test_total_rank_respects_the_budget_at_every_reallocation():
  n, r, target_r, total, tinit, tfinal, delta_t = 3, 6, 2, 60, 5, 10, 3
  params, loss = _toy(n, r=r)
  tx = adalora.allocator(optax.adam(3e-2), init_r=r, target_r=target_r, total_step=total,
                         tinit=tinit, tfinal=tfinal, delta_t=delta_t)
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
  for t in range(total):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    budget, mask_ind = _peft_budget(t, n * r, n * target_r, tinit, tfinal, total, delta_t)
    kept = sum(adalora.ranks(state).values())
    e = {p: np.asarray(a["lora_e"]) for p, a in lora.modules(params["peft"]).items()}
    if t > tinit and (mask_ind or t >= total - tfinal):
      assert kept <= budget, (t, kept, budget)
      for path, m in lora.modules(state.rank_mask).items():
        assert not np.any(e[path][~np.asarray(m["lora_e"])]), (t, path)  # Masked Λ_i = 0.
      assert sum(int(np.count_nonzero(v)) for v in e.values()) <= budget
    elif t <= tinit:
      assert kept == n * r
  ranks = adalora.ranks(state)
  assert sum(ranks.values()) <= n * target_r
  assert sum(ranks.values()) >= n * target_r - 1  # Ties aside, the budget is used.
  assert ranks["m0"] < ranks["m2"], ranks  # Reallocated to where it matters, not uniform.


def test_orthogonality_regulariser():
  q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 4)))
  adapters = {"m": {"lora_a": jnp.asarray(q, jnp.float32), "lora_e": jnp.ones(4),
                    "lora_b": jnp.asarray(q.T, jnp.float32)}}
  assert float(adalora.orth_regularizer(adapters)) < 1e-4
  adapters["m"]["lora_a"] = 2 * adapters["m"]["lora_a"]  # ||4 I - I||_F = 6 on P; 0 on Q.
  np.testing.assert_allclose(adalora.orth_regularizer(adapters), 3.0, rtol=1e-4)


def test_model_level_run_keeps_the_encoder_and_ends_within_the_target_budget():
  total = 4  # Steps 0-1 warm up, step 2 reallocates, step 3 fixes the final pattern.
  objective = helpers.peft_objective_for("adalora", total_steps=total, init_r=4, target_r=2,
                                         tinit=1, tfinal=1, delta_t=1)
  params = helpers.init(objective)
  tx = helpers.optimizer(objective, total_steps=total)
  new, state, metrics = helpers.train(objective, params, tx, total)
  jax.tree.map(np.testing.assert_array_equal, new["speech_encoder"], params["speech_encoder"])
  ranks = peft_objective.final_ranks(state)
  assert len(ranks) == 4 and sum(ranks.values()) <= 2 * 4
  for path, ad in lora.modules(new["peft"]).items():
    assert np.count_nonzero(np.asarray(ad["lora_e"])) <= ranks[path]
  # The loss carries the orthogonality term (the value the last step saw, before its update).
  assert float(metrics["orth_reg"]) > 0.5  # P, Q ~ N(0, 0.02): far from orthonormal.
