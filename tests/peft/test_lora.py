"""LoRA: zero-initialised B leaves the model unchanged, merge / un-merge, frozen weights and
their (absent) optimizer state, and the interceptor's agreement with merged weights."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl.models import layers
from jaxssl.peft import lora
from jaxssl.peft import objective as peft_objective
from tests.peft import helpers


def _logits(objective, params):
  """Eval-mode logits of a PEFT objective: the adapted model (interceptor), no merging."""
  params = dict(params)
  adapters = params.pop("peft")
  b = helpers.batch()
  valid = jnp.ones((2, 14), bool)

  @jax.jit
  def apply(params, adapters):
    with lora.adapt(objective.deltas(adapters, None)):
      return objective.base.model.apply({"params": params}, b["audio"], valid=valid, train=False)

  return apply(params, adapters)


def _base_logits(objective, params):
  b = helpers.batch()
  return jax.jit(lambda p: objective.base.model.apply(
      {"params": p}, b["audio"], valid=jnp.ones((2, 14), bool), train=False))(params)


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_zero_initialised_adapter_gives_the_base_models_outputs(method):
  objective = helpers.peft_objective_for(method)
  params = helpers.init(objective)
  base = {k: v for k, v in params.items() if k != "peft"}
  want = _base_logits(objective, base)
  np.testing.assert_array_equal(_logits(objective, params), want)
  # The adapters exist (the equality is not vacuous) on every layer's query and value.
  assert sorted(lora.modules(params["peft"])) == sorted(
      f"speech_encoder/encoder/layer_{i:02d}/self_attn/{n}/dense"
      for i in range(2) for n in ("query", "value"))


def test_adapter_branch_equals_merged_weights_and_merge_unmerge_is_identity():
  objective = helpers.peft_objective_for("lora", rank=4)
  params = helpers.init(objective)
  rng = jax.random.PRNGKey(7)
  params["peft"] = jax.tree.map(lambda x: 0.3 * jax.random.normal(rng, x.shape), params["peft"])
  base = {k: v for k, v in params.items() if k != "peft"}
  merged = lora.merge(base, params["peft"], scale=objective.scale)
  got = _base_logits(objective, merged)
  np.testing.assert_allclose(got, _logits(objective, params), rtol=1e-4, atol=1e-4)
  changed = merged["speech_encoder"]["encoder"]["layer_00"]["self_attn"]["query"]["dense"]
  assert np.abs(changed["kernel"] - base["speech_encoder"]["encoder"]["layer_00"]["self_attn"][
      "query"]["dense"]["kernel"]).max() > 1e-3
  back = lora.unmerge(merged, params["peft"], scale=objective.scale)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=0, atol=1e-6), back, base)
  # `export` merges the same way and drops the adapters.
  exported = objective.export(params)
  assert "peft" not in exported
  jax.tree.map(np.testing.assert_array_equal, exported, merged)


def test_merge_works_on_stacked_scan_kernels():
  kernel = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 5))  # [L, in, out]
  params = {"layers": {"q": {"kernel": kernel}}}
  adapters = lora.init(jax.random.PRNGKey(1), params, targets=r"layers/q/kernel", rank=2)
  assert adapters["layers"]["q"]["lora_a"].shape == (3, 6, 2)
  adapters["layers"]["q"]["lora_b"] = jnp.ones((3, 2, 5))
  merged = lora.merge(params, adapters, scale=0.5)
  want = kernel[1] + 0.5 * adapters["layers"]["q"]["lora_a"][1] @ jnp.ones((2, 5))
  np.testing.assert_allclose(merged["layers"]["q"]["kernel"][1], want, rtol=1e-6)
  np.testing.assert_allclose(lora.unmerge(merged, adapters, scale=0.5)["layers"]["q"]["kernel"],
                             kernel, atol=1e-6)


def test_only_adapters_and_head_train_and_frozen_weights_hold_no_optimizer_state():
  objective = helpers.peft_objective_for("lora", rank=4)
  params = helpers.init(objective)
  tx = helpers.optimizer(objective)
  new, opt_state, _ = helpers.train(objective, params, tx, 3)
  # Frozen parameters: bitwise unchanged.
  jax.tree.map(np.testing.assert_array_equal, new["speech_encoder"], params["speech_encoder"])
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), new["peft"],
                                          params["peft"])))
  assert np.any(new["ctc_proj"]["dense"]["kernel"] != params["ctc_proj"]["dense"]["kernel"])
  # Adam moments exist only for the trained leaves: 2 per trained scalar, plus counters.
  trained = lora.num_params(params["peft"]) + lora.num_params(params["ctc_proj"])
  state_size = sum(x.size for x in jax.tree.leaves(opt_state))
  assert 2 * trained <= state_size <= 2 * trained + 16
  masked = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  assert sum(isinstance(x, optax.MaskedNode) for x in masked) >= len(
      jax.tree.leaves(params["speech_encoder"]))
  report = peft_objective.report(params, opt_state, r"ctc_proj/.*|peft/.*")
  assert report["trainable_params"] == trained
  assert report["opt_state_bytes"] <= 4 * (2 * trained + 16)


class _TwoDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    return layers.Dense(6, name="out")(nn.gelu(layers.Dense(8, name="hid")(x)))


def test_lora_dropout_only_in_training_and_interceptor_matches_merge():
  model, x = _TwoDense(), jax.random.normal(jax.random.PRNGKey(0), (4, 5))
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  params = nn.unbox(params)
  adapters = lora.init(jax.random.PRNGKey(2), params, targets=r"hid/dense/kernel", rank=2)
  adapters["hid"]["dense"]["lora_b"] = jnp.ones((2, 8))

  def run(rng):
    with lora.adapt(lora.lora_deltas(adapters, scale=2.0, dropout_rate=0.5, rng=rng)):
      return model.apply({"params": params}, x)

  merged = model.apply({"params": lora.merge(params, adapters, scale=2.0)}, x)
  np.testing.assert_allclose(run(None), merged, rtol=1e-5, atol=1e-6)  # No rng: no dropout.
  a, b = run(jax.random.PRNGKey(3)), run(jax.random.PRNGKey(4))
  assert np.abs(a - b).max() > 1e-3 and np.abs(a - merged).max() > 1e-3
  with pytest.raises(ValueError, match="were never applied"), lora.adapt(
      {"nowhere/dense": lambda x: x}):
    model.apply({"params": params}, x)


def test_bad_targets_and_trainable_regex_are_named():
  params = {"a": {"dense": {"kernel": jnp.ones((2, 2))}}}
  with pytest.raises(ValueError, match="peft.targets='nope' matches no Dense kernel"):
    lora.init(jax.random.PRNGKey(0), params, targets="nope", rank=2)
  cfg = helpers.peft_objective_for("lora").cfg
  with pytest.raises(ValueError, match="the regex must match 'peft/...'"):
    peft_objective.check(cfg, r"speech_encoder/.*|ctc_proj/.*")
  peft_objective.check(cfg, r"ctc_proj/.*|peft/.*")


def test_a_method_registered_from_outside_trains_through_the_same_wrapper():
  """A head-only method (frozen encoder, no adapters) registered under a new name: the encoder
  gets exactly zero gradient, the head does not, and the config section accepts the name."""
  peft_objective.register("head_only", peft_objective.Method())
  try:
    _check_head_only()
  finally:
    peft_objective.REGISTRY.unregister("head_only")


def _check_head_only():
  objective = helpers.peft_objective_for("head_only")
  assert isinstance(objective, peft_objective.PeftObjective)
  params = helpers.init(objective)
  assert "peft" not in params
  grads = jax.grad(lambda p: objective.loss(p, helpers.batch(), jax.random.PRNGKey(0),
                                            step=0)[0])(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["speech_encoder"]))
  assert float(jnp.abs(grads["ctc_proj"]["dense"]["kernel"]).max()) > 0.0
  with pytest.raises(ValueError, match=r"peft.method='loar': unknown PEFT method; .* Did you "
                                       r"mean 'lora'"):
    helpers.peft_objective_for("loar")
