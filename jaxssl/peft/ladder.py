"""Ladder side-tuning (LST): a thin side network on the frozen backbone's hidden states.

Sung, Cho & Bansal, NeurIPS 2022 (https://arxiv.org/abs/2206.06522), docs/reference.md: the
backbone runs forward only; its hidden states are detached (`stop_gradient`, so no activation is
kept for a backward pass through it: the source of LST's ~69% training-memory saving) and reach
a side network of width D / `reduction` through "ladder" connections, one linear down-projection
per backbone layer, mixed with the side stream by a learned gate:

  s_0 = down_0(h_0)
  s_i = Block_i(μ_i · s_{i-1} + (1 - μ_i) · down_i(h_i)),   μ_i = sigmoid(α_i / T), α_i = 0
  out = up(LN(s_L))  -> [B, T, D], the task head's input

with T = 0.1 (the paper's gate temperature) and Block_i a Transformer block of the backbone's
kind (pre- or post-LN, multi-head attention) at the side width. Not reproduced: LST's
initialisation of the side network from a structurally pruned (Fisher-ranked) backbone copy and
its optional dropping of side layers; the side network here starts from a random init.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import encoder as encoder_lib
from jaxssl.models import layers
from jaxssl.models.mixers import mha

GATE_TEMPERATURE = 0.1


class LadderSide(nn.Module):
  """Side network: hidden states (L+1 of [B, T, D]) -> [B, T, D].

  Attributes:
    reduction: side width = D / reduction (LST's r, 8).
    num_heads: attention heads of the side blocks (side width must divide by it).
    layer_norm_first: pre-LN blocks (as the backbone).
    dropout_rate / activation_dropout_rate: the side blocks' dropouts.
  """
  reduction: int = 8
  num_heads: int = 4
  layer_norm_first: bool = True
  dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, *, valid, train: bool):
    d = hidden[0].shape[-1]
    if d % self.reduction:
      raise ValueError(f"peft.reduction={self.reduction} does not divide the model width {d}.")
    width = d // self.reduction
    if width % self.num_heads:
      raise ValueError(f"peft.side_heads={self.num_heads} does not divide the side width "
                       f"{width} (= {d} / reduction {self.reduction}).")
    down = functools.partial(layers.Dense, width, axes=("embed", None), dtype=self.dtype,
                             kernel_init=layers.torch_linear_init)
    block = functools.partial(
        encoder_lib.EncoderBlock,
        mixer=functools.partial(mha.SelfAttention, num_heads=self.num_heads, dtype=self.dtype),
        mlp_dim=4 * width, layer_norm_first=self.layer_norm_first,
        dropout_rate=self.dropout_rate, activation_dropout_rate=self.activation_dropout_rate,
        dtype=self.dtype)
    s = down(name="down_00")(hidden[0])
    for i in range(1, len(hidden)):
      alpha = self.param(f"gate_{i:02d}", nn.initializers.zeros, ())
      mu = jax.nn.sigmoid(alpha / GATE_TEMPERATURE)
      s = mu * s + (1.0 - mu) * down(name=f"down_{i:02d}")(hidden[i])
      # Blocks of width D/r have logically unnamed activations; constraints are on [.., D].
      s, _ = block(name=f"block_{i:02d}")(s, valid, train)
    s = layers.layer_norm("layer_norm", self.dtype)(s)
    return layers.Dense(d, axes=(None, "embed"), dtype=self.dtype,
                        kernel_init=layers.torch_linear_init, name="up")(s)


class LadderModel(nn.Module):
  """Frozen SpeechEncoder -> (detached hidden states) -> LadderSide -> [pool] -> dropout -> head.

  audio [B, S] -> logits [B, T, V] (CTC), or [B, C] with `pool` (the side output averaged over
  valid frames, as `evaluation.finetune_objectives.FinetuneModel`). Params {"speech_encoder",
  "peft", <head>}, named as in the plain models (`head` is their output layer's name: "ctc_proj"
  or "classifier"), so the pretrained weights load the same way.
  """
  speech_encoder: Any
  vocab_size: int
  side: Any  # functools.partial(LadderSide, ...)
  final_dropout_rate: float = 0.0
  head: str = "ctc_proj"
  pool: bool = False

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool,
               freeze_encoder: bool = False, channel_masked=None):
    out = self.speech_encoder(name="speech_encoder")(audio, valid=valid, masked=masked,
                                                     audio_valid=audio_valid, train=train,
                                                     channel_masked=channel_masked)
    # The ladder: nothing flows back into the backbone.
    hidden = jax.lax.stop_gradient(tuple(out["hidden"]))
    x = self.side(name="peft")(hidden, valid=valid, train=train)
    if freeze_encoder:  # The fine-tuning recipe's head-only phase: the side network waits too.
      x = jax.lax.stop_gradient(x)
    if self.pool:
      w = valid.astype(jnp.float32)[..., None]
      x = (x.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    x = nn.Dropout(self.final_dropout_rate)(x, deterministic=not train)
    return layers.Dense(self.vocab_size, axes=("embed", "vocab"),
                        kernel_init=nn.initializers.xavier_uniform(), name=self.head)(x)

