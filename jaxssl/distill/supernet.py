"""LightHuBERT once-for-all supernets: search spaces, sampling, the reference's slicing, extraction.

Wang et al. 2022, https://arxiv.org/abs/2203.15610 ; mechanicalsea/lighthubert
(config/supernet/Supernet-{Base,Small}.yaml, modules/scaling_*.py; docs/reference.md). The
supernet is always the teacher's shape (Base and Small alike: 768-d, 12 x 64-d heads, FFN 3072,
12 layers); a subnet picks a width n, a depth, and per layer its heads and FFN width. Training
runs a fresh uniform subnet every step inside one compiled step (`sample`, `masked.py`);
`subnet_params` cuts a subnet out by the reference's slicing, which `extract` writes as a
standalone checkpoint.

The reference's slicing, which masked.py reproduces: leading slices of every width except
  FFN       the first n units of each E-unit block of the hidden layer (E: the supernet width),
            F_l units in all (SLinear with in/out splits);
  depth     kept layers by block: the 12 layers form blocks 1-4, 5-8, 9-12 and a shallower
            subnet drops the last layer of the last block, then of the middle, then of the
            first block, and so on (depth 11 drops layer 12; 10 drops 8 and 12; 9 drops 4, 8
            and 12);
  pos conv  the weight-normalised kernel sliced to n outputs and n / G inputs per group (SConv1d
            after weight norm), not a renormalised slice of weight_v.
"""
import dataclasses
import json

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from jaxssl import pretrained
from jaxssl.distill import masked
from jaxssl.distill import student as student_lib
from jaxssl.interop import native
from jaxssl.models import variants


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A supernet's size and the choices per dimension; `default` is (embed, heads, ffn_ratio,
  depth)."""
  embed_dim: int          # The supernet's width E (also the FFN block size).
  num_heads: int
  mlp_dim: int
  num_layers: int
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


_HUBERT = dict(embed_dim=768, num_heads=12, mlp_dim=3072, num_layers=12)
# Supernet-Base.yaml / Supernet-Small.yaml: both supernets are HuBERT BASE's shape. "demo" is the
# demo teacher's (128-d, 4 x 32-d heads, 3 layers); "tiny" the tests' (32-d, 2 x 16-d heads).
SPACES = {
    "base": SearchSpace(**_HUBERT, embed_dims=(512, 640, 768), heads=(8, 10, 12),
                        ffn_ratios=(3.5, 4.0), depths=(12,), default=(640, 10, 4.0, 12)),
    "small": SearchSpace(**_HUBERT, embed_dims=(256, 384, 512), heads=(4, 6, 8),
                         ffn_ratios=(3.0, 3.5, 4.0), depths=(10, 11, 12),
                         default=(384, 6, 4.0, 12)),
    "demo": SearchSpace(embed_dim=128, num_heads=4, mlp_dim=512, num_layers=3,
                        embed_dims=(64, 96, 128), heads=(2, 3, 4), ffn_ratios=(2.0, 3.0, 4.0),
                        depths=(2, 3), default=(96, 3, 3.0, 2), head_dim=32),
    "tiny": SearchSpace(embed_dim=32, num_heads=2, mlp_dim=64, num_layers=2,
                        embed_dims=(16, 32), heads=(1, 2), ffn_ratios=(1.0, 2.0), depths=(1, 2),
                        default=(16, 1, 2.0, 2), head_dim=16),
}


def get_space(name) -> SearchSpace:
  if name not in SPACES:
    raise ValueError(f"lighthubert.space={name!r}; choose from {sorted(SPACES)}.")
  return SPACES[name]


def depth_map(num_layers, depth):
  """Which of the supernet's layers a subnet of `depth` keeps (tuple of bools), by blocks.

  Three blocks of equal size when the depth divides by 3 (the reference's 12 = 4 + 4 + 4),
  else one; layers are dropped from the ends of the blocks, last block first."""
  if not 1 <= depth <= num_layers:
    raise ValueError(f"depth {depth} outside 1..{num_layers}.")
  blocks = 3 if num_layers % 3 == 0 else 1
  size = num_layers // blocks
  order = [b * size + size - 1 - j for j in range(size) for b in reversed(range(blocks))]
  keep = [True] * num_layers
  for i in order[:num_layers - depth]:
    keep[i] = False
  return tuple(keep)


@struct.dataclass
class SubnetArrays:
  """One subnet as arrays over the supernet's layers (traced inside the step).

  embed_dim: int []; keep: bool [L]; heads, ffn: int [L] (of the kept layers; 0 elsewhere)."""
  embed_dim: jax.Array
  keep: jax.Array
  heads: jax.Array
  ffn: jax.Array


def arrays(subnet, space) -> SubnetArrays:
  """`SubnetArrays` of a `student.Subnet` (its layers placed by `depth_map`)."""
  keep = depth_map(space.num_layers, subnet.depth)
  heads, ffn, k = np.zeros(space.num_layers, np.int32), np.zeros(space.num_layers, np.int32), 0
  for i, kept in enumerate(keep):
    if kept:
      heads[i], ffn[i], k = subnet.heads[k], subnet.ffn_dims[k], k + 1
  return SubnetArrays(jnp.int32(subnet.embed_dim), jnp.asarray(keep), jnp.asarray(heads),
                      jnp.asarray(ffn))


def sample(rng, space) -> SubnetArrays:
  """A uniform subnet of the whole space, drawn in the graph: width and depth uniform over their
  choices, then per layer heads and FFN ratio uniform (LightHuBERT's `sample_subnet`)."""
  k_e, k_d, k_h, k_f = jax.random.split(rng, 4)
  embed = jnp.asarray(space.embed_dims, jnp.int32)[
      jax.random.randint(k_e, (), 0, len(space.embed_dims))]
  maps = jnp.asarray([depth_map(space.num_layers, d) for d in space.depths])
  keep = maps[jax.random.randint(k_d, (), 0, len(space.depths))]
  l = space.num_layers
  heads = jnp.asarray(space.heads, jnp.int32)[jax.random.randint(k_h, (l,), 0, len(space.heads))]
  ratios = jnp.asarray(space.ffn_ratios, jnp.float32)[
      jax.random.randint(k_f, (l,), 0, len(space.ffn_ratios))]
  ffn = (ratios * embed).astype(jnp.int32)  # int(ratio * embed), as the reference.
  return SubnetArrays(embed, keep, jnp.where(keep, heads, 0), jnp.where(keep, ffn, 0))


def ffn_units(n, ffn, split):
  """Indices of the FFN hidden units a subnet layer keeps, in order (numpy)."""
  size = -(-ffn // n) * split
  return np.flatnonzero(np.asarray(masked.ffn_mask(n, ffn, size, split)) > 0)


def subnet_params(params, subnet, space):
  """The reference's slice of a supernet's params as a standalone `student.Student` with
  `SubnetEncoder` (no heads, no mask embedding): a probe upstream or a teacher.

  Args:
    params: the supernet's params (`lighthubert.LightHubertModel`'s, unboxed numpy or jax).
    subnet: a `student.Subnet` of `space`.
    space: the `SearchSpace`.
  """
  n, e = subnet.embed_dim, space.embed_dim
  enc = params["encoder"]
  out = {k: params[k] for k in ("feature_extractor", "layer_norm") if k in params}
  proj = params["post_extract_proj"]["dense"]
  out["post_extract_proj"] = {"dense": {"kernel": proj["kernel"][:, :n],
                                        "bias": proj["bias"][:n]}}

  def norm(p):
    return {"scale": p["scale"][:n], "bias": p["bias"][:n]}

  pc = enc["pos_conv"]
  v, g = np.asarray(pc["weight_v"]), np.asarray(pc["weight_g"])
  groups = v.shape[2] // v.shape[1]
  kernel = (g * v / np.linalg.norm(v, axis=(1, 2), keepdims=True))[:, :n // groups, :n]
  new_enc = {"pos_conv": {"weight_v": kernel,
                          "weight_g": np.linalg.norm(kernel, axis=(1, 2), keepdims=True),
                          "bias": pc["bias"][:n]},
             "layer_norm": norm(enc["layer_norm"])}
  kept = [i for i, k in enumerate(depth_map(space.num_layers, subnet.depth)) if k]
  for j, (i, h, f) in enumerate(zip(kept, subnet.heads, subnet.ffn_dims)):
    layer = enc[f"layer_{i:02d}"]
    width = h * subnet.head_dim
    attn = {name: {"dense": {"kernel": layer["self_attn"][name]["dense"]["kernel"][:n, :width],
                             "bias": layer["self_attn"][name]["dense"]["bias"][:width]}}
            for name in ("query", "key", "value")}
    out_proj = layer["self_attn"]["out"]["dense"]
    attn["out"] = {"dense": {"kernel": out_proj["kernel"][:width, :n],
                             "bias": out_proj["bias"][:n]}}
    units = ffn_units(n, f, e)
    fc1, fc2 = layer["ffn"]["fc1"]["dense"], layer["ffn"]["fc2"]["dense"]
    new_enc[f"layer_{j:02d}"] = {
        "self_attn": attn,
        "self_attn_layer_norm": norm(layer["self_attn_layer_norm"]),
        "final_layer_norm": norm(layer["final_layer_norm"]),
        "ffn": {"fc1": {"dense": {"kernel": np.asarray(fc1["kernel"])[:n][:, units],
                                  "bias": np.asarray(fc1["bias"])[units]}},
                "fc2": {"dense": {"kernel": np.asarray(fc2["kernel"])[units][:, :n],
                                  "bias": fc2["bias"][:n]}}}}
  out["encoder"] = new_enc
  return jax.tree.map(np.asarray, out)


def subnet_config(config, subnet):
  """A standalone distill config of `subnet`: objective "distill" with `student.subnet` set and
  no prediction heads (an upstream; `distill.target_layers` empty)."""
  c = json.loads(config.to_json())
  c["objective"] = {"name": "distill"}
  c["distill"]["target_layers"] = []
  c["student"] = {"feature_layer_norm": True, "head_inter_dim": 0, "subnet": subnet.to_dict()}
  c["model"]["variant"] = dict(num_layers=subnet.depth, embed_dim=subnet.embed_dim,
                               mlp_dim=max(subnet.ffn_dims), num_heads=max(subnet.heads))
  v = config.model.variant
  dims = v if hasattr(v, "items") else dataclasses.asdict(variants.get(v))
  for k in ("conv_dim", "pos_conv_kernel", "pos_conv_groups"):
    c["model"]["variant"][k] = dims[k]
  c.pop("lighthubert", None)
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
  space = get_space(config.lighthubert.space)
  params = subnet_params(params, subnet, space)
  sub_config = subnet_config(config, subnet)
  native.save(output, sub_config, params, overwrite=overwrite)
  return sub_config, params

