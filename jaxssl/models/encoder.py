"""The context network: convolutional positional embedding + a stack of Transformer blocks.

wav2vec 2.0 (https://arxiv.org/abs/2006.11477) / HuBERT encoder, fairseq TransformerEncoder:
- post-LN (BASE, `layer_norm_first=False`): x + pos_conv(x) -> LN -> dropout -> blocks
  x = LN(x + Drop(Mixer(x))); x = LN(x + Drop(FFN(x))).
- pre-LN (LARGE, `layer_norm_first=True`): x + pos_conv(x) -> dropout -> blocks
  x = x + Drop(Mixer(LN(x))); x = x + Drop(FFN(LN(x))) -> final LN.
LayerDrop (Fan et al. 2019) skips whole blocks in training. The block's token mixer is any module
from `models.mixers`; `nn.scan` over blocks and rematerialisation are switches.
`block="conformer"` stacks `conformer.ConformerBlock`s instead (Gulati et al. 2020, SpeechBrain's
pre-norm layer): always pre-LN whatever `layer_norm_first` says (SpeechBrain asserts
normalize_before for the Conformer, lobes/models/transformer/Transformer.py), x + pos_conv(x) ->
dropout -> blocks -> final LN with eps 1e-6 (ConformerEncoder.norm).

data2vec 2.0 options (Baevski et al. 2022, arXiv 2212.07525; fairseq
examples/data2vec/models/modalities/{audio,base,modules}.py), all off by default:
`pos_conv_layers > 0` replaces the weight-normed conv by that many plain grouped convs, each
followed by a LayerNorm without affine parameters and GELU (`StackedPositionalConv`, AudioEncoder's
positional_encoder); `alibi_heads > 0` adds an ALiBi bias -slope_h * |i - j| times a learned,
non-negative per-head scale shared by all blocks (base.py get_alibi / alibi_scale) to every
block's attention; `ffn_targets` makes hidden[i] block i's FFN output before its residual and
LayerNorm (AltBlock's layer result with ffn_targets=True); `keep` in `__call__` drops frames
after the positional conv (the student encodes only its unmasked frames).
"""
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import conformer
from jaxssl.models import layers

BLOCKS = ("transformer", "conformer")


class PositionalConv(nn.Module):
  """Grouped conv positional embedding with weight norm, 'same' padding, GELU. [B,T,D]->[B,T,D].

  Weight norm as torch's `weight_norm(conv, dim=2)`: one gain per kernel tap, the norm taken over
  the (in, out) channels of that tap. An even kernel pads one frame too many, which fairseq's
  SamePad removes by dropping the last output frame.
  """
  kernel_size: int = 128
  groups: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    if d % self.groups:
      raise ValueError(f"embed_dim {d} is not divisible by pos_conv_groups {self.groups}.")
    std = (4.0 / (self.kernel_size * d)) ** 0.5
    v = self.param("weight_v", nn.with_logical_partitioning(
        nn.initializers.normal(std), ("conv_kernel", None, "conv_out")),
                   (self.kernel_size, d // self.groups, d))
    # The gain starts at ||v|| so that the initial weight equals v, as torch's weight_norm does.
    g = self.param("weight_g", nn.with_logical_partitioning(
        lambda _: jnp.linalg.norm(v, axis=(1, 2), keepdims=True), ("conv_kernel", None, None)))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                      (d,))
    kernel = g * v / jnp.linalg.norm(v, axis=(1, 2), keepdims=True)
    y = grouped_conv1d(x.astype(self.dtype), kernel.astype(self.dtype), self.groups)
    if self.kernel_size % 2 == 0:
      y = y[:, :-1]
    return layers.gelu(y + bias.astype(self.dtype))


def _grouped_conv(x, kernel, groups):
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1,), padding=[(pad, pad)],
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def grouped_conv1d(x, kernel, groups):
  """Grouped 1-D conv with k // 2 zero padding on each side. [B,T,D], [k,D/G,D] -> [B,T',D].

  Same values and gradients as `lax.conv_general_dilated(..., feature_group_count=groups)`; only
  the kernel gradient is computed differently. XLA rewrites a grouped conv's kernel gradient as
  a batch-grouped, lhs-dilated convolution that runs at ~1 GFLOP/s on CPU (4.4 s of a 6.7 s BASE
  step; experiments/benchmarks/NOTES.md). Here it is a plain grouped conv over the time axis
  instead, which XLA runs as fast as the forward conv.
  """
  return _grouped_conv(x, kernel, groups)


def _grouped_conv1d_fwd(x, kernel, groups):
  return _grouped_conv(x, kernel, groups), (x, kernel)


def _grouped_conv1d_bwd(groups, residuals, grad):
  x, kernel = residuals
  (k, c_in, d), (b, t_out) = kernel.shape, grad.shape[:2]
  _, input_vjp = jax.vjp(lambda x_: _grouped_conv(x_, kernel, groups), x)
  (dx,) = input_vjp(grad)  # The transposed conv is another fast grouped conv.
  pad = k // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
  s = xp.shape[1]
  # dkernel[j, i, (g, o)] = sum_{b,t} xp[b, t + j, (g, i)] grad[b, t, (g, o)] is a grouped conv
  # whose kernel is `grad` (spatial t, in b, out o) sliding over xp (batch i, spatial t + j,
  # features (g, b)): lhs [i, s, (g, b)], rhs [t, b, (g, o)] -> [i, j, (g, o)].
  lhs = xp.reshape(b, s, groups, c_in).transpose(3, 1, 2, 0).reshape(c_in, s, groups * b)
  rhs = grad.reshape(b, t_out, groups, d // groups).transpose(1, 0, 2, 3).reshape(
      t_out, b, d)
  dkernel = jax.lax.conv_general_dilated(
      lhs, rhs, window_strides=(1,), padding="VALID", dimension_numbers=("NWC", "WIO", "NWC"),
      feature_group_count=groups)[:, :k].transpose(1, 0, 2)
  return dx, dkernel.astype(kernel.dtype)


grouped_conv1d.defvjp(_grouped_conv1d_fwd, _grouped_conv1d_bwd)


class StackedPositionalConv(nn.Module):
  """data2vec 2.0's positional encoder: `num_layers` x (grouped conv with bias, 'same' padding,
  LayerNorm without affine, GELU). [B, T, D] -> [B, T, D] (fairseq modalities/audio.py).

  Convs keep torch's Conv1d init: U(+-1/sqrt(fan_in)) for kernel and bias, fan_in = k * D / G.
  Padded frames (`valid` False) are zeroed before every conv, so that each layer reads the zeros
  an unpadded utterance's 'same' padding gives (LayerNorm and GELU make them nonzero again):
  outputs on real frames do not depend on the padded length.
  """
  num_layers: int = 5
  kernel_size: int = 19
  groups: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, valid=None):
    d = x.shape[-1]
    if d % self.groups:
      raise ValueError(f"embed_dim {d} is not divisible by pos_conv_groups {self.groups}.")
    bound = (self.kernel_size * d // self.groups) ** -0.5
    init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                    bound)
    for i in range(self.num_layers):
      kernel = self.param(f"kernel_{i}", nn.with_logical_partitioning(
          init, ("conv_kernel", None, "conv_out")), (self.kernel_size, d // self.groups, d))
      bias = self.param(f"bias_{i}", nn.with_logical_partitioning(init, ("conv_out",)), (d,))
      if valid is not None:
        x = jnp.where(valid[..., None], x, 0.0)
      x = grouped_conv1d(x.astype(self.dtype), kernel.astype(self.dtype), self.groups)
      if self.kernel_size % 2 == 0:
        x = x[:, :-1]  # fairseq SamePad.
      x = x + bias.astype(self.dtype)
      x = nn.LayerNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=self.dtype,
                       name=f"norm_{i}")(x)
      x = layers.gelu(x)
    return x


def alibi_slopes(num_heads: int):
  """ALiBi's per-head slopes (Press et al. 2022; fairseq data2vec base.py get_slopes): the
  geometric series 2^(-8/n) ... for n a power of two, else the n' = 2^floor(log2 n) slopes
  followed by every other slope of 2n' heads."""
  def power_of_2(n):
    start = 2 ** (-(2 ** -(math.log2(n) - 3)))
    return [start * start ** i for i in range(n)]
  if math.log2(num_heads).is_integer():
    return power_of_2(num_heads)
  closest = 2 ** math.floor(math.log2(num_heads))
  return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][:num_heads - closest]


def alibi_bias(positions, slopes, scale):
  """[B, K] int frame positions, [H] slopes, [H] learned scales -> [B, H, K, K] float32 bias
  -slope_h * max(scale_h, 0) * |p_i - p_j| (fairseq clamps the learned scale at 0)."""
  dist = jnp.abs(positions[:, :, None] - positions[:, None, :]).astype(jnp.float32)
  per_head = jnp.asarray(slopes, jnp.float32) * jnp.maximum(scale.astype(jnp.float32), 0.0)
  return -per_head[None, :, None, None] * dist[:, None]


class EncoderBlock(nn.Module):
  """One Transformer block around an arbitrary token mixer. [B, T, D] -> [B, T, D].

  Returns (x, layer result): the block output, or with `ffn_targets` the FFN output before the
  residual and LayerNorm (data2vec 2.0's targets). `bias`: an attention bias for the mixer.
  """
  mixer: Callable[..., nn.Module]
  mlp_dim: int
  layer_norm_first: bool = False
  dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  layerdrop_rate: float = 0.0
  ffn_targets: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, valid, train: bool, bias=None):
    x_in = x
    drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    norm_mix = layers.layer_norm("self_attn_layer_norm", self.dtype)
    norm_ffn = layers.layer_norm("final_layer_norm", self.dtype)
    mixer = self.mixer(name="self_attn")
    mix = mixer if bias is None else functools.partial(mixer, bias=bias)
    ffn_mod = layers.FeedForward(self.mlp_dim, self.activation_dropout_rate, self.dtype,
                                 name="ffn")
    ffn_out = []
    def ffn(h, train):
      ffn_out.append(ffn_mod(h, train=train))
      return ffn_out[-1]
    if self.layer_norm_first:
      x = x + drop(mix(norm_mix(x), valid=valid, train=train))
      x = x + drop(ffn(norm_ffn(x), train=train))
    else:
      x = norm_mix(x + drop(mix(x, valid=valid, train=train)))
      x = norm_ffn(x + drop(ffn(x, train=train)))
    x = nn.with_logical_constraint(x, ("act_batch", "act_time", "act_embed"))
    if train and self.layerdrop_rate > 0.0:
      # Static shapes: the block is computed and its output discarded when dropped. A lax.cond
      # would save ~layerdrop_rate of the compute but blocks XLA fusion across layers.
      keep = jax.random.uniform(self.make_rng("layerdrop")) >= self.layerdrop_rate
      x = jnp.where(keep, x, x_in)
    return x, (ffn_out[0] if self.ffn_targets else x)


class Encoder(nn.Module):
  """Positional conv + blocks. Returns (x [B,T,D], hidden: tuple of num_layers+1 [B,T,D]).

  hidden[0] is the blocks' input (after positional conv, LN in post-LN mode) and hidden[i] the
  output of block i, the s3prl upstream contract (13 hidden states for a 12-layer model).
  `block` is "transformer" (`EncoderBlock`) or "conformer" (`conformer.ConformerBlock` with
  `conformer_kernel_size` and `conformer_activation`).
  """
  num_layers: int
  mlp_dim: int
  mixer: Callable[..., nn.Module]
  pos_conv_kernel: int = 128
  pos_conv_groups: int = 16
  layer_norm_first: bool = False
  dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  layerdrop_rate: float = 0.0
  scan_layers: bool = False
  remat: bool = False
  block: str = "transformer"
  conformer_kernel_size: int = 31
  conformer_activation: str = "swish"
  pos_conv_layers: int = 0      # > 0: data2vec 2.0's StackedPositionalConv of that depth.
  alibi_heads: int = 0          # > 0: ALiBi bias with a learned per-head scale (mha only).
  ffn_targets: bool = False     # hidden[1:] are the blocks' FFN outputs (data2vec 2.0).
  dtype: Any = jnp.float32

  def _block(self):
    """(block class, its keyword arguments) of `self.block`."""
    if self.block not in BLOCKS:
      raise ValueError(f"model.block={self.block!r}; choose from {list(BLOCKS)}.")
    kw = dict(mixer=self.mixer, mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
              activation_dropout_rate=self.activation_dropout_rate,
              layerdrop_rate=self.layerdrop_rate, dtype=self.dtype)
    if self.block == "conformer":
      if self.alibi_heads or self.ffn_targets:
        raise ValueError("model.block='conformer' takes no ALiBi bias or FFN targets "
                         "(data2vec 2.0's options); use model.block='transformer'.")
      return conformer.ConformerBlock, dict(kw, kernel_size=self.conformer_kernel_size,
                                            activation=self.conformer_activation)
    return EncoderBlock, dict(kw, layer_norm_first=self.layer_norm_first,
                              ffn_targets=self.ffn_targets)

  @nn.compact
  def __call__(self, x, *, valid, train: bool, keep=None):
    """x [B, T, D], valid [B, T] bool; `keep` (optional [B, K] int): only these frames go on
    after the positional conv (and `valid`, ALiBi positions follow them); outputs are [B, K, D]."""
    block_cls, block_kw = self._block()
    pre_ln = self.layer_norm_first or self.block == "conformer"
    x = jnp.where(valid[..., None], x, 0.0)  # fairseq zeroes padded frames before the pos conv.
    if self.pos_conv_layers:
      pos = StackedPositionalConv(self.pos_conv_layers, self.pos_conv_kernel,
                                  self.pos_conv_groups, self.dtype, name="pos_conv")(x, valid)
    else:
      pos = PositionalConv(self.pos_conv_kernel, self.pos_conv_groups, self.dtype,
                           name="pos_conv")(x)
    x = x + pos
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), valid.shape)
    if keep is not None:
      x = jnp.take_along_axis(x, keep[..., None], axis=1)
      valid = jnp.take_along_axis(valid, keep, axis=1)
      positions = keep
    bias = None
    if self.alibi_heads:
      scale = self.param("alibi_scale", nn.with_logical_partitioning(
          nn.initializers.ones, (None,)), (self.alibi_heads,))
      bias = alibi_bias(positions, alibi_slopes(self.alibi_heads), scale)
    final_norm = layers.layer_norm("layer_norm", self.dtype,
                                   epsilon=1e-6 if self.block == "conformer" else 1e-5)
    if not pre_ln:
      x = final_norm(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    hidden = [x]

    if self.remat:
      block_cls = nn.remat(block_cls, static_argnums=(3,))
    block = functools.partial(block_cls, **block_kw)
    args = (x, valid, train) if bias is None else (x, valid, train, bias)
    if self.scan_layers:
      stack = nn.scan(
          block_cls, variable_axes={"params": 0}, in_axes=(nn.broadcast,) * (len(args) - 1),
          split_rngs={"params": True, "dropout": True, "layerdrop": True},
          length=self.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      x, ys = stack(**block.keywords, name="layers")(*args)
      hidden.extend(ys[i] for i in range(self.num_layers))
    else:
      for i in range(self.num_layers):
        x, y = block(name=f"layer_{i:02d}")(x, *args[1:])
        hidden.append(y)
    if pre_ln and not self.ffn_targets:
      x = final_norm(x)
      hidden[-1] = x  # As transformers reports it: the last hidden state is after the final LN.
    return x, tuple(hidden)


def scan_to_loop(params, num_layers: int):
  """Encoder params with scanned blocks ("layers", stacked on axis 0) -> "layer_00", ...

  Works on any params dict that contains the Encoder's; other entries pass through.
  """
  if not isinstance(params, dict):
    return params
  out = {}
  for k, v in params.items():
    if k == "layers":
      for i in range(num_layers):
        out[f"layer_{i:02d}"] = jax.tree.map(lambda a, i=i: a[i], v)
    else:
      out[k] = scan_to_loop(v, num_layers)
  return out


def loop_to_scan(params, num_layers: int):
  """The inverse of `scan_to_loop`: "layer_00" ... "layer_{L-1}" -> stacked "layers"."""
  if not isinstance(params, dict):
    return params
  names = [f"layer_{i:02d}" for i in range(num_layers)]
  out = {k: loop_to_scan(v, num_layers) for k, v in params.items() if k not in names}
  if names[0] in params:
    out["layers"] = jax.tree.map(lambda *a: jnp.stack(a), *[params[n] for n in names])
  return out
