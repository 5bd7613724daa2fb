"""LightHuBERT supernet: sliced subnets equal standalone ones, bounded menus, extraction."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import pretrained
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import student as student_lib
from jaxssl.distill import supernet
from jaxssl.interop import native
from jaxssl.models.mixers import mha
from tests.distill import tiny


def test_sliced_subnet_equals_the_standalone_architecture_with_copied_weights():
  config = tiny.supernet_config("unused")
  sup = tiny.supernet_params()
  # Per-layer choices: 16-d, layer 0 one head and FFN 32, layer 1 two heads and FFN 16.
  subnet = student_lib.Subnet(16, (1, 2), (32, 16), head_dim=16)
  sliced = supernet.slice_params(sup, supernet.subnet_shapes(config, subnet))
  # The same architecture built standalone from its own config, with the weights copied in.
  standalone = objective_lib.DistillObjective(supernet.subnet_config(config, subnet))
  fresh = nn.unbox(jax.eval_shape(standalone.init, jax.random.PRNGKey(3), tiny.batch()))
  copied = jax.tree.map(lambda f, s: s, fresh, sliced)  # Same tree and shapes, or it raises.
  assert objective_lib.num_params(copied) < objective_lib.num_params(sup)
  b = tiny.batch()
  b["targets"] = jnp.asarray(np.random.default_rng(5).normal(size=(2, 2, 24, 32)), jnp.float32)
  rng = jax.random.PRNGKey(0)
  on_supernet = objective_lib.SubnetObjective(config, subnet)

  @jax.jit
  def outputs(sup, copied):
    loss_sup = on_supernet.loss(sup, b, rng, step=0, train=False)[0]
    loss_alone = standalone.loss(copied, b, rng, step=0, train=False)[0]
    _, h_sup, _ = objective_lib.DistillObjective(config, subnet).represent(
        supernet.slice_params(sup, supernet.subnet_shapes(config, subnet)), b)
    _, h_alone, _ = standalone.represent(copied, b)
    grads = jax.grad(lambda p: on_supernet.loss(p, b, rng, step=0, train=True)[0])(sup)
    return loss_sup, loss_alone, h_sup, h_alone, grads

  loss_sup, loss_alone, h_sup, h_alone, grads = outputs(sup, copied)
  np.testing.assert_allclose(loss_sup, loss_alone, rtol=1e-6)
  assert len(h_alone) == 3 and h_alone[-1].shape == (2, 24, 16)
  for a, c in zip(h_sup, h_alone):  # f32 round-off of two differently fused programs.
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
  # Sliced weights are the leading block of the shared ones ...
  k_sup = sup["encoder"]["layer_01"]["ffn"]["fc1"]["dense"]["kernel"]
  np.testing.assert_array_equal(copied["encoder"]["layer_01"]["ffn"]["fc1"]["dense"]["kernel"],
                                k_sup[:16, :16])
  # ... and the subnet's gradients reach only that block of the shared weights.
  g = grads["encoder"]["layer_00"]["self_attn"]["query"]["dense"]["kernel"]
  assert np.abs(g[:16, :16]).sum() > 0
  assert np.abs(g[16:]).sum() == 0 and np.abs(g[:, 16:]).sum() == 0
  g = grads["encoder"]["layer_01"]["self_attn"]["query"]["dense"]["kernel"]
  assert np.abs(g[:16, :32]).sum() > 0 and np.abs(g[:, 32:]).sum() == 0  # 2 heads of 16.


def test_menu_is_bounded_and_deterministic():
  config = tiny.supernet_config("unused")
  space = supernet.get_space("tiny")
  menu = supernet.menu(config)
  assert menu[:3] == (space.largest, space.smallest, space.default_subnet)
  assert 3 <= len(menu) <= 3 + config.supernet.menu_size and menu == supernet.menu(config)
  picks = [supernet.subnet_for_step(config, s, menu) for s in range(50)]
  assert picks == [supernet.subnet_for_step(config, s, menu) for s in range(50)]
  assert set(picks) == set(range(len(menu)))
  for sub in menu:
    assert sub.embed_dim in space.embed_dims and sub.depth in space.depths
    assert set(sub.heads) <= set(space.heads)
  base = supernet.get_space("base").default_subnet
  assert (base.embed_dim, base.heads[0], base.ffn_dims[0], base.depth) == (640, 10, 2560, 12)


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
  assert sub_config.supernet.space == "" and sub_config.student.subnet.embed_dim == 16
  # Read back as any upstream is: its config.json names a standalone 1-layer 16-d student.
  loaded_config, loaded = pretrained.load_checkpoint(str(tmp_path / "subnet"))
  want = supernet.slice_params(sup, supernet.subnet_shapes(config, subnet))
  assert jax.tree.structure(loaded) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  standalone = objective_lib.DistillObjective(loaded_config)
  shapes = nn.unbox(jax.eval_shape(standalone.init, jax.random.PRNGKey(0), tiny.batch()))
  assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(lambda x: x.shape, loaded)
  assert objective_lib.num_params(loaded) < objective_lib.num_params(sup)


def test_extract_cli_parses_subnets():
  from jaxssl.distill import extract_subnet as extract  # pylint: disable=g-import-not-at-top
  base = supernet.get_space("base")
  assert extract.parse_subnet("default", base) == base.default_subnet
  assert extract.parse_subnet("embed=640,heads=10,ffn_ratio=4.0,depth=12",
                              base) == base.default_subnet
  with pytest.raises(ValueError, match="--subnet"):
    extract.parse_subnet("wide", base)
