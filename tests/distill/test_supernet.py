"""LightHuBERT supernet: sliced subnets equal standalone ones, bounded menus, extraction."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.distill import objective as objective_lib
from jaxssl.distill import student as student_lib
from jaxssl.distill import supernet
from jaxssl.evaluation import upstreams
from jaxssl.interop import native
from jaxssl.models.mixers import mha
from tests.distill import tiny


def _init(obj, seed):
  return nn.unbox(jax.jit(obj.init)(jax.random.PRNGKey(seed), tiny.batch()))


def test_sliced_subnet_equals_the_standalone_architecture_with_copied_weights():
  config = tiny.supernet_config("unused")
  sup = _init(objective_lib.DistillObjective(config), 0)
  # Per-layer choices: 16-d, layer 0 one head and FFN 32, layer 1 two heads and FFN 16.
  subnet = student_lib.Subnet(16, (1, 2), (32, 16), head_dim=16)
  sliced = supernet.slice_params(sup, supernet.subnet_shapes(config, subnet))
  # The same architecture built standalone from its own config, with the weights copied in.
  standalone = objective_lib.DistillObjective(supernet.subnet_config(config, subnet))
  fresh = _init(standalone, 3)
  copied = jax.tree.map(lambda f, s: s, fresh, sliced)  # Same tree and shapes, or it raises.
  assert objective_lib.num_params(copied) < objective_lib.num_params(sup)
  b = tiny.batch()
  b["targets"] = jax.random.normal(jax.random.PRNGKey(5), (2, 2, 24, 32))
  rng = jax.random.PRNGKey(0)
  loss_sup, _ = jax.jit(lambda p: supernet.SubnetObjective(config, subnet).loss(
      p, b, rng, step=0, train=False))(sup)
  loss_alone, _ = jax.jit(lambda p: standalone.loss(p, b, rng, step=0, train=False))(copied)
  np.testing.assert_allclose(loss_sup, loss_alone, rtol=1e-6)
  _, h_sup, _ = jax.jit(objective_lib.DistillObjective(config, subnet).represent)(sliced, b)
  _, h_alone, _ = jax.jit(standalone.represent)(copied, b)
  assert len(h_alone) == 3 and h_alone[-1].shape == (2, 24, 16)
  for a, c in zip(h_sup, h_alone):
    np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)
  # Sliced weights are the leading block of the shared ones.
  k_sup = sup["encoder"]["layer_01"]["ffn"]["fc1"]["dense"]["kernel"]
  np.testing.assert_array_equal(copied["encoder"]["layer_01"]["ffn"]["fc1"]["dense"]["kernel"],
                                k_sup[:16, :16])


def test_subnet_gradients_reach_only_the_shared_slice():
  config = tiny.supernet_config("unused")
  sup = _init(objective_lib.DistillObjective(config), 0)
  subnet = student_lib.Subnet(16, (1,), (32,), head_dim=16)
  b = dict(tiny.batch(), targets=jnp.ones((2, 2, 24, 32)))
  grads = jax.jit(jax.grad(lambda p: supernet.SubnetObjective(config, subnet).loss(
      p, b, jax.random.PRNGKey(0), step=0, train=True)[0]))(sup)
  g = grads["encoder"]["layer_00"]["self_attn"]["query"]["dense"]["kernel"]
  assert np.abs(g[:16, :16]).sum() > 0 and np.abs(g[16:]).sum() == 0 and np.abs(g[:, 16:]).sum() == 0
  assert all(np.abs(x).sum() == 0 for x in jax.tree.leaves(grads["encoder"]["layer_01"]))


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


def test_extracted_subnet_is_a_standalone_upstream(tmp_path):
  config = tiny.supernet_config("unused")
  sup = _init(objective_lib.DistillObjective(config), 0)
  native.save(str(tmp_path / "supernet"), config, sup)
  subnet = supernet.get_space("tiny").default_subnet
  sub_config, sub_params = supernet.extract(str(tmp_path / "supernet"), subnet,
                                            str(tmp_path / "subnet"))
  assert sub_config.supernet.space == "" and sub_config.student.subnet.embed_dim == 16
  up = upstreams.load(str(tmp_path / "subnet"))
  assert up.num_hidden == subnet.depth + 1 and up.dim == 16
  b = tiny.batch()
  hidden, _ = up(b)
  _, want, _ = objective_lib.DistillObjective(config, subnet).represent(
      supernet.slice_params(sup, supernet.subnet_shapes(config, subnet)), b)
  np.testing.assert_allclose(hidden[:, -1], want[-1], rtol=1e-5, atol=1e-5)
  assert objective_lib.num_params(sub_params) < objective_lib.num_params(sup)
