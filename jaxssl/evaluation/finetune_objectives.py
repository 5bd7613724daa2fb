"""The fine-tuning models and objectives: a pretrained SpeechEncoder plus one output layer.

`CTCObjective` (phones or characters: frame logits, CTC) and `UtteranceObjective` (speaker or
language: the final hidden state mean-pooled over valid frames, cross-entropy) are what
`evaluation.finetune` trains through the engine; see there for the recipe (Baevski et al. 2020
§4, fairseq's wav2vec_ctc). While `freeze_encoder` is set (the first `freeze_encoder_steps`
updates, a `variant` of its own) the encoder's output is detached, so those updates cost only
the forward pass plus the output layer. Time masks use the model's learned mask embedding;
channel masks (masking.channel_prob / channel_span: fairseq's mask_channel_prob / length) zero the
same channels of the projected features in every frame of an utterance, training only.

The encoder is wav2vec 2.0's SpeechEncoder (wav2vec 2.0, HuBERT, BEST-RQ, MelHuBERT upstreams)
or, for a data2vec 2.0 upstream, `models.data2vec2.SpeechEncoder` (no mask embedding: masked
frames are zeroed), its params read from the checkpoint's local_encoder/ and encoder/
(`upstream_encoder`: the constructor and the `ckpt.init_from_rename` pairs).
"""
import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxssl import masking
from jaxssl.evaluation import probes
from jaxssl.models import data2vec2 as d2v2_model
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.training import objective as objective_lib

# The output layers: they train from the first update (the rest waits freeze_encoder_steps).
HEADS = ("ctc_proj", "classifier")

# Upstream objectives whose encoder is not wav2vec 2.0's SpeechEncoder under "speech_encoder":
# objective.name -> (the encoder's constructor from a `model` section, (prefix in the fine-tuning
# model, prefix in the upstream's checkpoint) pairs).
UPSTREAM_ENCODERS = {
    "data2vec2": (d2v2_model.speech_encoder_from_config,
                  (("speech_encoder/encoder/", "encoder/"), ("speech_encoder/", "local_encoder/"))),
}


def upstream_encoder(upstream_config):
  """(`model` section -> encoder constructor, `ckpt.init_from_rename` pairs) for an upstream's
  (pretraining) config; wav2vec 2.0's SpeechEncoder and no renaming unless UPSTREAM_ENCODERS
  names its objective."""
  name = upstream_config.get("objective", {}).get("name", "")
  return UPSTREAM_ENCODERS.get(name, (wav2vec2_model.speech_encoder_from_config, ()))


class FinetuneModel(nn.Module):
  """SpeechEncoder -> [mean over valid frames] -> dropout -> Linear(D, vocab_size) named `head`.

  audio [B, S] -> logits [B, T, V] (CTC: "ctc_proj"), or [B, C] with `pool` (utterance
  classification: "classifier"; the final hidden state is pooled, where the probes' utterance
  head pools a learned layer mixture: fine-tuning adapts the last layer itself). While
  `freeze_encoder` the encoder's output is detached (fairseq runs the encoder under no_grad for
  freeze_finetune_updates). `peft.ladder.LadderModel` has the same fields.
  """
  speech_encoder: Any
  vocab_size: int
  final_dropout_rate: float = 0.0
  head: str = "ctc_proj"
  pool: bool = False

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool,
               freeze_encoder: bool = False, channel_masked=None):
    # Channel masks go only to encoders asked for them (fine-tuning with masking.channel_prob).
    extra = {} if channel_masked is None else dict(channel_masked=channel_masked)
    x = self.speech_encoder(name="speech_encoder")(audio, valid=valid, masked=masked,
                                                   audio_valid=audio_valid, train=train,
                                                   **extra)["x"]
    if freeze_encoder:
      x = jax.lax.stop_gradient(x)
    if self.pool:
      x = masked_mean(x.astype(jnp.float32), valid)
    x = nn.Dropout(self.final_dropout_rate)(x, deterministic=not train)
    return layers.Dense(self.vocab_size, axes=("embed", "vocab"),
                        kernel_init=nn.initializers.xavier_uniform(), name=self.head)(x)


def sentence_ctc_loss(logits, valid, labels, label_valid, rows):
  """fairseq's CTC criterion with sentence_avg and zero_infinity: summed per utterance NLL,
  averaged over real rows; rows [B] is 1 on real rows whose targets fit, else 0."""
  nll = optax.ctc_loss(logits.astype(jnp.float32), (~valid).astype(jnp.float32), labels,
                       (~label_valid).astype(jnp.float32), blank_id=0)
  return (nll * rows).sum() / jnp.maximum((rows > 0).sum() + 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class CTCObjective(objective_lib.Objective):
  """The fine-tuning objective (`init`, `loss`, `predict`), usable by training/train_step.py.

  batch: "audio" [B, S], "valid" [B, S], "labels" [B, U] int32, "label_valid" [B, U],
  "rows" [B] float (see `sentence_ctc_loss`).
  """
  model_config: Any
  masking_config: Any
  vocab_size: int
  final_dropout_rate: float = 0.0
  freeze_encoder: bool = False
  # (speech_encoder, vocab_size, *, final_dropout_rate, head, pool) -> module.
  make_model: Any = FinetuneModel
  freeze_encoder_steps: int = 0  # The first updates train the output layer only.
  # `model` section -> encoder constructor (`upstream_encoder`).
  make_encoder: Any = wav2vec2_model.speech_encoder_from_config
  head: ClassVar[str] = "ctc_proj"  # The output layer's name (the ladder model's too).
  pooled: ClassVar[bool] = False  # Frame-level logits.

  @property
  def model(self):
    return self.make_model(self.make_encoder(self.model_config), self.vocab_size,
                           final_dropout_rate=self.final_dropout_rate, head=self.head,
                           pool=self.pooled)

  def init(self, rng, batch):
    valid = frontends.frame_valid(self.model_config.frontend, batch["valid"])
    rngs = dict(zip(("params", "dropout", "layerdrop"), jax.random.split(rng, 3)))
    return self.model.init(rngs, batch["audio"], valid=valid, train=False)["params"]

  def variant(self, step):
    """Whether step `step` (0-based) is in the frozen-encoder phase: its own compiled step."""
    return step < self.freeze_encoder_steps

  def specialize(self, variant):
    return dataclasses.replace(self, freeze_encoder=bool(variant))

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step, state  # The frozen phase is a separate objective (static): `variant`.
    logits, valid = _apply(self, params, batch, rng, train=train)
    loss = sentence_ctc_loss(logits, valid, batch["labels"], batch["label_valid"], batch["rows"])
    return loss, {"ctc_loss": loss}

  def predict(self, params, batch):
    """Arg-max label per frame [B, T] and the frame mask [B, T]."""
    valid = frontends.frame_valid(self.model_config.frontend, batch["valid"])
    logits = self.model.apply({"params": params}, batch["audio"], valid=valid,
                              audio_valid=batch["valid"], train=False)
    return jnp.argmax(logits, -1), valid


def _apply(objective, params, batch, rng, *, train):
  """The objective's model on a batch (time and channel masks when training): (logits, frame
  valid [B, T])."""
  k_mask, k_drop, k_ld = jax.random.split(rng, 3)
  valid = frontends.frame_valid(objective.model_config.frontend, batch["valid"])
  m = objective.masking_config
  masked = None
  if train and m.prob > 0:
    # Own count per row (fine-tuning batches are padded, of mixed lengths).
    masked = masking.span_mask(k_mask, valid, prob=m.prob, span=m.span,
                               min_spans=m.min_spans, same_count=False)
  extra = {}
  if train and m.get("channel_prob", 0.0) > 0:
    # A key of its own (fold_in): the time mask, dropout and LayerDrop draw as without it.
    extra["channel_masked"] = masking.channel_mask(
        jax.random.fold_in(rng, 1), valid.shape[0],
        variants.get(objective.model_config.variant).embed_dim,
        prob=m.channel_prob, span=m.channel_span)
  logits = objective.model.apply({"params": params}, batch["audio"], valid=valid, masked=masked,
                                 audio_valid=batch["valid"], train=train,
                                 freeze_encoder=objective.freeze_encoder,
                                 rngs={"dropout": k_drop, "layerdrop": k_ld}, **extra)
  return logits, valid


def masked_mean(x, valid):
  """Mean over the valid frames: x [B, T, D], valid [B, T] -> [B, D] (0 for a row without any)."""
  w = valid.astype(x.dtype)[..., None]
  return (x * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


@dataclasses.dataclass(frozen=True)
class UtteranceObjective(CTCObjective):
  """Utterance classification: cross-entropy averaged over real rows, arg-max class.

  The fields, `model` and `init` of `CTCObjective` (subclassed for them); `vocab_size` is the
  class count. batch: "audio" [B, S], "valid" [B, S], "labels" [B] int32 classes (-1 on
  padding rows), "rows" [B] float (1 on real rows with at least one frame).
  """
  head: ClassVar[str] = "classifier"
  pooled: ClassVar[bool] = True

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step, state
    logits, _ = _apply(self, params, batch, rng, train=train)
    loss = probes.classification_loss(logits, batch["labels"], batch["rows"])
    return loss, {"ce_loss": loss}

  def predict(self, params, batch):
    """Arg-max class per utterance [B] and the row mask [B] (rows with a valid frame)."""
    valid = frontends.frame_valid(self.model_config.frontend, batch["valid"])
    logits = self.model.apply({"params": params}, batch["audio"], valid=valid,
                              audio_valid=batch["valid"], train=False)
    return jnp.argmax(logits, -1), valid.any(-1)
