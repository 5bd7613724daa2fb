"""LightHuBERT: the reference's slicing, the in-graph sampler, the masked supernet against the
standalone subnet, one compilation for every subnet, the loss, extraction."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import pretrained
from jaxssl.distill import extract_subnet
from jaxssl.distill import lighthubert
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import student as student_lib
from jaxssl.distill import supernet
from jaxssl.interop import native
from jaxssl.models.mixers import mha
from tests.distill import tiny

# mechanicalsea/lighthubert modules/scaling_transformer.py STransformerEncoder.depth_maps.
REFERENCE_DEPTH_MAPS = {
    6: [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0],
    7: [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0],
    8: [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0],
    9: [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0],
    10: [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0],
    11: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
    12: [1] * 12,
}


def reference_slinear_out_units(out_features, out_splits, sample_out_dim, sample_out_splits):
  """NumPy transcription of the reference SLinear._sample_parameters (output side): which rows
  of the full weight the subnet keeps."""
  size_full = out_features // out_splits
  size = int(sample_out_dim / sample_out_splits)
  rows = []
  for i in range(int(np.ceil(sample_out_splits))):
    rows.extend(range(i * size_full, i * size_full + min(size, sample_out_dim - i * size)))
  return np.asarray(rows)


def test_depth_maps_are_the_references():
  for depth, keep in REFERENCE_DEPTH_MAPS.items():
    assert supernet.depth_map(12, depth) == tuple(bool(k) for k in keep)
  assert supernet.depth_map(3, 2) == (True, True, False)
  with pytest.raises(ValueError, match="depth 13 outside 1..12"):
    supernet.depth_map(12, 13)


@pytest.mark.parametrize("n,ratio", [(768, 4.0), (640, 4.0), (640, 3.5), (512, 3.5),
                                     (384, 3.0), (256, 4.0)])
def test_ffn_units_are_the_reference_slinear_slices(n, ratio):
  ffn = int(ratio * n)
  want = reference_slinear_out_units(3072, 3072 // 768, ffn, ffn / n)
  np.testing.assert_array_equal(supernet.ffn_units(n, ffn, 768), want)
  assert len(want) == ffn


def test_the_pos_conv_is_sliced_after_weight_norm():
  sup = tiny.supernet_params()
  subnet = supernet.get_space("tiny").smallest  # 16-d: 4 groups of 4 of the supernet's 8.
  sub = supernet.subnet_params(sup, subnet, supernet.get_space("tiny"))
  pc = sup["encoder"]["pos_conv"]
  full = pc["weight_g"] * pc["weight_v"] / np.linalg.norm(pc["weight_v"], axis=(1, 2),
                                                          keepdims=True)
  got = sub["encoder"]["pos_conv"]
  kernel = got["weight_g"] * got["weight_v"] / np.linalg.norm(got["weight_v"], axis=(1, 2),
                                                              keepdims=True)
  np.testing.assert_allclose(kernel, full[:, :4, :16], rtol=1e-6)
  renormalised = pc["weight_g"] * pc["weight_v"][:, :4, :16] / np.linalg.norm(
      pc["weight_v"][:, :4, :16], axis=(1, 2), keepdims=True)
  assert np.abs(kernel - renormalised).max() > 1e-2  # What the slicing used to do.


def test_sampler_draws_every_value_of_the_space_per_step():
  space = supernet.get_space("small")
  draws = jax.jit(jax.vmap(lambda k: supernet.sample(k, space)))(
      jax.random.split(jax.random.key(0), 600))
  embed, keep = np.asarray(draws.embed_dim), np.asarray(draws.keep)
  heads, ffn = np.asarray(draws.heads), np.asarray(draws.ffn)
  assert set(embed) == set(space.embed_dims)
  depths = keep.sum(1)
  assert set(depths) == set(space.depths)
  for d in space.depths:  # Each depth keeps the reference's layers.
    assert (keep[depths == d] == supernet.depth_map(12, d)).all()
  assert set(heads[keep]) == set(space.heads) and (heads[~keep] == 0).all()
  ratios = ffn[keep] / np.repeat(embed, 12).reshape(-1, 12)[keep]
  assert set(np.round(ratios, 3)) == set(space.ffn_ratios)
  # Uniform: every width about a third of the draws; layers of one subnet differ.
  counts = np.array([(embed == e).mean() for e in space.embed_dims])
  assert np.abs(counts - 1 / 3).max() < 0.07
  assert (heads[:, 0] != heads[:, 1]).mean() > 0.5


def _subnets():
  return [student_lib.Subnet(32, (2, 2), (64, 64), 16),   # The whole supernet.
          student_lib.Subnet(16, (1, 2), (16, 32), 16),   # Per-layer heads and FFN.
          student_lib.Subnet(16, (2,), (32,), 16),        # Depth 1 (keeps layer 0).
          student_lib.Subnet(32, (1,), (32,), 16)]


@pytest.mark.parametrize("index", range(4))
def test_masked_supernet_equals_the_standalone_subnet(index):
  """The masked full-size forward equals the reference-sliced subnet built standalone, on every
  hidden state of a kept layer (and zero beyond the subnet's width)."""
  subnet, space = _subnets()[index], supernet.get_space("tiny")
  config = tiny.supernet_config("unused")
  sup = tiny.supernet_params()
  ours = lighthubert.LightHubertObjective(config)
  standalone = objective_lib.DistillObjective(supernet.subnet_config(config, subnet), subnet)
  sliced = supernet.subnet_params(sup, subnet, space)
  fresh = nn.unbox(jax.eval_shape(standalone.init, jax.random.PRNGKey(3), tiny.batch()))
  assert jax.tree.map(np.shape, fresh) == jax.tree.map(np.shape, sliced)
  b = tiny.batch()
  x, hidden, _ = jax.jit(lambda p: ours.represent(p, b, subnet))(sup)
  x_alone, hidden_alone, _ = jax.jit(lambda p: standalone.represent(p, b))(sliced)
  n = subnet.embed_dim
  assert len(hidden) == len(hidden_alone) == subnet.depth + 1
  for h, h_alone in zip(hidden, hidden_alone):
    np.testing.assert_allclose(h[..., :n], h_alone, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(x[..., :n], x_alone, rtol=1e-4, atol=1e-4)
  assert float(jnp.abs(x[..., n:]).sum()) == 0.0


def test_one_compilation_serves_every_subnet_and_gradients_stay_in_the_subnet():
  config = tiny.supernet_config("unused", stage=2)
  obj = lighthubert.LightHubertObjective(config)
  sup = tiny.supernet_params()
  b = dict(tiny.batch(), targets=jnp.asarray(
      np.random.default_rng(5).normal(size=(2, 1, 24, 32)), jnp.float32))
  traces = []

  @jax.jit
  def step(params, rng):
    traces.append(1)
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: obj.loss(p, b, rng, step=0, train=True), has_aux=True)(params)
    return loss, metrics, grads

  seen = {}
  for s in range(12):
    loss, metrics, grads = step(sup, jax.random.key(s))
    assert np.isfinite(float(loss))
    seen[(float(metrics["subnet_embed_dim"]), float(metrics["subnet_depth"]))] = grads
  assert len(traces) == 1 and len(seen) == 4  # Both widths x both depths, one program.
  g = seen[(16.0, 1.0)]["encoder"]
  q = g["layer_00"]["self_attn"]["query"]["dense"]["kernel"]
  assert np.abs(q[:16]).sum() > 0 and np.abs(q[16:]).sum() == 0  # Rows beyond the width.
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g["layer_01"]))  # Dropped.
  # Stage 1 always trains the whole supernet.
  with config.unlocked():
    config.lighthubert.stage = 1
  stage1 = lighthubert.LightHubertObjective(config)
  width = jax.jit(lambda rng: stage1.loss(sup, b, rng, step=0)[1]["subnet_embed_dim"])
  assert {float(width(jax.random.key(s))) for s in range(4)} == {32.0}


def test_prediction_loss_is_the_mean_squared_error_over_masked_frames():
  rs = np.random.default_rng(0)
  pred, target = rs.normal(size=(2, 9, 5)), rs.normal(size=(2, 9, 5))
  masked = rs.random((2, 9)) < 0.5
  want = np.mean([np.mean((pred[b, t] - target[b, t]) ** 2) for b, t in zip(*np.nonzero(masked))])
  got = lighthubert.prediction_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(masked))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_the_objective_masks_with_the_embedding_and_predicts_the_teacher_width():
  config = tiny.supernet_config("unused", stage=1)
  obj = lighthubert.LightHubertObjective(config)
  sup = tiny.supernet_params()
  assert sup["pred_head"]["dense"]["kernel"].shape == (32, 32)
  assert "bias" not in sup["pred_head"]["dense"] and sup["mask_emb"].shape == (32,)
  b = dict(tiny.batch(), targets=jnp.zeros((2, 1, 24, 32)))
  metrics = jax.jit(lambda p: obj.loss(p, b, jax.random.key(0), step=0, train=False)[1])(sup)
  assert 0.3 < float(metrics["masked_fraction"]) < 0.95  # p 0.65, spans of 10 on 24 frames.
  # Subnets slice attention heads: a Conformer or another mixer is refused, not ignored.
  with config.unlocked():
    config.model.block = "conformer"
  with pytest.raises(ValueError, match="model.block='conformer'"):
    _ = lighthubert.LightHubertObjective(config).model


def test_head_attention_equals_self_attention_when_widths_agree():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 32))
  valid = jnp.arange(7)[None] < jnp.array([[7], [5]])
  ours = student_lib.HeadAttention(num_heads=2, head_dim=16)
  params = ours.init(jax.random.PRNGKey(1), x, valid=valid, train=False)
  theirs = mha.SelfAttention(num_heads=2)
  np.testing.assert_allclose(ours.apply(params, x, valid=valid, train=False),
                             theirs.apply(params, x, valid=valid, train=False), rtol=1e-6)


def test_extracted_subnet_is_a_standalone_checkpoint(tmp_path):
  config = tiny.supernet_config("unused")
  sup = tiny.supernet_params()
  native.save(str(tmp_path / "supernet"), config, sup)
  subnet = supernet.get_space("tiny").default_subnet
  sub_config, _ = supernet.extract(str(tmp_path / "supernet"), subnet, str(tmp_path / "subnet"))
  assert sub_config.objective.name == "distill" and sub_config.student.subnet.embed_dim == 16
  loaded_config, loaded = pretrained.load_checkpoint(str(tmp_path / "subnet"))
  want = supernet.subnet_params(sup, subnet, supernet.get_space("tiny"))
  assert jax.tree.structure(loaded) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  assert objective_lib.num_params(loaded) < objective_lib.num_params(sup)
  assert loaded_config.objective.name == "distill"


def test_extract_cli_parses_subnets():
  base = supernet.get_space("base")
  assert extract_subnet.parse_subnet("default", base) == base.default_subnet
  assert extract_subnet.parse_subnet("embed=640,heads=10,ffn_ratio=4.0,depth=12",
                                     base) == base.default_subnet
  with pytest.raises(ValueError, match="--subnet"):
    extract_subnet.parse_subnet("wide", base)
  d = base.default_subnet
  assert (d.embed_dim, d.heads[0], d.ffn_dims[0], d.depth) == (640, 10, 2560, 12)
