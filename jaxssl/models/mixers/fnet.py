"""FNet: Fourier token mixing, with padding handled by a per-utterance DFT (Bluestein).

Lee-Thorp et al., "FNet: Mixing Tokens with Fourier Transforms" (NAACL 2022),
https://arxiv.org/abs/2105.03824 . The mixer has no parameters: y = Re(F_T X F_D), a DFT over
the hidden dimension then over time. Plain FNet transforms the padded length T, so an utterance's
output depends on how much padding follows it and, unless padded frames are zeroed, on their
content. Documented choice here (`padding="exact"`, the default): every utterance is transformed
over its own length L (the number of `valid` frames, which must be right padding: a prefix of
True, as the data pipeline makes it). That is the output FNet gives the unpadded utterance, so
real frames are padding invariant. A length-L DFT inside a static length-T array is Bluestein's
chirp-z algorithm: kn = (k^2 + n^2 - (k-n)^2) / 2 turns it into a convolution with a per-row
chirp, computed with FFTs of a fixed size >= 2T - 1, about 3x the FFTs of `padding="zeros"`
(padded frames zeroed, DFT over T: cheaper, not padding invariant). With `norm="ortho"` (the
default) the transform is unitary, scaled by 1/sqrt(L D), so the mixer keeps the residual
stream's scale in pre-LN stacks; `norm="backward"` is the paper's unscaled sum.
Cost: O(T D (log T + log D)) time, no parameters.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

PADDINGS = ("exact", "zeros")
NORMS = ("ortho", "backward")
# The chirp phase is exact in int32 while (T - 1)^2 < 2^31.
MAX_EXACT_FRAMES = 46_340


def fft_len(n: int) -> int:
  """The smallest 2^a 3^b 5^c >= n: FFT sizes with small factors are the fast ones."""
  best = 1 << max(0, (n - 1).bit_length())
  p5 = 1
  while p5 < 2 * n:
    p35 = p5
    while p35 < 2 * n:
      p = p35
      while p < n:
        p *= 2
      best = min(best, p)
      p35 *= 3
    p5 *= 5
  return best


def _chirp(m, lengths):
  """exp(-i pi m^2 / L) per row. m: [M] int32 >= 0; lengths: [B] int32 >= 1 -> [B, M] complex64.

  The phase is reduced mod 2 pi in integers first ((m mod 2L)^2 mod 2L), since float32 holds
  pi m^2 / L for m in the thousands only to ~1e-3 rad.
  """
  two_l = 2 * lengths[:, None]
  r = m[None, :] % two_l
  phase = jnp.pi * ((r * r) % two_l).astype(jnp.float32) / lengths[:, None].astype(jnp.float32)
  return jnp.exp(-1j * phase).astype(jnp.complex64)


def dft_per_row(y, lengths):
  """Each row's DFT over its own length, by Bluestein's algorithm.

  Args:
    y: [B, T, C] complex; entries at t >= lengths[b] must be zero.
    lengths: [B] int, 1 <= lengths[b] <= T.

  Returns:
    [B, T, C] complex64: out[b, k] = sum_{n < L_b} y[b, n] exp(-2 pi i k n / L_b) for k < L_b;
    entries at k >= L_b are not meaningful.
  """
  _, t, _ = y.shape
  n = fft_len(2 * t - 1)
  lengths = lengths.astype(jnp.int32)
  c = _chirp(jnp.arange(t, dtype=jnp.int32), lengths)               # [B, T]
  # The kernel conj(chirp)(m) for lags m in (-T, T), stored circularly (the chirp is even in m).
  j = jnp.arange(n, dtype=jnp.int32)
  lag = jnp.where(j < t, j, n - j)
  kernel = jnp.where((j < t) | (j > n - t), jnp.conj(_chirp(lag, lengths)), 0)  # [B, n]
  a = jnp.fft.fft(y.astype(jnp.complex64) * c[..., None], n=n, axis=1)
  conv = jnp.fft.ifft(a * jnp.fft.fft(kernel, axis=1)[..., None], axis=1)[:, :t]
  return conv * c[..., None]


class FourierMixer(nn.Module):
  """Every mixer: __call__(x [B, T, D], *, valid [B, T] bool, train) -> [B, T, D].

  Attributes:
    padding: "exact" (each utterance transformed over its own length; padding invariant) or
      "zeros" (padded frames zeroed, transform over the padded length T).
    norm: "ortho" (divide by sqrt(L D)) or "backward" (no scaling, as in the paper).
    dtype: output dtype; the transforms run in float32 / complex64.
  """
  padding: str = "exact"
  norm: str = "ortho"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    del train  # No parameters, no dropout.
    if self.padding not in PADDINGS:
      raise ValueError(f"mixer.padding={self.padding!r}; choose from {PADDINGS}.")
    if self.norm not in NORMS:
      raise ValueError(f"mixer.norm={self.norm!r}; choose from {NORMS}.")
    _, t, d = x.shape
    # Zeroing padded frames first: without it their content leaks into every output frame.
    x = jnp.where(valid[..., None], x.astype(jnp.float32), 0.0)
    y = jnp.fft.fft(x, axis=-1)                                      # Hidden dimension.
    if self.padding == "exact":
      if t > MAX_EXACT_FRAMES:
        raise ValueError(f"FNet padding='exact' takes at most {MAX_EXACT_FRAMES} frames, got {t}.")
      lengths = jnp.maximum(jnp.sum(valid, axis=-1), 1)            # [B]
      z = dft_per_row(y, lengths)
    else:
      lengths = jnp.full(x.shape[:1], t)
      z = jnp.fft.fft(y, axis=1)
    out = z.real
    if self.norm == "ortho":
      out = out * jnp.sqrt(1.0 / (lengths.astype(jnp.float32) * d))[:, None, None]
    return jnp.where(valid[..., None], out, 0.0).astype(self.dtype)
