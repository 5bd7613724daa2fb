"""The probe modules: softmax layer weights, exact pre-pooling, padding-aware BLSTM, CTC loss
normalisation, and the train step lowering the loss."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from jaxssl.evaluation import probes
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step


def _hidden(b=3, l=4, t=10, d=6, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (b, l, t, d))


def test_layer_weights_are_a_softmax_that_sums_to_one():
  hidden = _hidden()
  ws = probes.WeightedSum()
  apply = jax.jit(ws.apply)
  params = ws.init(jax.random.PRNGKey(0), hidden)
  # Zero init (s3prl): uniform weights, i.e. the mean of the layers.
  np.testing.assert_allclose(apply(params, hidden), hidden.mean(1), atol=1e-6)
  logits = jnp.array([0.5, -1.0, 2.0, 0.0])
  params = {"params": {"layer_weights": logits}}
  out = apply(params, hidden)
  w = np.exp(logits) / np.exp(logits).sum()
  np.testing.assert_allclose(out, np.einsum("l,bltd->btd", w, hidden), rtol=1e-5, atol=1e-6)
  got = probes.layer_weights({"weighted_sum": params["params"]})
  np.testing.assert_allclose(got, w, rtol=1e-6)
  assert got.sum() == pytest.approx(1.0) and (got > 0).all()


def test_layer_norm_normalises_each_layer_without_affine():
  hidden = 5.0 + 3.0 * _hidden()
  ws = probes.WeightedSum(layer_norm=True)
  out = jax.jit(ws.apply)(ws.init(jax.random.PRNGKey(0), hidden), hidden)
  h = np.asarray(hidden)
  normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(out, normed.mean(1), rtol=1e-4, atol=1e-5)


def test_utterance_probe_on_prepooled_layers_is_exact():
  hidden = _hidden(t=12)
  valid = jnp.arange(12)[None] < jnp.array([[12], [7], [3]])
  probe = probes.Probe(kind="utterance", num_outputs=5, projector_dim=8)
  apply = jax.jit(probe.apply)
  params = jax.jit(probe.init)(jax.random.PRNGKey(1), hidden, valid)
  # Non-trivial layer weights, so pooling before the weighted sum is really tested.
  params["params"]["weighted_sum"]["layer_weights"] = jnp.array([1.0, -2.0, 0.3, 0.7])
  full = apply(params, hidden, valid)
  w = valid[:, None, :, None].astype(jnp.float32)
  pooled = (hidden * w).sum(2, keepdims=True) / w.sum(2, keepdims=True)
  np.testing.assert_allclose(apply(params, pooled, jnp.ones((3, 1), bool)), full,
                             rtol=1e-5, atol=1e-5)
  # Frames past `valid` do not matter.
  noisy = hidden.at[1, :, 7:].set(100.0)
  np.testing.assert_allclose(apply(params, noisy, valid), full, rtol=1e-5, atol=1e-5)


def test_blstm_head_ignores_padding():
  hidden = _hidden(b=2, t=9)
  valid = jnp.arange(9)[None] < jnp.array([[9], [5]])
  probe = probes.Probe(kind="ctc", num_outputs=4, projector_dim=8, head="blstm", hidden_dim=6,
                       num_layers=2)
  apply = jax.jit(probe.apply)
  params = jax.jit(probe.init)(jax.random.PRNGKey(0), hidden, valid)
  out = apply(params, hidden, valid)
  assert out.shape == (2, 9, 4)
  # Row 1 alone (padded with a copy of itself to keep the batch shape): same valid outputs.
  alone = apply(params, hidden[jnp.array([1, 1]), :, :5], jnp.ones((2, 5), bool))
  # The backward LSTM starts at each row's last valid frame, not at the padding.
  np.testing.assert_allclose(out[1, :5], alone[0], rtol=1e-5, atol=1e-5)


def test_unknown_head_is_named():
  probe = probes.Probe(kind="ctc", num_outputs=4, head="transformer")
  with pytest.raises(ValueError, match="probe.head='transformer'"):
    probe.init(jax.random.PRNGKey(0), _hidden(), jnp.ones((3, 10), bool))


def test_ctc_feasibility_counts_repeats():
  assert list(probes.ctc_feasible([[1, 2], [1, 1], [1, 1], []], [2, 2, 3, 0])) == [
      True, False, True, True]


def test_ctc_loss_is_per_token_mean_over_real_rows():
  b, t, v = 3, 8, 5
  logits = jax.random.normal(jax.random.PRNGKey(0), (b, t, v))
  valid = jnp.arange(t)[None] < jnp.array([[8], [6], [8]])
  labels = jnp.array([[1, 2, 3, 0], [4, 4, 0, 0], [1, 0, 0, 0]])
  label_valid = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
  rows = jnp.array([1.0, 1.0, 0.0])  # Row 2 is padding.
  nll = jax.jit(optax.ctc_loss)(logits, ~valid, labels, ~label_valid)
  expected = (nll[0] / 3 + nll[1] / 2) / 2
  got = jax.jit(probes.ctc_loss)(logits, valid, labels, label_valid, rows)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def _toy_inputs(kind, rng):
  """Frame labels / classes that a linear probe can read off the last layer."""
  b, l, t, d, v = 8, 3, 16, 8, 5
  hidden = rng.standard_normal((b, l, t, d)).astype(np.float32)
  if kind == "ctc":
    frame_labels = rng.integers(1, v, (b, t // 2)).repeat(2, axis=1)
    hidden[:, -1] += 3 * np.eye(d, dtype=np.float32)[frame_labels]
    targets = [[k for j, k in enumerate(row) if j == 0 or k != row[j - 1]]
               for row in frame_labels]
    labels = np.zeros((b, t), np.int32)
    for i, x in enumerate(targets):
      labels[i, :len(x)] = x
    label_valid = np.arange(t)[None] < np.array([len(x) for x in targets])[:, None]
    return dict(hidden=hidden, valid=np.ones((b, t), bool), labels=labels,
                label_valid=label_valid, rows=np.ones(b, np.float32)), v
  classes = rng.integers(0, v, b)
  hidden[:, -1] += 2 * np.eye(d, dtype=np.float32)[classes][:, None]
  return dict(hidden=hidden, valid=np.ones((b, t), bool), labels=classes.astype(np.int32),
              rows=np.ones(b, np.float32)), v


# The BLSTM head trains end to end in test_evaluate.py (asr).
@pytest.mark.parametrize("kind,head", [("ctc", "linear"), ("utterance", "linear")])
def test_train_step_lowers_the_loss_and_moves_weight_to_the_informative_layer(kind, head):
  inputs, v = _toy_inputs(kind, np.random.default_rng(0))
  probe = probes.Probe(kind=kind, num_outputs=v, projector_dim=16, head=head, hidden_dim=8,
                       num_layers=1, dropout_rate=0.0)
  objective = probes.ProbeObjective(probe)
  tx, lr_schedule = probes.make_optimizer(2e-2, clip_norm=1.0)
  mesh = partitioning.make_mesh(common.mesh(), devices=jax.devices()[:1])
  batch_sharding = partitioning.batch_sharding(mesh)
  batch = partitioning.make_global_batch(inputs, batch_sharding)
  state, shardings = train_state.create(objective, tx, partitioning.abstract_batch(
      inputs, batch_sharding), 0, mesh)
  step = train_step.make_train_step(mesh, shardings, batch_sharding, objective=objective, tx=tx,
                                    lr_schedule=lr_schedule)
  predict = jax.jit(objective.predict)
  _, first = predict(state.params, inputs)
  for _ in range(40):
    state, _ = step(state, {}, batch)
  pred, last = predict(state.params, inputs)
  assert float(last) < 0.5 * float(first)
  weights = probes.layer_weights(state.params)
  assert weights.sum() == pytest.approx(1.0, abs=1e-6)
  assert weights.argmax() == 2  # The layer that carries the labels.
  assert int(state.step) == 40
  if kind == "utterance":
    assert (np.asarray(pred) == inputs["labels"]).mean() == 1.0
