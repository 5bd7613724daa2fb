"""wav2vec 2.0 objective: negatives, logits, loss and perplexities against closed forms."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.wav2vec2 import demo
from jaxssl import objectives
from jaxssl.models import quantizer
from jaxssl.objectives import wav2vec2


def test_negatives_come_from_other_masked_frames_of_the_same_utterance():
  masked = jnp.zeros((3, 40), bool).at[0, 5:15].set(True).at[1, 20:40].set(True)
  masked = masked.at[2, ::3].set(True)
  idx = np.asarray(wav2vec2.sample_negatives(jax.random.key(0), masked, 50))
  flat = np.asarray(masked).reshape(-1)
  for b in range(3):
    for t in np.flatnonzero(np.asarray(masked[b])):
      neg = idx[b, t]
      assert flat[neg].all()                          # Only masked frames...
      assert ((neg // 40) == b).all()                 # ...of the same utterance...
      assert (neg != b * 40 + t).all()                # ...never the frame itself.
  # Uniform over the other 9 masked frames of row 0: every one shows up among 50 draws x 10.
  assert len(set(idx[0, 5:15].ravel())) == 10


def test_cross_sample_negatives_span_the_batch():
  masked = jnp.ones((4, 10), bool)
  idx = np.asarray(wav2vec2.sample_negatives(jax.random.key(0), masked, 2, cross_sample=30))
  assert idx.shape == (4, 10, 32)
  cross = idx[..., 2:]
  assert len(set((cross // 10).ravel())) == 4
  assert not (cross == np.arange(40).reshape(4, 10, 1)).any()


def test_logits_and_loss_against_a_hand_computation():
  rs = np.random.default_rng(0)
  c = rs.standard_normal((1, 4, 3)).astype(np.float32)
  q = rs.standard_normal((1, 4, 3)).astype(np.float32)
  q[0, 3] = q[0, 1]  # Frame 3's target equals frame 1's: that distractor must be -inf.
  neg_idx = jnp.array([[[1, 2], [0, 2], [0, 1], [1, 0]]])
  logits = np.asarray(wav2vec2.contrastive_logits(jnp.asarray(c), jnp.asarray(q), neg_idx, 0.1))
  cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  np.testing.assert_allclose(logits[0, 0], [cos(c[0, 0], q[0, 0]) / 0.1,
                                            cos(c[0, 0], q[0, 1]) / 0.1,
                                            cos(c[0, 0], q[0, 2]) / 0.1], rtol=1e-5)
  assert logits[0, 3, 1] == -np.inf and np.isfinite(logits[0, 3, 2])
  weights = jnp.array([[1.0, 0.0, 1.0, 1.0]])
  loss, acc = wav2vec2.contrastive_metrics(jnp.asarray(logits), weights)
  ce = [-jax.nn.log_softmax(logits[0, t])[0] for t in (0, 2, 3)]
  np.testing.assert_allclose(loss, np.mean(ce), rtol=1e-5)
  assert float(acc) == pytest.approx(np.mean([logits[0, t].argmax() == 0 for t in (0, 2, 3)]))


def test_gumbel_temperature_schedule():
  np.testing.assert_allclose(quantizer.gumbel_temperature(0), 2.0)
  np.testing.assert_allclose(quantizer.gumbel_temperature(100_000), 2.0 * 0.999995 ** 100_000,
                             rtol=1e-5)
  np.testing.assert_allclose(quantizer.gumbel_temperature(300_000), 0.5)  # Floor at ~277k.


@pytest.fixture(scope="module")
def tiny():
  c = demo.get_config("runlocal")
  with c.unlocked():
    c.model.final_dim = 256  # BASE's contrastive width: random cosines concentrate near 0.
    c.objective.num_negatives = 100
    c.objective.feature_penalty_weight = 10.0  # BASE's weights, so every term is checked.
  obj = objectives.build(c)
  rs = np.random.default_rng(0)
  batch = dict(audio=jnp.asarray(rs.standard_normal((8, 24_000)), jnp.float32),
               valid=jnp.ones((8, 24_000), bool))
  return c, obj, nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch)), batch


def test_loss_at_init_is_log_k_plus_one_and_perplexity_is_high(tiny):
  c, obj, params, batch = tiny
  loss, m = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(1), step=0, train=False))(
      params, batch)
  assert abs(float(m["loss_contrastive"]) - np.log(101)) < 0.1 * np.log(101)
  # Uniform draws of ~240 masked frames over 2 x 64 entries give a perplexity of ~112. A random
  # CNN's frames are correlated (GELU outputs share a positive mean), so fairseq's init reaches
  # about half of that (measured 50 here), far from the collapsed value of 2 (one code per group).
  assert float(m["code_perplexity"]) > 0.3 * 112
  assert float(m["prob_perplexity"]) > 0.3 * 2 * c.quantizer.num_vars
  np.testing.assert_allclose(
      loss, m["loss_contrastive"] + 0.1 * m["loss_diversity"] + 10.0 * m["loss_features"],
      rtol=1e-5)
  assert 0.3 < float(m["masked_fraction"]) < 0.6


def test_gradients_are_finite_and_reach_every_parameter(tiny):
  _, obj, params, batch = tiny
  grads = jax.jit(jax.grad(lambda p: obj.loss(p, batch, jax.random.key(2), step=0)[0]))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(g).all(), path
    assert np.abs(g).max() > 0.0, path


def test_per_language_metrics_split_the_loss(tiny):
  c, obj, params, batch = tiny
  with c.unlocked():
    c.objective.per_language_metrics, c.objective.languages = True, ("de", "en")
  obj2 = objectives.build(c)
  batch = dict(batch, language=jnp.array([0, 1] * 4))
  _, m = jax.jit(lambda p, b: obj2.loss(p, b, jax.random.key(1), step=0, train=False))(
      params, batch)
  assert {"lang_de/loss", "lang_en/accuracy"} <= set(m)
  # Equal masked counts per row (same_count), so the overall loss is the mean of the two.
  np.testing.assert_allclose(m["loss_contrastive"], (m["lang_de/loss"] + m["lang_en/loss"]) / 2,
                             rtol=1e-5)
