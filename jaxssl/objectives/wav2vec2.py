"""The wav2vec 2.0 objective: contrastive InfoNCE over quantized targets + diversity + penalty.

Baevski et al. 2020, https://arxiv.org/abs/2006.11477 ; fairseq Wav2Vec2Model.sample_negatives /
compute_preds and Wav2vecCriterion. For every masked frame t the context vector c_t must pick its
quantized target q_t among K distractors sampled uniformly (with replacement) from the other masked
frames of the same utterance; logits are cosine similarities / logit_temp and a distractor equal to
the target is set to -inf. The loss is averaged over masked frames (fairseq sums, then divides the
gradient by the number of masked frames), and adds
  diversity_weight * (G·V - prob_perplexity) / (G·V) + feature_penalty_weight * mean(CNN features²).
Everything runs in the compiled step with static shapes: losses are computed on all T frames and
weighted by the mask, instead of gathering a data-dependent number of masked frames.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxssl import masking
from jaxssl import validate
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import quantizer as quantizer_lib
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.training import objective as objective_lib


def sample_negatives(rng, masked, num_negatives: int, cross_sample: int = 0):
  """Distractor frame indices for every frame.

  Args:
    rng: PRNG key.
    masked: [B, T] bool; distractors are drawn from these frames.
    num_negatives: K distractors from the same utterance, excluding the frame itself.
    cross_sample: extra distractors from masked frames of the whole batch (self excluded).

  Returns:
    [B, T, K + cross_sample] int32 indices into the flattened [B * T] frames. Rows of unmasked
    frames hold arbitrary (valid) indices and are ignored by the loss.
  """
  b, t = masked.shape
  k_same, k_cross = jax.random.split(rng)
  # The masked frames of each row first, in time order; `rank` is each masked frame's position
  # in that list, so drawing from [0, m - 1) and stepping over `rank` excludes the frame itself.
  order = jnp.argsort(~masked, axis=-1, stable=True)
  rank = jnp.cumsum(masked, -1) - 1
  m = masked.sum(-1)
  r = jax.random.randint(k_same, (b, t, num_negatives), 0, jnp.maximum(m - 1, 1)[:, None, None])
  r = r + (r >= rank[..., None])
  idx = jnp.take_along_axis(order, r.reshape(b, -1), axis=-1).reshape(b, t, num_negatives)
  idx = idx + (jnp.arange(b) * t)[:, None, None]
  if cross_sample:
    flat = masked.reshape(-1)
    order_all = jnp.argsort(~flat, stable=True)
    rank_all = (jnp.cumsum(flat) - 1).reshape(b, t)
    r = jax.random.randint(k_cross, (b, t, cross_sample), 0, jnp.maximum(flat.sum() - 1, 1))
    r = r + (r >= rank_all[..., None])
    idx = jnp.concatenate([idx, order_all[r]], axis=-1)
  return idx


def contrastive_logits(c, q, neg_idx, logit_temp: float):
  """[B,T,F] context, [B,T,F] targets, [B,T,K] indices -> [B, T, K+1] logits (target first)."""
  b, t, f = q.shape
  negs = q.reshape(b * t, f)[neg_idx]  # [B, T, K, F]
  targets = jnp.concatenate([q[:, :, None], negs], axis=2).astype(jnp.float32)
  logits = layers.cosine(c.astype(jnp.float32)[:, :, None], targets) / logit_temp
  neg_is_pos = jnp.all(negs == q[:, :, None], axis=-1)
  neg_is_pos = jnp.concatenate([jnp.zeros((b, t, 1), bool), neg_is_pos], axis=-1)
  return jnp.where(neg_is_pos, -jnp.inf, logits)


def contrastive_metrics(logits, weights):
  """Cross-entropy with target 0 and fairseq's accuracy, both averaged with `weights` [B, T]."""
  log_probs = jax.nn.log_softmax(logits, -1)
  n = jnp.maximum(weights.sum(), 1.0)
  loss = -(log_probs[..., 0] * weights).sum() / n
  is_max = jnp.argmax(logits, -1) == 0
  is_min = jnp.argmin(logits, -1) == 0
  correct = (is_max & ~(is_max & is_min)).astype(jnp.float32)
  return loss, (correct * weights).sum() / n


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Objective(objective_lib.Objective):
  """Model + loss. `init(rng, batch)`, `loss(params, batch, rng, *, step, train)`,
  `represent(params, batch)`. batch: {"audio": [B, S] float, "valid": [B, S] bool, ...}."""
  config: Any

  def __post_init__(self):
    obj = self.config.objective
    if obj.num_negatives < 1:
      raise validate.ConfigError(f"objective.num_negatives={obj.num_negatives} must be at "
                                 "least 1.")
    if obj.logit_temp <= 0:
      raise validate.ConfigError(f"objective.logit_temp={obj.logit_temp} must be positive.")

  @property
  def model(self):
    return wav2vec2_model.wav2vec2_from_config(self.config)

  def init(self, rng, batch):
    valid = frontends.frame_valid(self.config.model.frontend, batch["valid"])
    rngs = dict(zip(("params", "dropout", "gumbel", "layerdrop"), jax.random.split(rng, 4)))
    variables = self.model.init(rngs, batch["audio"], valid=valid, masked=valid,
                                temperature=1.0, train=True)
    return variables["params"]

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    cfg = self.config
    obj = cfg.objective
    k_mask, k_neg, k_drop, k_gumbel, k_ld = jax.random.split(rng, 5)
    valid = frontends.frame_valid(self.config.model.frontend, batch["valid"])
    groups = cfg.data.get("batch_groups", 1)
    masked = masking.span_mask(k_mask, valid, prob=cfg.masking.prob, span=cfg.masking.span,
                               min_spans=cfg.masking.min_spans, groups=groups)
    max_temp, min_temp, decay = cfg.quantizer.temp
    temperature = quantizer_lib.gumbel_temperature(step, max_temp, min_temp, decay)
    out = self.model.apply(
        {"params": params}, batch["audio"], valid=valid, masked=masked, temperature=temperature,
        audio_valid=batch["valid"], train=train, groups=groups,
        rngs={"dropout": k_drop, "gumbel": k_gumbel, "layerdrop": k_ld})
    neg_idx = sample_negatives(k_neg, masked, obj.num_negatives, obj.cross_sample_negatives)
    logits = contrastive_logits(out["c"], out["q"], neg_idx, obj.logit_temp)
    weights = masked.astype(jnp.float32)
    contrastive, accuracy = contrastive_metrics(logits, weights)
    diversity = out["diversity"]
    loss = (contrastive + obj.diversity_weight * diversity
            + obj.feature_penalty_weight * out["features_pen"])
    metrics = dict(
        loss_contrastive=contrastive, loss_diversity=diversity,
        loss_features=out["features_pen"], accuracy=accuracy,
        code_perplexity=out["code_perplexity"], prob_perplexity=out["prob_perplexity"],
        gumbel_temp=temperature, masked_fraction=weights.sum() / jnp.maximum(valid.sum(), 1))
    # objective.languages: the training data's, filled in when the run starts (pretrain).
    if obj.get("per_language_metrics") and obj.get("languages") and "language" in batch:
      metrics |= per_language_metrics(logits, weights, batch["language"], obj.languages)
    return loss, metrics

  def represent(self, params, batch):
    """Frozen-upstream features: (x [B, T, D], hidden tuple of L+1 [B, T, D], valid [B, T])."""
    return wav2vec2_model.represent(self.config.model, params["speech_encoder"], batch)


def per_language_metrics(logits, weights, language, languages):
  """Contrastive loss and accuracy per language (XLS-R style multilingual logging), keyed by
  name: `language` [B] indexes `languages` (the training data's, sorted, as the loader's)."""
  out = {}
  for i, name in enumerate(languages):
    w = weights * (language == i)[:, None]
    loss, acc = contrastive_metrics(logits, w)
    out[f"lang_{name}/loss"] = loss
    out[f"lang_{name}/accuracy"] = acc
  return out
