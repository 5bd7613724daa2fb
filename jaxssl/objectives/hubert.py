"""The HuBERT objective: masked prediction of offline k-means units.

Hsu et al. 2021, https://arxiv.org/abs/2106.07447 ; fairseq HubertModel and HubertCriterion.
The encoder is wav2vec 2.0's (`models.wav2vec2.SpeechEncoder`, learned mask embedding, spans of
10 frames with mask_prob 0.8, equal masked counts per data.batch_groups block as in fairseq).
`final_proj` maps every frame to final_dim per label set (untied: one slice per set); the logits
of a frame are the cosine similarities to all label embeddings of a set, divided by
logit_temp = 0.1, i.e. a softmax over every cluster. The loss is
  (w_m * sum_masked CE + w_u * sum_unmasked CE) / (n_masked [if w_m > 0] + n_unmasked [if w_u > 0])
  + feature_penalty_weight * mean(CNN features^2),
as fairseq's criterion (sum reduction, gradient divided by the sample size). Labels at label_rate
Hz map to frame t by index floor(t * label_rate * 320 / 16000) (fairseq feat2tar_ratio); frames
past the end of an utterance's labels are left out of the loss (fairseq trims the features to
the labels instead, which would change shapes). Static shapes throughout: every frame gets
logits and the masks weight them.
"""
import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import constants
from jaxssl import masking
from jaxssl.data import labels as labels_lib
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.training import objective as objective_lib

FRAME_HOP = 320  # Samples per encoder frame (CNN stride; also MelHuBERT's stacked 20 ms frames).


class HubertModel(nn.Module):
  """SpeechEncoder + final_proj + label embeddings. See `__call__`."""
  speech_encoder: Callable[..., nn.Module]
  final_dim: int
  num_classes: Sequence[int]    # Label embeddings per label set.
  untie_final_proj: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, masked, train: bool, audio_valid=None):
    """Encodes and projects a batch.

    Args:
      audio: [B, S] float waveform.
      valid: [B, T] bool frame padding mask.
      audio_valid: optional [B, S] bool sample padding mask (see SpeechEncoder).
      masked: [B, T] bool SSL mask (None: no masking).
      train: dropout and LayerDrop on.

    Returns:
      dict with "proj": tuple (one per label set) of [B, T, final_dim], "label_embs": tuple of
      [K_i, final_dim], "hidden" (L+1 [B, T, D]) and "features_pen" [].
    """
    out = self.speech_encoder(name="speech_encoder")(audio, valid=valid, masked=masked,
                                                     audio_valid=audio_valid, train=train)
    n = len(self.num_classes)
    width = self.final_dim * (n if self.untie_final_proj else 1)
    proj = layers.Dense(width, axes=("embed", None), dtype=self.dtype,
                        kernel_init=layers.torch_linear_init, name="final_proj")(out["x"])
    proj = jnp.split(proj, n, -1) if self.untie_final_proj else [proj] * n
    # torch's nn.init.uniform_: U[0, 1), as fairseq initialises label_embs_concat.
    embs = self.param("label_embs_concat", nn.with_logical_partitioning(
        nn.initializers.uniform(1.0), (None, None)), (sum(self.num_classes), self.final_dim))
    splits = [sum(self.num_classes[:i]) for i in range(1, n)]
    return dict(proj=tuple(proj), label_embs=tuple(jnp.split(embs, splits, 0)),
                hidden=out["hidden"], features_pen=out["features_pen"])


def cosine_logits(x, embs, logit_temp: float):
  """cos(x_t, e_k) / logit_temp for all k. [B, T, F], [K, F] -> [B, T, K] float32."""
  x = x.astype(jnp.float32)
  embs = embs.astype(jnp.float32)
  eps = constants.COSINE_EPS  # torch.cosine_similarity clamps each norm at eps.
  xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
  en = embs / jnp.maximum(jnp.linalg.norm(embs, axis=-1, keepdims=True), eps)
  return jnp.einsum("btf,kf->btk", xn, en) / logit_temp


def frame_targets(labels, labels_valid, num_frames: int, label_rate: float, frame_hop=FRAME_HOP):
  """Labels at label_rate -> one label per encoder frame (fairseq's feat2tar_ratio).

  Args:
    labels: int [B, T_lab] (or [B, N, T_lab] for N label sets).
    labels_valid: bool [B, T_lab].
    num_frames: T encoder frames.
    label_rate: Hz.
    frame_hop: samples per encoder frame.

  Returns:
    (targets int32 [B, T] (or [B, N, T]), ok bool [B, T]: frame t has a label).
  """
  ratio = label_rate * frame_hop / constants.SAMPLE_RATE
  idx = jnp.floor(jnp.arange(num_frames) * ratio).astype(jnp.int32)
  t_lab = labels.shape[-1]
  inside = idx < t_lab
  idx = jnp.minimum(idx, t_lab - 1)
  return jnp.take(labels, idx, axis=-1).astype(jnp.int32), labels_valid[:, idx] & inside[None]


def prediction_loss(logits_list, targets_list, masked, ok, *, masked_weight, unmasked_weight):
  """fairseq HubertCriterion over static shapes.

  Args:
    logits_list: per label set, [B, T, K_i] float32.
    targets_list: per label set, int [B, T] class indices.
    masked: bool [B, T] SSL mask.
    ok: bool [B, T] frames that are real and have a label.
    masked_weight, unmasked_weight: fairseq pred_masked_weight / pred_nomask_weight.

  Returns:
    (loss [], metrics): loss = (w_m sum CE_m + w_u sum CE_u) / sample_size.
  """
  m = (masked & ok).astype(jnp.float32)
  u = (~masked & ok).astype(jnp.float32)
  n_m, n_u = m.sum(), u.sum()
  total = 0.0
  metrics = {}
  for i, (logits, targets) in enumerate(zip(logits_list, targets_list)):
    logp = jax.nn.log_softmax(logits, -1)
    ce = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    # fairseq's accuracy: the target is the arg-max, and not also the arg-min (all-equal rows).
    is_max = jnp.argmax(logits, -1) == targets
    is_min = jnp.argmin(logits, -1) == targets
    correct = (is_max & ~is_min).astype(jnp.float32)
    total = total + masked_weight * (ce * m).sum() + unmasked_weight * (ce * u).sum()
    sfx = f"_{i}" if len(logits_list) > 1 else ""
    metrics |= {f"loss_masked{sfx}": (ce * m).sum() / jnp.maximum(n_m, 1.0),
                f"loss_unmasked{sfx}": (ce * u).sum() / jnp.maximum(n_u, 1.0),
                f"accuracy_masked{sfx}": (correct * m).sum() / jnp.maximum(n_m, 1.0),
                f"accuracy_unmasked{sfx}": (correct * u).sum() / jnp.maximum(n_u, 1.0)}
  sample_size = (n_m if masked_weight > 0 else 0.0) + (n_u if unmasked_weight > 0 else 0.0)
  metrics["masked_fraction"] = n_m / jnp.maximum(n_m + n_u, 1.0)
  return total / jnp.maximum(sample_size, 1.0), metrics


def batch_labels(config, batch):
  """(labels [B, T_lab] or [B, N, T_lab], labels_valid [B, T_lab]) of a batch.

  The trainer's --dry_run compiles the step from an abstract batch of audio only; with
  data.labels set the loader always adds labels, so a batch without them is that dry run, and
  zero labels of the loader's shape cost the same step.
  """
  if "labels" in batch:
    return batch["labels"], batch["labels_valid"]
  if not config.data.get("labels", ""):
    raise ValueError(f"objective.name={config.objective.name!r} needs k-means labels: set "
                     "data.labels (a label set made by `python -m jaxssl.kmeans`) and "
                     "data.label_rate.")
  b, s = batch["audio"].shape
  t = labels_lib.labels_per_crop(s, config.data.label_rate)
  return jnp.zeros((b, t), jnp.int32), jnp.ones((b, t), bool)


def split_label_sets(labels, num_sets: int):
  """[B, T] (one set) or [B, N, T] -> list of N [B, T]."""
  if labels.ndim == 2:
    labels = labels[:, None]
  if labels.shape[1] != num_sets:
    raise ValueError(f"batch['labels'] has {labels.shape[1]} label sets, but "
                     f"objective.num_clusters lists {num_sets}.")
  return [labels[:, i] for i in range(num_sets)]


@dataclasses.dataclass(frozen=True)
class HubertObjective(objective_lib.Objective):
  """Model + loss. `init(rng, batch)`, `loss(params, batch, rng, *, step, train)`,
  `represent(params, batch)`. batch: "audio" [B, S] float, "valid" [B, S] bool, "labels"
  int32 [B, T_lab], "labels_valid" bool [B, T_lab]."""
  config: Any

  @property
  def num_clusters(self):
    k = self.config.objective.num_clusters
    return tuple(k) if isinstance(k, (tuple, list)) else (k,)

  @property
  def model(self):
    obj = self.config.objective
    extra = obj.get("num_extra_embeddings", 0)
    return HubertModel(
        speech_encoder=wav2vec2_model.speech_encoder_from_config(self.config.model),
        final_dim=wav2vec2_model.final_dim(self.config.model),
        num_classes=tuple(k + extra for k in self.num_clusters),
        untie_final_proj=obj.get("untie_final_proj", True),
        dtype=jnp.dtype(self.config.model.dtype))

  def frame_valid(self, valid_samples):
    return frontends.frame_valid(self.config.model.frontend, valid_samples)

  def init(self, rng, batch):
    valid = self.frame_valid(batch["valid"])
    rngs = dict(zip(("params", "dropout", "layerdrop"), jax.random.split(rng, 3)))
    return self.model.init(rngs, batch["audio"], valid=valid, masked=valid, train=True)["params"]

  def draw_mask(self, rng, valid):
    m = self.config.masking
    # fairseq's HubertModel.apply_mask leaves compute_mask_indices' require_same_masks at its
    # default (True): rows of one GPU batch get equal masked counts, though the loss gathers
    # masked frames by boolean index and would not need them.
    return masking.span_mask(rng, valid, prob=m.prob, span=m.span, min_spans=m.min_spans,
                             groups=self.config.data.get("batch_groups", 1))

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step
    cfg, obj = self.config, self.config.objective
    labels, labels_valid = batch_labels(cfg, batch)
    k_mask, k_drop, k_ld = jax.random.split(rng, 3)
    valid = self.frame_valid(batch["valid"])
    masked = self.draw_mask(k_mask, valid)
    out = self.model.apply({"params": params}, batch["audio"], valid=valid, masked=masked,
                           audio_valid=batch["valid"], train=train,
                           rngs={"dropout": k_drop, "layerdrop": k_ld})
    targets, ok = frame_targets(labels, labels_valid, valid.shape[1], cfg.data.label_rate)
    extra = obj.get("num_extra_embeddings", 0)
    targets_list = [t + extra for t in split_label_sets(targets, len(self.num_clusters))]
    logits_list = [cosine_logits(p, e, obj.logit_temp)
                   for p, e in zip(out["proj"], out["label_embs"])]
    pred, metrics = prediction_loss(logits_list, targets_list, masked, ok & valid,
                                    masked_weight=obj.masked_weight,
                                    unmasked_weight=obj.unmasked_weight)
    loss = pred + obj.feature_penalty_weight * out["features_pen"]
    metrics |= dict(loss_prediction=pred, loss_features=out["features_pen"])
    return loss, metrics

  def represent(self, params, batch):
    """Frozen-upstream features: (x [B, T, D], hidden tuple of L+1 [B, T, D], valid [B, T])."""
    return wav2vec2_model.represent(self.config.model, params["speech_encoder"], batch)

