"""LightHuBERT once-for-all supernets: search spaces, subnet sampling, slicing and extraction.

Wang et al. 2022, https://arxiv.org/abs/2203.15610 ; mechanicalsea/lighthubert
(config/supernet/Supernet-{Base,Small}.yaml, docs/reference.md). The supernet is the largest
architecture of a search space; a subnet (width D, per layer a number of 64-d heads and an FFN
width, a depth) uses the leading slice of every shared weight: the first D rows/columns, the first
heads, the first FFN units, the first layers. So a subnet's forward is `slice_params` followed by
the standalone subnet architecture (`student.SubnetEncoder`), gradients flow back into the shared
weights through the slice, and `extract` writes the slice as an ordinary checkpoint.

Compiled shapes stay bounded: each run draws a fixed `menu` of subnets once (the largest, the
smallest, the space's default and `supernet.menu_size` random ones, LightHuBERT's per-layer
choices included) and each step trains one of them, chosen from (seed, step) on the host; the
trainer compiles one step per menu entry at most.
"""
import dataclasses
import functools
import json

from flax import traverse_util
import flax.linen as nn
import jax
import ml_collections as mlc
import numpy as np

from jaxssl import pretrained
from jaxssl.data import batching
from jaxssl.distill import student as student_lib
from jaxssl.interop import native
from jaxssl.models import frontends


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Choices per dimension; `default` is (embed_dim, heads, ffn_ratio, depth)."""
  embed_dims: tuple
  heads: tuple
  ffn_ratios: tuple
  depths: tuple
  default: tuple
  head_dim: int = student_lib.HEAD_DIM

  @property
  def largest(self):
    return student_lib.Subnet.uniform(max(self.embed_dims), max(self.heads),
                                      max(self.ffn_ratios), max(self.depths), self.head_dim)

  @property
  def smallest(self):
    return student_lib.Subnet.uniform(min(self.embed_dims), min(self.heads),
                                      min(self.ffn_ratios), min(self.depths), self.head_dim)

  @property
  def default_subnet(self):
    return student_lib.Subnet.uniform(*self.default, head_dim=self.head_dim)

  def sample(self, rng):
    """A random subnet: one width and depth, heads and FFN ratio drawn per layer."""
    embed = int(rng.choice(self.embed_dims))
    depth = int(rng.choice(self.depths))
    heads = tuple(int(rng.choice(self.heads)) for _ in range(depth))
    ffn = tuple(int(round(float(rng.choice(self.ffn_ratios)) * embed)) for _ in range(depth))
    return student_lib.Subnet(embed, heads, ffn, self.head_dim)


# Supernet-Base.yaml / Supernet-Small.yaml (docs/reference.md). The attention widths {512, 640,
# 768} / {256, 384, 512} are the heads times 64. "demo" fits the demo teacher (128-d, 32-d heads).
SPACES = {
    "base": SearchSpace(embed_dims=(512, 640, 768), heads=(8, 10, 12), ffn_ratios=(3.5, 4.0),
                        depths=(12,), default=(640, 10, 4.0, 12)),
    "small": SearchSpace(embed_dims=(256, 384, 512), heads=(4, 6, 8),
                         ffn_ratios=(3.0, 3.5, 4.0), depths=(10, 11, 12),
                         default=(384, 6, 4.0, 12)),
    "demo": SearchSpace(embed_dims=(64, 96, 128), heads=(2, 3, 4), ffn_ratios=(2.0, 3.0, 4.0),
                        depths=(2, 3), default=(96, 3, 3.0, 2), head_dim=32),
    # Tests and `:runlocal`: the tiny teacher (32-d, 2 layers).
    "tiny": SearchSpace(embed_dims=(16, 32), heads=(1, 2), ffn_ratios=(1.0, 2.0), depths=(1, 2),
                        default=(16, 1, 2.0, 1), head_dim=16),
}


def get_space(name) -> SearchSpace:
  if name not in SPACES:
    raise ValueError(f"supernet.space={name!r}; choose from {sorted(SPACES)}.")
  return SPACES[name]


def menu(config):
  """The run's subnets: largest, smallest, default, then `menu_size` random ones (fixed seed)."""
  s = config.supernet
  space = get_space(s.space)
  rng = np.random.default_rng([s.seed, 7])
  out = [space.largest, space.smallest, space.default_subnet]
  out += [space.sample(rng) for _ in range(s.menu_size)]
  return tuple(dict.fromkeys(out))  # Unique, in order.


def subnet_for_step(config, step, subnets):
  """Index into `subnets` of the subnet trained at `step` (a pure function of seed and step)."""
  return int(np.random.default_rng([config.supernet.seed, 11, step]).integers(len(subnets)))


@functools.lru_cache(maxsize=None)
def _shapes(config_json, subnet):
  config = mlc.ConfigDict(json.loads(config_json))
  batch = batching.dummy_batch()
  model = student_lib.student_from_config(config, subnet=subnet)
  valid = frontends.frame_valid(config.model.frontend, batch["valid"])
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), batch["audio"], valid=valid, train=False))["params"]
  return jax.tree.map(lambda x: tuple(x.shape), nn.unbox(shapes))


def subnet_shapes(config, subnet):
  """The parameter shapes of `subnet` (with its heads) as a nested dict of tuples."""
  return _shapes(config.to_json(), subnet)


def slice_params(params, shapes):
  """The leading slice of every shared weight that `shapes` names.

  Args:
    params: the supernet's params (nested dict of arrays).
    shapes: the subnet's param shapes (`subnet_shapes`); every path must exist in `params`
      with no smaller dimension.

  Returns:
    Nested dict of arrays with exactly `shapes`.
  """
  flat = traverse_util.flatten_dict(params, sep="/")
  want = traverse_util.flatten_dict(shapes, sep="/", is_leaf=lambda _, v: isinstance(v, tuple))
  out = {}
  for name, shape in want.items():
    if name not in flat:
      raise ValueError(f"Subnet parameter {name!r} is not in the supernet.")
    x = flat[name]
    if len(shape) != x.ndim or any(s > n for s, n in zip(shape, x.shape)):
      raise ValueError(f"Subnet parameter {name!r} of shape {shape} does not fit the supernet's "
                       f"{tuple(x.shape)}.")
    out[name] = x[tuple(slice(0, s) for s in shape)]
  return traverse_util.unflatten_dict(out, sep="/")


def subnet_config(config, subnet):
  """A standalone distill config of `subnet` (the supernet section cleared)."""
  c = json.loads(config.to_json())
  c["student"]["subnet"] = subnet.to_dict()
  c["model"]["variant"] = dict(num_layers=subnet.depth, embed_dim=subnet.embed_dim,
                               mlp_dim=max(subnet.ffn_dims), num_heads=max(subnet.heads))
  v = config.model.variant
  if hasattr(v, "items"):  # Keep the supernet's conv / positional-conv sizes.
    for k in ("conv_dim", "pos_conv_kernel", "pos_conv_groups"):
      if k in v:
        c["model"]["variant"][k] = v[k]
  if "supernet" in c:
    c["supernet"]["space"] = ""
  return mlc.ConfigDict(c)


def extract(checkpoint, subnet, output, *, overwrite=False):
  """Writes `subnet` of a trained supernet as a standalone checkpoint (config.json + ckpt/0).

  Args:
    checkpoint: the supernet's workdir (or a ckpt/<step> directory of it).
    subnet: a `student.Subnet` of its search space.
    output: the new checkpoint directory; loadable as a probe upstream or a teacher.
    overwrite: replace an existing `output`.

  Returns:
    (config, params) of the subnet.
  """
  config, params = pretrained.load_checkpoint(checkpoint)
  params = slice_params(params, subnet_shapes(config, subnet))
  sub_config = subnet_config(config, subnet)
  native.save(output, sub_config, params, overwrite=overwrite)
  return sub_config, params
