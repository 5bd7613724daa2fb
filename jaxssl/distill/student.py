"""Student encoders for distillation: DistilHuBERT's shallow student and LightHuBERT's subnets.

DistilHuBERT (Chang et al. 2022, https://arxiv.org/abs/2110.01900; s3prl upstream/distiller):
conv feature encoder -> (no LayerNorm) -> post_extract_proj -> conv positional embedding -> a few
Transformer blocks -> prediction heads Linear(D -> I*N) -> GELU -> N separate Linear(I -> D_t),
one per predicted teacher layer. The blocks come from `models.encoder.Encoder`, so any token
mixer of `models.mixers` (config `model.mixer.name`) makes a student.

LightHuBERT (Wang et al. 2022, https://arxiv.org/abs/2203.15610) subnets have a width per model
and, per layer, a number of 64-d heads and an FFN width; `SubnetEncoder` builds exactly that
architecture, with parameter names equal to `Encoder`'s so that a HuBERT teacher's weights copy
over by path. `Subnet` holds one such choice.
"""
import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import encoder as encoder_lib
from jaxssl.models import layers
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.models.mixers import mha

HEAD_DIM = 64  # LightHuBERT fixes the head width: atten_dim = heads * 64.


@dataclasses.dataclass(frozen=True)
class Subnet:
  """One LightHuBERT architecture: width, and per layer the heads and FFN width.

  Attributes:
    embed_dim: model width D.
    heads: number of 64-d heads of each layer (its length is the depth).
    ffn_dims: FFN hidden width of each layer.
    head_dim: width of every head (64 in LightHuBERT; the tiny demo teacher's is 32).
  """
  embed_dim: int
  heads: tuple
  ffn_dims: tuple
  head_dim: int = HEAD_DIM

  def __post_init__(self):
    object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
    object.__setattr__(self, "ffn_dims", tuple(int(f) for f in self.ffn_dims))
    if len(self.heads) != len(self.ffn_dims) or not self.heads:
      raise ValueError(f"Subnet: heads {self.heads} and ffn_dims {self.ffn_dims} must be "
                       "non-empty and of equal length (one entry per layer).")

  @property
  def depth(self):
    return len(self.heads)

  def to_dict(self):
    return dict(embed_dim=self.embed_dim, heads=list(self.heads), ffn_dims=list(self.ffn_dims),
                head_dim=self.head_dim)

  @classmethod
  def uniform(cls, embed_dim, heads, ffn_ratio, depth, head_dim=HEAD_DIM):
    """The same heads and FFN ratio in every layer (LightHuBERT's default subnets)."""
    return cls(embed_dim, (heads,) * depth, (int(round(ffn_ratio * embed_dim)),) * depth,
               head_dim)


class HeadAttention(nn.Module):
  """Self-attention with `num_heads` heads of `head_dim` (attention width independent of D).

  [B, T, D] -> [B, T, D]; q/k/v project D -> H * head_dim, `out` back to D. The names and the
  attention core are `mixers.mha.SelfAttention`'s, which it equals when H * head_dim = D.
  """
  num_heads: int
  head_dim: int = HEAD_DIM
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    del train
    b, t, d = x.shape
    width = self.num_heads * self.head_dim

    def project(name):
      y = layers.Dense(width, axes=("embed", "heads"), dtype=self.dtype, name=name)(x)
      return y.reshape(b, t, self.num_heads, self.head_dim)

    out = mha.heads_first_attention(project("query"), project("key"), project("value"), valid)
    return layers.Dense(d, axes=("heads", "embed"), dtype=self.dtype,
                        name="out")(out.reshape(b, t, width))


class SubnetEncoder(nn.Module):
  """`models.encoder.Encoder` with per-layer heads and FFN widths (a LightHuBERT subnet).

  Same parameter names and hidden-state contract: (x [B, T, D], tuple of depth+1 [B, T, D]).
  """
  heads: Sequence[int]
  ffn_dims: Sequence[int]
  head_dim: int = HEAD_DIM
  pos_conv_kernel: int = 128
  pos_conv_groups: int = 16
  layer_norm_first: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    x = jnp.where(valid[..., None], x, 0.0)
    x = x + encoder_lib.PositionalConv(self.pos_conv_kernel, self.pos_conv_groups, self.dtype,
                                       name="pos_conv")(x)
    final_norm = layers.layer_norm("layer_norm", self.dtype)
    if not self.layer_norm_first:
      x = final_norm(x)
    hidden = [x]
    for i, (h, f) in enumerate(zip(self.heads, self.ffn_dims)):
      x, _ = encoder_lib.EncoderBlock(
          mixer=functools.partial(HeadAttention, num_heads=h, head_dim=self.head_dim,
                                  dtype=self.dtype), mlp_dim=f,
          layer_norm_first=self.layer_norm_first, dtype=self.dtype, name=f"layer_{i:02d}")(
              x, valid, train)
      hidden.append(x)
    if self.layer_norm_first:
      x = final_norm(x)
      hidden[-1] = x
    return x, tuple(hidden)


class PredictionHeads(nn.Module):
  """DistilHuBERT's "expand-last" heads: Linear(D -> I*N) -> GELU -> N x Linear(I -> D_t).

  [B, T, D] -> [B, N, T, D_t] (s3prl's SplitLinear: one independent I -> D_t map per target).
  """
  num_targets: int
  inter_dim: int
  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, _ = x.shape
    n = self.num_targets
    h = layers.Dense(self.inter_dim * n, axes=("embed", "mlp"), dtype=self.dtype,
                     kernel_init=layers.torch_linear_init, name="expand")(x)
    h = layers.gelu(h).reshape(b, t, n, self.inter_dim)
    bound = self.inter_dim ** -0.5  # torch Linear default, as s3prl's SplitLinear.
    w = self.param("split_kernel", nn.with_logical_partitioning(
        lambda k, s: nn.initializers.uniform(2 * bound)(k, s) - bound, (None, "mlp", "embed")),
                   (n, self.inter_dim, self.out_dim))
    bias = self.param("split_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, (None, "embed")), (n, self.out_dim))
    y = jnp.einsum("btni,nio->bnto", h, w.astype(self.dtype)) + bias[None, :, None]
    return y.astype(self.dtype)


class Student(nn.Module):
  """Audio -> student hidden states (and, with heads, predictions of teacher layers)."""
  embed_dim: int
  make_frontend: Callable[..., nn.Module]
  make_encoder: Callable[..., nn.Module]
  make_heads: Callable[..., nn.Module] | None = None
  feature_layer_norm: bool = False
  feature_grad_mult: float = 1.0
  input_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, train: bool, heads: bool = True, audio_valid=None):
    """Encodes a batch.

    Args:
      audio: [B, S] float waveform.
      valid: [B, T] bool frame padding mask.
      audio_valid: optional [B, S] bool sample padding mask (the GroupNorm CNN's statistics).
      train: dropout on.
      heads: also run the prediction heads (False: features only, as an upstream).

    Returns:
      dict with "x" [B, T, D], "hidden" tuple of L+1 [B, T, D] and, with heads, "pred"
      [B, N, T, D_t].
    """
    feats = self.make_frontend(name="feature_extractor")(audio, audio_valid)
    feats = layers.grad_multiply(feats, self.feature_grad_mult)
    if self.feature_layer_norm:
      feats = layers.layer_norm("layer_norm", self.dtype)(feats)
    x = layers.Dense(self.embed_dim, axes=("conv_out", "embed"), dtype=self.dtype,
                     kernel_init=layers.torch_linear_init, name="post_extract_proj")(feats)
    x = nn.Dropout(self.input_dropout_rate)(x, deterministic=not train)
    x = nn.with_logical_constraint(x, ("act_batch", "act_time", "act_embed"))
    x, hidden = self.make_encoder(name="encoder")(x, valid=valid, train=train)
    out = dict(x=x, hidden=hidden)
    if heads and self.make_heads is not None:
      out["pred"] = self.make_heads(name="heads")(x)
    return out


def subnet_of(config):
  """The `Subnet` in `config.student.subnet`, or None for a plain encoder-config student."""
  sub = config.student.get("subnet", None)
  if not sub or not sub.get("heads", None):
    return None
  return Subnet(sub["embed_dim"], tuple(sub["heads"]), tuple(sub["ffn_dims"]),
                sub.get("head_dim", HEAD_DIM))


def student_from_config(config, *, subnet=None, num_targets=None, target_dim=None):
  """The student module of a distillation config.

  Args:
    config: sections `model` (frontend, mixer, dropouts, size `variant`) and `student`
      (feature_layer_norm, head_inter_dim, subnet) and `distill` (target_layers).
    subnet: a `Subnet` overriding the size (a LightHuBERT subnet); default `subnet_of(config)`.
    num_targets, target_dim: heads N and their width D_t (default: the config's target layers
      and `distill.target_dim`); num_targets=0 builds no heads.

  Returns:
    A `Student` (unbound).
  """
  m, s = config.model, config.student
  subnet = subnet_of(config) if subnet is None else subnet
  base = wav2vec2_model.speech_encoder_from_config(m).keywords
  dtype = jnp.dtype(m.dtype)
  if subnet is None:
    make_encoder, embed_dim = base["make_encoder"], base["embed_dim"]
  else:
    enc = base["make_encoder"].keywords
    make_encoder = functools.partial(
        SubnetEncoder, heads=subnet.heads, ffn_dims=subnet.ffn_dims, head_dim=subnet.head_dim,
        pos_conv_kernel=enc["pos_conv_kernel"], pos_conv_groups=enc["pos_conv_groups"],
        layer_norm_first=m.layer_norm_first, dtype=dtype)
    embed_dim = subnet.embed_dim
  n = len(config.distill.target_layers) if num_targets is None else num_targets
  d_t = config.distill.target_dim if target_dim is None else target_dim
  make_heads = None
  if n:
    make_heads = functools.partial(PredictionHeads, num_targets=n,
                                   inter_dim=s.head_inter_dim or d_t, out_dim=d_t, dtype=dtype)
  return Student(embed_dim=embed_dim, make_frontend=base["make_frontend"],
                 make_encoder=make_encoder, make_heads=make_heads,
                 feature_layer_norm=s.feature_layer_norm,
                 feature_grad_mult=base["feature_grad_mult"],
                 input_dropout_rate=base["input_dropout_rate"], dtype=dtype)
