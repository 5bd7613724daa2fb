"""A LightHuBERT supernet as full-size weights run under masks: any subnet, one compiled step.

Wang et al. 2022, https://arxiv.org/abs/2203.15610 ; mechanicalsea/lighthubert
(modules/scaling_*.py). A subnet is given as traced arrays (`supernet.SubnetArrays`): width n,
and per supernet layer whether it is kept, its heads and its FFN width. Every layer computes at
full size and masks what the subnet does not have, which gives exactly the reference's sliced
subnet (tests/distill/test_supernet.py):

  width      activations are zero beyond n; LayerNorms take their statistics over the first n
             channels; a Dense layer reads zeros there, so it equals its leading-slice weights;
  heads      heads h >= H_l are zeroed before the output projection (head width fixed, 64);
  FFN        the reference splits the supernet's hidden units in blocks of E (the supernet
             width) and keeps the first n units of each block up to F_l units in all (SLinear
             with splits): unit u is kept when u % E < n and (u // E) * n + u % E < F_l;
  depth      dropped layers pass their input through (the reference's depth maps);
  pos conv   the weight-normalised full kernel is sliced to [:n] outputs and [:n / G] inputs per
             group, with the same G groups (SConv1d after weight norm): channels are gathered
             into the full conv's group layout, convolved, and gathered back.

The cost is that of the full supernet whatever the subnet (measured in
experiments/benchmarks/results/lighthubert_masked.md).
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import encoder as encoder_lib
from jaxssl.models import layers
from jaxssl.models.mixers import mha


def width_mask(n, size):
  """[size] float: 1 on the first n channels."""
  return (jnp.arange(size) < n).astype(jnp.float32)


def ffn_mask(n, ffn, size, split):
  """[size] float: the FFN units a subnet of width n and FFN width `ffn` keeps (see above)."""
  u = jnp.arange(size)
  block, j = u // split, u % split
  return ((j < n) & (block * n + j < ffn)).astype(jnp.float32)


class MaskedLayerNorm(nn.Module):
  """LayerNorm over the first n channels (eps 1e-5); zero beyond. Params as `layers.layer_norm`."""

  @nn.compact
  def __call__(self, x, e, n):
    d = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (d,))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
                      (d,))
    h = x.astype(jnp.float32)
    n = jnp.asarray(n, jnp.float32)
    mean = (h * e).sum(-1, keepdims=True) / n
    var = (jnp.square((h - mean) * e)).sum(-1, keepdims=True) / n
    y = (h - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias
    return (y * e).astype(x.dtype)


class MaskedPositionalConv(nn.Module):
  """`encoder.PositionalConv` (same params) computing the reference's sliced conv of width n."""
  kernel_size: int = 128
  groups: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, e, n):
    d = x.shape[-1]
    full = d // self.groups
    std = (4.0 / (self.kernel_size * d)) ** 0.5
    v = self.param("weight_v", nn.with_logical_partitioning(
        nn.initializers.normal(std), ("conv_kernel", None, "conv_out")),
                   (self.kernel_size, full, d))
    g = self.param("weight_g", nn.with_logical_partitioning(
        lambda _: jnp.linalg.norm(v, axis=(1, 2), keepdims=True), ("conv_kernel", None, None)))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                      (d,))
    kernel = g * v / jnp.linalg.norm(v, axis=(1, 2), keepdims=True)  # Normalised, then sliced.
    size = n // self.groups                         # The subnet's channels per group.
    p = jnp.arange(d)                               # Positions in the full conv's groups...
    used = p % full < size
    channel = jnp.where(used, (p // full) * size + p % full, 0)  # ...hold these subnet channels.
    x_arr = jnp.where(used, x[..., channel], 0.0)
    taps = jnp.where(used[None, None, :] & (jnp.arange(full) < size)[None, :, None],
                     kernel[:, :, channel], 0.0)
    y = encoder_lib.grouped_conv1d(x_arr.astype(self.dtype), taps.astype(self.dtype),
                                   self.groups)
    if self.kernel_size % 2 == 0:
      y = y[:, :-1]
    c = jnp.arange(d)
    back = jnp.where(c < n, (c // jnp.maximum(size, 1)) * full + c % jnp.maximum(size, 1), 0)
    return layers.gelu(y[..., back] + bias.astype(self.dtype)) * e.astype(self.dtype)


class MaskedAttention(nn.Module):
  """`student.HeadAttention`'s params at the supernet's size; heads >= `heads` are zeroed."""
  num_heads: int
  head_dim: int = 64
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, heads, e, train: bool):
    b, t, d = x.shape
    width = self.num_heads * self.head_dim

    def project(name):
      y = layers.Dense(width, axes=("embed", "heads"), dtype=self.dtype, name=name)(x)
      return y.reshape(b, t, self.num_heads, self.head_dim)

    rate = self.attention_dropout_rate if train else 0.0
    out = mha.heads_first_attention(
        project("query"), project("key"), project("value"), valid,
        dropout_rng=self.make_rng("dropout") if rate > 0 else None, dropout_rate=rate)
    out = out * (jnp.arange(self.num_heads) < heads).astype(out.dtype)[None, None, :, None]
    y = layers.Dense(d, axes=("heads", "embed"), dtype=self.dtype,
                     name="out")(out.reshape(b, t, width))
    return y * e.astype(y.dtype)


class MaskedFeedForward(nn.Module):
  """`layers.FeedForward`'s params (fc1, fc2) with the reference's FFN unit selection."""
  mlp_dim: int
  activation_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, n, ffn, e, train: bool):
    d = x.shape[-1]
    h = layers.gelu(layers.Dense(self.mlp_dim, axes=("embed", "mlp"), dtype=self.dtype,
                                 name="fc1")(x))
    h = h * ffn_mask(n, ffn, self.mlp_dim, d).astype(h.dtype)
    h = nn.Dropout(self.activation_dropout_rate)(h, deterministic=not train)
    y = layers.Dense(d, axes=("mlp", "embed"), dtype=self.dtype, name="fc2")(h)
    return y * e.astype(y.dtype)


class MaskedBlock(nn.Module):
  """`encoder.EncoderBlock` (same params) of one subnet layer; `make_attention` and `make_ffn`
  are `MaskedAttention` / `MaskedFeedForward` constructors with their sizes."""
  make_attention: Callable[..., nn.Module]
  make_ffn: Callable[..., nn.Module]
  layer_norm_first: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, valid, e, n, heads, ffn, train: bool):
    norm_mix = MaskedLayerNorm(name="self_attn_layer_norm")
    norm_ffn = MaskedLayerNorm(name="final_layer_norm")
    attn = self.make_attention(name="self_attn")
    mlp = self.make_ffn(name="ffn")

    def drop(h):
      return nn.Dropout(self.dropout_rate)(h, deterministic=not train)

    def mix(h):
      return attn(h, valid=valid, heads=heads, e=e, train=train)

    def feed(h):
      return mlp(h, n=n, ffn=ffn, e=e, train=train)

    if self.layer_norm_first:
      x = x + drop(mix(norm_mix(x, e, n)))
      return x + drop(feed(norm_ffn(x, e, n)))
    x = norm_mix(x + drop(mix(x)), e, n)
    return norm_ffn(x + drop(feed(x)), e, n)


class MaskedEncoder(nn.Module):
  """`encoder.Encoder` (same params) running the subnet `subnet` (a `SubnetArrays`).

  Returns (x [B, T, E], hidden: tuple of num_layers + 1 [B, T, E]); a dropped layer's entry
  repeats its input. Channels >= subnet.embed_dim are zero throughout. `make_block`: a
  `MaskedBlock` constructor (`masked_encoder` builds one from sizes).
  """
  make_block: Callable[..., nn.Module]
  num_layers: int
  pos_conv: tuple = (128, 16)  # Kernel and groups of the positional conv.
  layer_norm_first: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, subnet, train: bool):
    n = subnet.embed_dim
    e = width_mask(n, x.shape[-1])
    x = jnp.where(valid[..., None], x, 0.0) * e.astype(x.dtype)
    x = x + MaskedPositionalConv(*self.pos_conv, self.dtype, name="pos_conv")(x, e, n)
    final_norm = MaskedLayerNorm(name="layer_norm")
    if not self.layer_norm_first:
      x = final_norm(x, e, n)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    hidden = [x]
    for i in range(self.num_layers):
      y = self.make_block(name=f"layer_{i:02d}")(
          x, valid=valid, e=e, n=n, heads=subnet.heads[i], ffn=subnet.ffn[i], train=train)
      x = jnp.where(subnet.keep[i], y, x)
      hidden.append(x)
    if self.layer_norm_first:
      x = final_norm(x, e, n)
      hidden[-1] = x
    return x, tuple(hidden)


def masked_encoder(*, num_layers, num_heads, head_dim, mlp_dim, pos_conv, layer_norm_first,
                   dropout_rate, attention_dropout_rate, activation_dropout_rate, dtype):
  """A `MaskedEncoder` constructor of the supernet's sizes and the recipe's dropouts."""
  block = functools.partial(
      MaskedBlock,
      make_attention=functools.partial(MaskedAttention, num_heads, head_dim,
                                       attention_dropout_rate, dtype),
      make_ffn=functools.partial(MaskedFeedForward, mlp_dim, activation_dropout_rate, dtype),
      layer_norm_first=layer_norm_first, dropout_rate=dropout_rate)
  return functools.partial(MaskedEncoder, make_block=block, num_layers=num_layers,
                           pos_conv=tuple(pos_conv), layer_norm_first=layer_norm_first,
                           dropout_rate=dropout_rate, dtype=dtype)
