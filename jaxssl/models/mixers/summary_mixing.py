"""SummaryMixing: a linear-time token mixer from a per-frame local branch and one mean summary.

Parcollet et al., "SummaryMixing: A Linear-Complexity Alternative to Self-Attention for Speech
Recognition and Understanding" (Interspeech 2024), https://arxiv.org/abs/2307.07421 , used for
wav2vec 2.0 pretraining by Zhang et al. 2024, https://arxiv.org/abs/2407.13377 . The paper's
"SummaryMixing" mode, written from its equations (the reference code is CC BY-NC):

  f_t = LN(f(x_t))                                  local branch, per frame
  s̄   = LN(Σ_t m_t s(x_t) / Σ_t m_t)                 summary: masked mean over real frames m
  y_t = c([f_t ; s̄])                                combiner, with dropout on the concat

f and s are MLPs (Linear + GELU per layer, `hidden_dims` then the model width) whose linear maps
may be split into `num_heads` block-diagonal parts (the reference's n_split); c is one
Linear + GELU back to the model width. Linear biases start at zero. Padding enters only through
m, so outputs on real frames do not depend on how much padding follows.
Cost: O(T D^2) time and O(T D) memory, against attention's O(T^2 D).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import layers


class BlockDense(nn.Module):
  """A Linear map split into `num_blocks` parallel blocks (block-diagonal). [..., Din] -> [..., F].

  With one block it is an ordinary Dense layer. Kernels start as PyTorch's Linear default,
  U(+-1/sqrt(fan_in)) with the fan-in of one block, and biases at zero.
  """
  features: int
  num_blocks: int = 1
  axes: Sequence[str | None] = ("embed", "mlp")
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    din, n = x.shape[-1], self.num_blocks
    if din % n or self.features % n:
      raise ValueError(f"mixer.num_heads={n} must divide the input width {din} and the output "
                       f"width {self.features} of {self.name!r}.")
    kernel = self.param("kernel", nn.with_logical_partitioning(
        layers.torch_linear_init, (None,) + tuple(self.axes)), (n, din // n, self.features // n))
    bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros, (None, self.axes[-1])), (n, self.features // n))
    xs = x.astype(self.dtype).reshape(x.shape[:-1] + (n, din // n))
    y = jnp.einsum("...nf,nfh->...nh", xs, kernel.astype(self.dtype)) + bias.astype(self.dtype)
    return y.reshape(x.shape[:-1] + (self.features,))


class MLP(nn.Module):
  """(BlockDense -> GELU) for each width in `dims`. [..., Din] -> [..., dims[-1]]."""
  dims: Sequence[int]
  num_blocks: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    last = len(self.dims) - 1
    for i, width in enumerate(self.dims):
      # Inner widths are tensor-sharded like an FFN's; a mesh axis may appear once per kernel.
      axes = ("embed" if i == 0 else "mlp", "embed" if i == last else "mlp")
      axes = ("mlp", None) if axes == ("mlp", "mlp") else axes
      x = layers.gelu(BlockDense(width, self.num_blocks, axes, self.dtype, name=f"linear_{i}")(x))
    return x


class SummaryMixing(nn.Module):
  """Every mixer: __call__(x [B, T, D], *, valid [B, T] bool, train) -> [B, T, D].

  Attributes:
    num_heads: block-diagonal splits of the local and summary MLPs (the reference's n_split,
      set to the Transformer's head count there); 1 gives dense layers.
    hidden_dims: hidden widths of the local and summary MLPs; () means one hidden layer of the
      model width, as in the wav2vec 2.0 recipe (local_proj_hid_dim = summary_hid_dim = [D]).
    dropout_rate: dropout on the concatenation [f_t ; s̄] in training (0.1 in the paper).
    dtype: compute dtype.
  """
  num_heads: int = 1
  hidden_dims: Sequence[int] = ()
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train: bool):
    d = x.shape[-1]
    dims = tuple(self.hidden_dims or (d,)) + (d,)
    m = valid[..., None].astype(self.dtype)                        # [B, T, 1]
    local = MLP(dims, self.num_heads, self.dtype, name="local_proj")(x) * m
    local = layers.layer_norm("local_norm", self.dtype)(local)    # f_t: [B, T, D]
    summary = MLP(dims, self.num_heads, self.dtype, name="summary_proj")(x) * m
    # The mean over real frames only; a row with no real frame gets a zero sum, not a NaN.
    count = jnp.maximum(jnp.sum(m, axis=1), 1.0)                   # [B, 1]
    summary = jnp.sum(summary.astype(jnp.float32), axis=1) / count
    summary = layers.layer_norm("summary_norm", self.dtype)(summary.astype(self.dtype))  # [B, D]

    kernel = self.param("merge_kernel", nn.with_logical_partitioning(
        layers.torch_linear_init, ("mlp", "embed")), (2 * d, d))
    bias = self.param("merge_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, ("embed",)), (d,))
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    if train and self.dropout_rate > 0.0:
      # The paper's dropout acts on every element of the broadcast concat, so build it.
      cat = jnp.concatenate([local, jnp.broadcast_to(summary[:, None], local.shape)], axis=-1)
      cat = nn.Dropout(self.dropout_rate)(cat, deterministic=False)
      y = cat @ kernel + bias
    else:
      # Same map without the [B, T, 2D] concat: the summary's half is computed once per row.
      y = local @ kernel[:d] + (summary @ kernel[d:] + bias)[:, None]
    return layers.gelu(y)
