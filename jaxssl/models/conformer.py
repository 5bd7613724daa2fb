"""The Conformer block: macaron FFNs around a token mixer and a convolution module.

Gulati et al. 2020, "Conformer: Convolution-augmented Transformer for Speech Recognition",
https://arxiv.org/abs/2005.08100 , as SpeechBrain implements it for its BEST-RQ encoder
(speechbrain/lobes/models/transformer/Conformer.py, commit 9c826ef of 2026-04-03; the recipe is
recipes/LibriSpeech/self-supervised-learning/BEST-RQ/hparams/BEST-RQ.yaml). One layer
(`ConformerEncoderLayer.forward`, Conformer.py L475-499), with LN every LayerNorm:

  h = x + 0.5 * Drop(FFN1(LN(x)))                 ffn_module1 = LN, FFN, Dropout (L425-434, L479)
  h = h + Mixer(LN(h))                            norm1, mha_layer, + skip (L481-492)
  h = h + Conv(h)                                 convolution_module (L494-496)
  y = LN(h + 0.5 * Drop(FFN2(LN(h))))             ffn_module2 then norm2 (L436-447, L498)

  FFN(x)  = W2 Drop(act(W1 x + b1)) + b2          PositionalwiseFeedForward (nnet/attention.py
                                                  L931-936: Linear, act, Dropout, Linear)
  Conv(x) = Drop(W_o act(LN(DW_k(GLU(W_p LN(x))))) + b_o), zero on padded frames
            W_p: pointwise conv d -> 2d with bias, GLU over channels (a * sigmoid(b)), DW_k:
            depthwise conv of kernel k (31) with bias and 'same' zero padding, then LN (the
            BatchNorm of the paper replaced by a LayerNorm, L146-157), act, Linear d -> d,
            Dropout (ConvolutionModule, L105-157 and L314-330).

Details checked in that code:
- act is the layer's `activation` for both FFNs and the conv module (L425-444, L421-423):
  Swish (SiLU) by default, `conformer_activation: GELU` in BEST-RQ.yaml.
- Kernel 31: the default of TransformerASR / ConformerEncoder, which BEST-RQ.yaml keeps.
- There is no dropout on the attention output: `self.drop` (L449) is never used in forward; the
  attention's own dropout is on its probabilities (here the mixer's, e.g. mha's
  attention_dropout_rate). Every other dropout is SpeechBrain's single `dropout` (0.1 in
  BEST-RQ); here the one inside the FFN is `activation_dropout_rate`, the others `dropout_rate`.
- LayerNorm eps: 1e-5 everywhere in a layer (torch's and sb's LayerNorm default); the encoder's
  final LayerNorm after the last layer has eps 1e-6 (ConformerEncoder.norm, L700, L774); see
  `encoder.Encoder`, which also adds the final LN and keeps LayerDrop (L749-769) for this block.
- Padding: SpeechBrain zeroes only the conv module's *output* on padded frames (L327-328), so
  the depthwise conv of a padded batch reads the padded frames' values into the last k // 2 real
  frames. Here the GLU output is also zeroed on padded frames before the depthwise conv, which
  makes every real frame equal to SpeechBrain's on the unpadded utterance (its zero 'same'
  padding), whatever the padded length.
- The self-attention is any token mixer of `models.mixers` (BEST-RQ uses RelPosMHAXL, the
  Transformer-XL relative attention; jaxssl's `mha` relies on the encoder's conv positional
  embedding instead).

The depthwise conv is a sum of k shifted, scaled copies of the input rather than a grouped
`lax.conv` with one group per channel: the same values, and on CPU its forward + backward is
~14x faster (XLA's kernel gradient of a depthwise conv is slow on CPU, see
`encoder.grouped_conv1d`).
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import layers

ACTIVATIONS = {"swish": nn.silu, "gelu": layers.gelu}


def activation_fn(name):
  """The activation `name` ("swish" = SiLU, "gelu" = exact erf GELU)."""
  if name not in ACTIVATIONS:
    raise ValueError(f"model.conformer.activation={name!r}; choose from {sorted(ACTIVATIONS)}.")
  return ACTIVATIONS[name]


def depthwise_conv1d(x, kernel):
  """y[b, t, c] = sum_j x[b, t + j - k // 2, c] kernel[j, c], zeros outside. [B,T,C],[k,C].

  The k products are summed in float32 (bf16 inputs too), then cast back to x's dtype.
  """
  k, t = kernel.shape[0], x.shape[1]
  if k % 2 == 0:
    raise ValueError(f"model.conformer.kernel_size={k} must be odd ('same' padding).")
  xp = jnp.pad(x, ((0, 0), (k // 2, k // 2), (0, 0))).astype(jnp.float32)
  kernel = kernel.astype(jnp.float32)
  return sum(xp[:, j:j + t] * kernel[j] for j in range(k)).astype(x.dtype)


class FeedForward(nn.Module):
  """fc1 -> act -> dropout -> fc2. [B, T, D] -> [B, T, D] (SpeechBrain PositionalwiseFeedForward).

  The names and axes of `layers.FeedForward`; only the activation differs.
  """
  mlp_dim: int
  activation: str = "swish"
  activation_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    h = layers.Dense(self.mlp_dim, axes=("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
    h = nn.with_logical_constraint(activation_fn(self.activation)(h),
                                   ("act_batch", "act_time", "act_mlp"))
    h = nn.Dropout(self.activation_dropout_rate)(h, deterministic=not train)
    return layers.Dense(x.shape[-1], axes=("mlp", "embed"), dtype=self.dtype, name="fc2")(h)


class ConvolutionModule(nn.Module):
  """LN -> pointwise d->2d -> GLU -> depthwise k -> LN -> act -> Linear -> dropout, 0 on padding.

  [B, T, D], valid [B, T] -> [B, T, D]. Padded frames are zeroed before the depthwise conv, so
  real frames never read them (see the module docstring).
  """
  kernel_size: int = 31
  activation: str = "swish"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    d = x.shape[-1]
    mask = valid[..., None]
    h = layers.layer_norm("layer_norm", self.dtype)(x)
    h = layers.Dense(2 * d, axes=("embed", "mlp"), dtype=self.dtype, name="pointwise_in")(h)
    h = h[..., :d] * jax.nn.sigmoid(h[..., d:])  # torch GLU(dim=channels): first half gated.
    h = jnp.where(mask, h, jnp.zeros((), h.dtype))
    h = nn.with_logical_constraint(h, ("act_batch", "act_time", "act_mlp"))
    # torch Conv1d's default init: U(+-1/sqrt(fan_in)), fan_in = k for one channel per group.
    kernel = self.param("depthwise_kernel", nn.with_logical_partitioning(
        layers.torch_linear_init, ("conv_kernel", "conv_out")), (self.kernel_size, d))
    bias = self.param("depthwise_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, ("conv_out",)), (d,))
    h = depthwise_conv1d(h, kernel.astype(self.dtype)) + bias.astype(self.dtype)
    h = layers.layer_norm("conv_layer_norm", self.dtype)(h)
    h = activation_fn(self.activation)(h)
    h = layers.Dense(d, axes=("mlp", "embed"), dtype=self.dtype, name="pointwise_out")(h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return jnp.where(mask, h, jnp.zeros((), h.dtype))


class ConformerBlock(nn.Module):
  """One pre-norm Conformer layer around an arbitrary token mixer. [B, T, D] -> [B, T, D].

  The call contract of `encoder.EncoderBlock` ((x, valid, train) -> (x, x), LayerDrop inside),
  so `encoder.Encoder` scans, remats and LayerDrops it the same way.
  """
  mixer: Callable[..., nn.Module]
  mlp_dim: int
  kernel_size: int = 31
  activation: str = "swish"
  dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  layerdrop_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, valid, train: bool):
    x_in = x
    drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=not train)

    def ffn(name, h):
      h = layers.layer_norm(f"{name}_layer_norm", self.dtype)(h)
      return drop(FeedForward(self.mlp_dim, self.activation, self.activation_dropout_rate,
                              self.dtype, name=name)(h, train=train))

    x = x + 0.5 * ffn("ffn1", x)
    mixed = self.mixer(name="self_attn")(
        layers.layer_norm("self_attn_layer_norm", self.dtype)(x), valid=valid, train=train)
    x = x + mixed  # No dropout here (SpeechBrain's unused `self.drop`).
    x = x + ConvolutionModule(self.kernel_size, self.activation, self.dropout_rate, self.dtype,
                              name="conv_module")(x, valid=valid, train=train)
    x = layers.layer_norm("final_layer_norm", self.dtype)(x + 0.5 * ffn("ffn2", x))
    x = nn.with_logical_constraint(x, ("act_batch", "act_time", "act_embed"))
    if train and self.layerdrop_rate > 0.0:
      # As EncoderBlock: computed and discarded when dropped (static shapes).
      keep = jax.random.uniform(self.make_rng("layerdrop")) >= self.layerdrop_rate
      x = jnp.where(keep, x, x_in)
    return x, x


CONFIG_DEFAULTS = {"kernel_size": 31, "activation": "swish"}


def encoder_kwargs(model_cfg) -> dict:
  """`encoder.Encoder`'s block fields from a config's `model` section.

  `model.block` is "transformer" when absent (configs saved before it existed); "conformer"
  also reads `model.conformer` (kernel_size, activation; missing fields take CONFIG_DEFAULTS).
  """
  block = model_cfg.get("block", "transformer")
  conf = dict(model_cfg.get("conformer", None) or {})
  unknown = sorted(set(conf) - set(CONFIG_DEFAULTS))
  if unknown:
    raise ValueError(f"model.conformer.{unknown[0]} is not a Conformer field; valid: "
                     f"{sorted(CONFIG_DEFAULTS)}.")
  conf = CONFIG_DEFAULTS | conf
  activation_fn(conf["activation"])  # Fails early, naming the field.
  return dict(block=block, conformer_kernel_size=int(conf["kernel_size"]),
              conformer_activation=conf["activation"])
