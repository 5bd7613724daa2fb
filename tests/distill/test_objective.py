"""DistilHuBERT objective: the loss against a hand computation, parameter counts, teacher init."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.distill import distilhubert
from configs.distill import lighthubert
from jaxssl import objectives
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import supernet
from tests.distill import tiny


def _abstract_params(config, subnet=None):
  obj = objective_lib.DistillObjective(config, subnet)
  return nn.unbox(jax.eval_shape(lambda: obj.init(jax.random.PRNGKey(0), tiny.batch(1, 16_000))))


def test_loss_matches_a_hand_computation():
  rng = np.random.default_rng(0)
  b, n, t, d = 2, 3, 5, 4
  pred = rng.normal(size=(b, n, t, d)).astype(np.float32)
  target = rng.normal(size=(b, n, t, d)).astype(np.float32)
  target[1, 2, 0] = 0.0  # A zero target: torch clamps its norm at 1e-8, so cos = 0.
  valid = np.ones((b, t), bool)
  valid[1, 3:] = False
  loss, metrics = objective_lib.distill_loss(jnp.asarray(pred), jnp.asarray(target),
                                             jnp.asarray(valid), cosine_weight=0.5)
  l1s, sims, coss = [], [], []
  for i in range(b):
    for j in range(n):
      for k in range(t):
        if not valid[i, k]:
          continue
        p, q = pred[i, j, k].astype(np.float64), target[i, j, k].astype(np.float64)
        cos = p @ q / (max(np.linalg.norm(p), 1e-8) * max(np.linalg.norm(q), 1e-8))
        l1s.append(np.abs(p - q).mean())
        sims.append(np.log1p(np.exp(-cos)))  # -log sigmoid(cos)
        coss.append(cos)
  np.testing.assert_allclose(metrics["loss_l1"], np.mean(l1s), rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_cos"], np.mean(sims), rtol=1e-5)
  np.testing.assert_allclose(metrics["cosine"], np.mean(coss), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(loss, np.mean(l1s) + 0.5 * np.mean(sims), rtol=1e-5)
  # Padded frames do not count: changing them changes nothing.
  pred2 = pred.copy()
  pred2[1, :, 3:] = 100.0
  loss2, _ = objective_lib.distill_loss(jnp.asarray(pred2), jnp.asarray(target),
                                        jnp.asarray(valid), cosine_weight=0.5)
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)


def test_distilhubert_has_the_reference_parameter_count():
  params = _abstract_params(distilhubert.get_config())
  assert objective_lib.num_params(params, heads=False) == 23_491_200  # docs/reference.md
  assert objective_lib.num_params(params) == 27_034_752               # with 3 heads
  assert sorted(params["encoder"]) == ["layer_00", "layer_01", "layer_norm", "pos_conv"]
  assert "layer_norm" not in params  # No LayerNorm after the CNN.


# With the reference's layer-norm CNN (LightHuBERTConfig.extractor_mode): 6,144 more than with
# HuBERT BASE's group-norm one (66,890,880 / 26,872,960).
@pytest.mark.parametrize("space,expected", [("base", 66_897_024), ("small", 26_879_104)])
def test_lighthubert_default_subnets_have_the_reference_parameter_counts(space, expected):
  config = lighthubert.get_config(f"space={space}")
  subnet = supernet.get_space(space).default_subnet
  params = _abstract_params(supernet.subnet_config(config, subnet), subnet)
  count = objective_lib.num_params(params, heads=False)
  assert count == expected
  assert round(count / 1e6, 1) == {"base": 66.9, "small": 26.9}[space]  # docs/reference.md


def test_other_mixers_make_students():
  params = _abstract_params(distilhubert.get_config("runlocal,mixer=summary_mixing"))
  assert "layer_00" in params["encoder"] and "heads" in params


def test_student_is_initialised_from_the_teacher_and_is_an_objective(tmp_path):
  t_config, t_params = tiny.write_teacher(str(tmp_path / "teacher"))
  config = tiny.student_config(str(tmp_path / "teacher"), layers=1)
  # A LayerNorm over the CNN features (s3prl's student has none), so that the student built
  # from the teacher's first layer reproduces the teacher below.
  config.student.feature_layer_norm = True
  obj = objectives.build(config)  # Registered as objective "distill".
  assert isinstance(obj, objective_lib.DistillObjective)
  params = nn.unbox(jax.jit(obj.init)(jax.random.PRNGKey(0), tiny.batch()))
  new, report = objective_lib.init_from_teacher(params, t_params["speech_encoder"])
  enc = t_params["speech_encoder"]
  for a, b in zip(jax.tree.leaves(new["encoder"]["layer_00"]),
                  jax.tree.leaves(enc["encoder"]["layer_00"])):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(new["post_extract_proj"]["dense"]["kernel"],
                                enc["post_extract_proj"]["dense"]["kernel"])
  # s3prl's scope: not the heads, the encoder's LayerNorm or one over the CNN features.
  assert sorted(k for k in report["kept"] if not k.startswith("heads/")) == [
      "encoder/layer_norm/bias", "encoder/layer_norm/scale", "layer_norm/bias",
      "layer_norm/scale"]
  doubled = jax.tree.map(lambda x: x * 2.0 + 1.0, t_params["speech_encoder"])
  scoped, _ = objective_lib.init_from_teacher(params, doubled)
  np.testing.assert_array_equal(scoped["encoder"]["layer_norm"]["scale"],
                                params["encoder"]["layer_norm"]["scale"])
  everything, report = objective_lib.init_from_teacher(params, doubled, ".*")
  assert all(k.startswith("heads/") for k in report["kept"])
  np.testing.assert_array_equal(everything["encoder"]["layer_norm"]["scale"],
                                doubled["encoder"]["layer_norm"]["scale"])
  # Copies, not the teacher's buffers (the student's state is donated to the train step).
  assert (new["post_extract_proj"]["dense"]["kernel"].unsafe_buffer_pointer()
          != enc["post_extract_proj"]["dense"]["kernel"].unsafe_buffer_pointer())
  assert "layer_01" not in new["encoder"]
  # The 1-layer student with the teacher's first layer reproduces the teacher's hidden[1]
  # (pre-LN: the final LayerNorm is applied to the last layer in both).
  b = tiny.batch()
  teacher = objectives.build(t_config)
  hs, ht = jax.jit(lambda s, t: (obj.represent(s, b)[1], teacher.represent(t, b)[1]))(
      new, t_params)
  np.testing.assert_allclose(hs[0], ht[0], rtol=1e-5, atol=1e-5)
  assert len(hs) == 2
