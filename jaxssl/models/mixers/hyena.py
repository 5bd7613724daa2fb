"""Hyena: gated implicit long convolutions via FFT, made bidirectional for speech encoders.

Poli et al., "Hyena Hierarchy: Towards Larger Convolutional Language Models" (ICML 2023),
https://arxiv.org/abs/2302.10866 , after HazyResearch/safari `src/models/sequence/hyena.py`:
in_proj D -> (order+1) D, a short depthwise conv (3 taps), split into gates x_0..x_{order-1} and
v, then for each remaining gate: v = long_conv(v * x_i, h_o) + bias_o * v, and
y = out_proj(v * x_0). The long filter h is implicit: an MLP of a positional embedding
z(t) = [t, Re, Im exp(-i f w t)] (a parameter initialised to that closed form, one row per lag
up to `max_frames`, as safari's trainable PositionalEmbedding; Linear + Sin with a shared
trainable frequency, then
`num_filter_layers` x (Linear + Sin), then Linear without bias), times a per-channel decay
window exp(-|t| |delta_c|) (+ shift). The LM operator is causal; a speech encoder sees the whole
utterance, so here (as in ConfHyena, https://arxiv.org/abs/2402.13208) the filter is two-sided:
the same MLP is evaluated at signed lags -(T-1)..T-1 (the t and sine inputs are odd in the lag,
so the learned filter can be asymmetric) and the short conv is centred.
Padding: projected frames are zeroed outside `valid` before and after the short conv, and
positions are normalised by the fixed `max_frames` (not by T), so the filter at a given lag does
not depend on the padded length: outputs on real frames are padding invariant.
Positions beyond `max_frames` extrapolate the same functions. Cost: O(T D log T) time.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxssl.models import layers
from jaxssl.models.mixers import fnet


def two_sided_fft_conv(u, k):
  """Linear (non-circular) convolution over time with a two-sided filter, via real FFTs.

  Args:
    u: [B, T, C] real input.
    k: [2T - 1, C] filter taps for lags -(T-1), ..., 0, ..., T-1.

  Returns:
    [B, T, C] float32: y[b, t, c] = sum_s k[t - s + T - 1, c] u[b, s, c].
  """
  _, t, c = u.shape
  if k.shape != (2 * t - 1, c):
    raise ValueError(f"filter shape {k.shape} does not match {(2 * t - 1, c)} for T={t}.")
  n = fnet.fft_len(2 * t - 1)
  # Circular layout: lags 0..T-1 first, lags -(T-1)..-1 at the end, zeros between.
  k_circ = jnp.concatenate([k[t - 1:], jnp.zeros((n - 2 * t + 1, c), k.dtype), k[:t - 1]])
  u_f = jnp.fft.rfft(u.astype(jnp.float32), n=n, axis=1)
  k_f = jnp.fft.rfft(k_circ.astype(jnp.float32), axis=0)
  return jnp.fft.irfft(u_f * k_f[None], n=n, axis=1)[:, :t]


class ImplicitFilter(nn.Module):
  """Hyena's implicit filter, at signed lags. lags: [N] int -> taps [N, channels] float32."""
  channels: int
  max_frames: int
  width: int = 64
  emb_dim: int = 33
  num_layers: int = 2
  sin_freq: float = 1.0
  fast_decay_pct: float = 0.3
  slow_decay_pct: float = 1.5
  decay_target: float = 1e-2
  shift: float = 0.0

  def positions(self, lags):
    """safari's PositionalEmbedding at signed lags: [N] -> [N, emb_dim] float32."""
    bands = (self.emb_dim - 1) // 2
    t = lags.astype(jnp.float32)[:, None] / self.max_frames            # [N, 1], in [-1, 1]
    f = jnp.asarray(np.linspace(1e-4, bands - 1, bands), jnp.float32)  # safari's band grid.
    w = 2 * np.pi * t * f                                               # [N, bands]
    return jnp.concatenate([t, jnp.cos(w), -jnp.sin(w)], axis=-1)     # [t, Re, Im e^{-ifw}]

  @nn.compact
  def __call__(self, lags):
    if self.emb_dim < 3 or self.emb_dim % 2 == 0:
      raise ValueError(f"mixer.filter_emb_dim={self.emb_dim} must be odd and >= 3.")
    # The embedding is a parameter (safari trains it, at lr 1e-5: configs/mixers), one row per
    # lag of the training length, starting at the closed form; lags beyond max_frames use the
    # closed form.
    m = self.max_frames
    table = self.param("pos_emb", nn.with_logical_partitioning(
        lambda key, shape: self.positions(jnp.arange(-(m - 1), m)), (None, None)),
        (2 * m - 1, self.emb_dim))
    inside = jnp.abs(lags) < m
    z = jnp.where(inside[:, None], table[jnp.clip(lags + m - 1, 0, 2 * m - 2)],
                  self.positions(lags))
    t = lags.astype(jnp.float32)[:, None] / m                            # [N, 1], in [-1, 1]
    # One Sin module is shared by every layer in safari, hence one frequency vector.
    freq = self.param("sin_freq", nn.with_logical_partitioning(
        nn.initializers.constant(self.sin_freq), (None,)), (self.width,))
    dense = lambda n, name, bias=True: nn.Dense(  # pylint: disable=unnecessary-lambda-assignment
        n, use_bias=bias, name=name,
        kernel_init=nn.with_logical_partitioning(layers.torch_linear_init, (None, None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))
    h = jnp.sin(freq * dense(self.width, "implicit_filter_in")(z))
    for i in range(self.num_layers):
      h = jnp.sin(freq * dense(self.width, f"implicit_filter_{i}")(h))
    h = dense(self.channels, "implicit_filter_out", bias=False)(h)     # [N, C]
    # ExponentialModulation: fixed (lr 0 in safari) per-channel decay rates.
    deltas = np.linspace(np.log(self.decay_target) / self.slow_decay_pct,
                         np.log(self.decay_target) / self.fast_decay_pct, self.channels)
    decay = jnp.exp(-jnp.abs(t) * jnp.abs(jnp.asarray(deltas, jnp.float32)))
    return h * (decay + self.shift)


class HyenaMixer(nn.Module):
  """Every mixer: __call__(x [B, T, D], *, valid [B, T] bool, train) -> [B, T, D].

  Attributes:
    max_frames: the length positions are normalised by (safari's l_max); 1000 frames = 20 s,
      about the longest pretraining crop. Longer inputs work (the filter extrapolates).
    order: depth of the gated recurrence (2 in the paper's experiments).
    filter_dim: width of the implicit filter MLP (safari's filter_order).
    filter_emb_dim: positional embedding size, odd (1 + 2 bands).
    num_filter_layers: hidden Linear + Sin layers of the filter MLP.
    short_filter_size: taps of the depthwise conv, odd (centred).
    dropout_rate: dropout on v * x_i in training.
    dtype: compute dtype of the projections; the FFT convolution runs in float32.
  """
  max_frames: int = 1000
  order: int = 2
  filter_dim: int = 64
  filter_emb_dim: int = 33
  num_filter_layers: int = 2
  short_filter_size: int = 3
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    if self.order < 2:
      raise ValueError(f"mixer.order={self.order} must be >= 2.")
    if self.short_filter_size % 2 == 0:
      raise ValueError(f"mixer.short_filter_size={self.short_filter_size} must be odd.")
    _, t, d = x.shape
    width = (self.order + 1) * d
    m = valid[..., None]
    # PyTorch's Linear init (as safari's): with BERT's N(0, 0.02) the product of three gates
    # starts ~1e-3 and the mixer barely moves.
    dense = lambda n, axes, name: layers.Dense(  # pylint: disable=unnecessary-lambda-assignment
        n, axes=axes, kernel_init=layers.torch_linear_init, dtype=self.dtype, name=name)
    u = dense(width, ("embed", "mlp"), "in_proj")(x)
    u = jnp.where(m, u, 0.0)
    # Centred depthwise conv as a sum of shifted copies (XLA's CPU convolutions are slow).
    kernel = self.param("short_filter_kernel", nn.with_logical_partitioning(
        layers.torch_linear_init, ("conv_kernel", "mlp")), (self.short_filter_size, width))
    bias = self.param("short_filter_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, ("mlp",)), (width,))
    half = self.short_filter_size // 2
    padded = jnp.pad(u, ((0, 0), (half, half), (0, 0)))
    u = sum(padded[:, i:i + t] * kernel[i].astype(u.dtype)
            for i in range(self.short_filter_size)) + bias.astype(u.dtype)
    # The conv spreads the last real frame (and the bias) into the padding: zero it again.
    u = jnp.where(m, u, 0.0)
    *gates, v = jnp.split(u, self.order + 1, axis=-1)

    lags = jnp.arange(-(t - 1), t)
    taps = ImplicitFilter(d * (self.order - 1), self.max_frames, self.filter_dim,
                          self.filter_emb_dim, self.num_filter_layers, name="filter_fn")(lags)
    skip = self.param("filter_bias", nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ("mlp",)), (d * (self.order - 1),))  # randn in safari.
    drop = nn.Dropout(self.dropout_rate)
    v = v.astype(jnp.float32)
    for o, gate in enumerate(reversed(gates[1:])):
      v = drop(v * gate.astype(jnp.float32), deterministic=not train)
      k, b = taps[:, o * d:(o + 1) * d], skip[o * d:(o + 1) * d]
      v = two_sided_fft_conv(v, k) + v * b
    y = (v * gates[0].astype(jnp.float32)).astype(self.dtype)
    return dense(d, ("mlp", "embed"), "out_proj")(y)
