"""The LightHuBERT objective: masked-prediction distillation of HuBERT into a once-for-all supernet.

Wang et al. 2022, https://arxiv.org/abs/2203.15610 ; mechanicalsea/lighthubert (lighthubert.py:
the model, its masking and prediction heads; the repository ships no training code). The model
is HuBERT's (CNN, LayerNorm, projection, learned mask embedding on masked frames, Transformer)
with the supernet's weights run under a subnet's masks (`masked.py`) and a bias-free prediction
head from the last layer to the teacher's width (the reference's default layer_pred_num). Two
stages, one objective (`lighthubert.stage`):

  1  pre-distillation: the full-size supernet (initialised from the teacher) predicts the
     teacher's last hidden layer on masked frames;
  2  once-for-all: the same loss, each step on a fresh uniform subnet of the search space
     (`supernet.sample`, drawn inside the compiled step), starting from stage 1's weights.

Inferred where the reference is silent (docs/deviations.md): the loss, mean squared error over
masked frames of the last layer; masking as the reference model's defaults (p 0.65, spans of 10,
equal counts); the input waveform layer-normalised in the graph when `lighthubert.normalize`
(s3prl's upstream does this for layer-norm CNNs), so the teacher still sees its own input.
"""
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import masking
from jaxssl import objectives
from jaxssl.data import batching
from jaxssl.distill import masked as masked_lib
from jaxssl.distill import objective as distill_objective
from jaxssl.distill import supernet
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model


def normalize_waveform(audio, valid):
  """Per-utterance layer norm of the waveform over its real samples (F.layer_norm, eps 1e-5)."""
  w = valid.astype(jnp.float32)
  n = jnp.maximum(w.sum(-1, keepdims=True), 1.0)
  mean = (audio * w).sum(-1, keepdims=True) / n
  var = (jnp.square(audio - mean) * w).sum(-1, keepdims=True) / n
  return (audio - mean) * jax.lax.rsqrt(var + 1e-5) * w


class LightHubertModel(nn.Module):
  """Audio -> supernet features of one subnet (and the last layer's prediction)."""
  embed_dim: int
  make_frontend: Callable[..., nn.Module]
  make_encoder: Callable[..., nn.Module]
  teacher_dim: int
  normalize: bool = False
  feature_grad_mult: float = 1.0
  input_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, subnet, masked=None, audio_valid=None, train: bool,
               predict: bool = True):
    """audio [B, S], valid / masked [B, T] bool, subnet a `supernet.SubnetArrays` -> dict "x"
    [B, T, E], "hidden" (L + 1 [B, T, E]) and, if `predict`, "pred" [B, T, teacher_dim]."""
    if self.normalize:
      audio = normalize_waveform(audio, audio_valid if audio_valid is not None
                                 else jnp.ones(audio.shape, bool))
    feats = self.make_frontend(name="feature_extractor")(audio, audio_valid)
    feats = layers.grad_multiply(feats, self.feature_grad_mult)
    feats = layers.layer_norm("layer_norm", self.dtype)(feats)
    e = masked_lib.width_mask(subnet.embed_dim, self.embed_dim).astype(self.dtype)
    x = layers.Dense(self.embed_dim, axes=("conv_out", "embed"), dtype=self.dtype,
                     kernel_init=layers.torch_linear_init, name="post_extract_proj")(feats) * e
    x = nn.Dropout(self.input_dropout_rate)(x, deterministic=not train)
    mask_emb = self.param("mask_emb", nn.with_logical_partitioning(
        nn.initializers.uniform(1.0), ("embed",)), (self.embed_dim,))
    if masked is not None:
      x = jnp.where(masked[..., None], (mask_emb * e).astype(x.dtype), x)
    x, hidden = self.make_encoder(name="encoder")(x, valid=valid, subnet=subnet, train=train)
    out = dict(x=x, hidden=hidden)
    if predict:
      out["pred"] = layers.Dense(self.teacher_dim, axes=("embed", None), use_bias=False,
                                 dtype=self.dtype, name="pred_head")(x)
    return out


def prediction_loss(pred, target, masked):
  """Mean squared error over the masked frames. pred, target [B, T, D]; masked [B, T] bool."""
  w = masked.astype(jnp.float32)
  err = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), -1)
  return (err * w).sum() / jnp.maximum(w.sum(), 1.0)


@dataclasses.dataclass(frozen=True)
class LightHubertObjective(distill_objective.DistillObjective):
  """LightHuBERT's model and loss with DistilHuBERT's teacher hooks (constants, prepare,
  initial_params: the whole teacher copied in stage 1, `distill.teacher_copy` = ".*")."""

  @property
  def space(self):
    return supernet.get_space(self.config.lighthubert.space)

  @property
  def model(self):
    m, s = self.config.model, self.space
    if m.get("block", "transformer") != "transformer" or m.get("mixer", {}).get("name",
                                                                                "mha") != "mha":
      raise ValueError(
          f"LightHuBERT's supernet is a Transformer with attention (model.block="
          f"{m.get('block', 'transformer')!r}, model.mixer.name="
          f"{m.get('mixer', {}).get('name', 'mha')!r}): its subnets slice attention heads.")
    base = wav2vec2_model.speech_encoder_from_config(m).keywords
    v = variants.get(m.variant)
    encoder = masked_lib.masked_encoder(
        num_layers=s.num_layers, num_heads=s.num_heads, head_dim=s.head_dim, mlp_dim=s.mlp_dim,
        pos_conv=(v.pos_conv_kernel, v.pos_conv_groups), layer_norm_first=m.layer_norm_first,
        dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
        activation_dropout_rate=m.activation_dropout_rate, dtype=jnp.dtype(m.dtype))
    return LightHubertModel(
        embed_dim=s.embed_dim, make_frontend=base["make_frontend"], make_encoder=encoder,
        teacher_dim=self.config.distill.target_dim, normalize=self.config.lighthubert.normalize,
        feature_grad_mult=base["feature_grad_mult"],
        input_dropout_rate=base["input_dropout_rate"], dtype=jnp.dtype(m.dtype))

  def subnet_arrays(self, rng=None, subnet=None):
    """Stage 2 with `rng`: a uniform sample; else `subnet` (default: the whole supernet)."""
    if rng is not None:
      return supernet.sample(rng, self.space)
    return supernet.arrays(subnet or self.space.largest, self.space)

  def init(self, rng, batch):
    valid = frontends.frame_valid(self.config.model.frontend, batch["valid"])
    rngs = dict(zip(("params", "dropout"), jax.random.split(rng)))
    return self.model.init(rngs, batch["audio"], valid=valid, masked=valid,
                           subnet=self.subnet_arrays(), audio_valid=batch["valid"],
                           train=False)["params"]

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step, state
    if "targets" not in batch:
      raise ValueError("objective.name='lighthubert' needs batch['targets'] (the teacher's last "
                       "layer), which `prepare` adds in the engine's step.")
    cfg = self.config
    valid = frontends.frame_valid(cfg.model.frontend, batch["valid"])
    k_mask, k_subnet, k_drop = jax.random.split(rng, 3)
    m = cfg.masking
    masked = masking.span_mask(k_mask, valid, prob=m.prob, span=m.span, min_spans=m.min_spans,
                               groups=cfg.data.get("batch_groups", 1))
    subnet = self.subnet_arrays(k_subnet if cfg.lighthubert.stage == 2 else None)
    out = self.model.apply({"params": params}, batch["audio"], valid=valid, masked=masked,
                           subnet=subnet, audio_valid=batch["valid"], train=train,
                           rngs={"dropout": k_drop})
    target = jax.lax.stop_gradient(batch["targets"][:, -1])
    if out["pred"].shape != target.shape:
      raise ValueError(f"lighthubert: the prediction is {out['pred'].shape} but the teacher's "
                       f"last target layer is {target.shape} ([B, T, D]); check "
                       "distill.target_layers and distill.target_dim.")
    loss = prediction_loss(out["pred"], target, masked)
    return loss, dict(loss_masked=loss, masked_fraction=masked.sum() / jnp.maximum(
        valid.sum(), 1), subnet_embed_dim=subnet.embed_dim.astype(jnp.float32),
                      subnet_depth=subnet.keep.sum().astype(jnp.float32))

  def represent(self, params, batch, subnet=None):
    """The largest subnet's (or `subnet`'s) features: (x [B, T, E], hidden: depth + 1 [B, T, E]
    of the kept layers, valid); channels beyond the subnet's width are zero."""
    subnet = subnet or self.space.largest
    valid = frontends.frame_valid(self.config.model.frontend, batch["valid"])
    out = self.model.apply({"params": params}, batch["audio"], valid=valid,
                           subnet=self.subnet_arrays(subnet=subnet), audio_valid=batch["valid"],
                           train=False, predict=False)
    keep = supernet.depth_map(self.space.num_layers, subnet.depth)
    hidden = [out["hidden"][0]] + [h for h, k in zip(out["hidden"][1:], keep) if k]
    return out["x"], tuple(hidden[:-1]) + (out["x"],), valid

  def dry_run_report(self):
    """Supernet and default-subnet sizes from abstract shapes (no teacher loaded)."""
    def count(objective):
      params = jax.eval_shape(objective.init, jax.random.PRNGKey(0), batching.dummy_batch())
      return distill_objective.num_params(nn.unbox(params), heads=False)

    default = self.space.default_subnet
    standalone = distill_objective.DistillObjective(
        supernet.subnet_config(self.config, default), default)
    return dict(supernet_params=count(self), default_subnet_params=count(standalone))


objectives.register("lighthubert", LightHubertObjective)
