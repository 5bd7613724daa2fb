"""The MelHuBERT objective: HuBERT on stacked log-mel frames with a plain linear classifier.

Lin et al. 2022, https://arxiv.org/abs/2211.09944 ; nervjack2/MelHuBERT model.py. Differences
from HuBERT (objectives/hubert.py), each of which saves compute or parameters:
- no CNN: 40-d log-mel stacked to 80-d 20 ms frames (`model.frontend.name="mel_stack"`), no
  LayerNorm over them (`model.feature_layer_norm=False`);
- masking *before* the input projection, with zeros (`model.mask_token="zeros"`: no learned mask
  embedding), spans of 5 frames with mask_prob 0.7;
- `final_proj` is a linear classifier D -> K trained with cross-entropy (no cosine logits or
  label embeddings), on masked frames only.
Stage 1 targets are k-means units of the same log-mel frames (`python -m jaxssl.kmeans
--features=logmel`, 100 Hz; frame t reads label 2t as MelHuBERT's `label[::2]`).

`compare` counts its MACs per second of speech next to HuBERT BASE's
(experiments/hubert_demo/macs.py; `--dry_run` prints them).
"""
import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import cli
from jaxssl import masking
from jaxssl.data import batching
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.objectives import hubert
from jaxssl.training import flops
from jaxssl.training import objective as objective_lib


# HuBERT BASE's recipe, the baseline of the MACs comparison (a file of this repository).
HUBERT_BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "hubert", "base.py")


class MelHubertModel(nn.Module):
  """SpeechEncoder (mel_stack frontend, zero masking, no feature LayerNorm) -> linear classifier."""
  speech_encoder: Callable[..., nn.Module]
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool,
               predict: bool = True):
    """audio [B, S] (audio_valid: its [B, S] padding mask), valid/masked [B, T] bool -> dict
    "logits" [B, T, K] (if `predict`), "x" [B, T, D], "hidden" (L+1 [B, T, D]), "features"
    [B, T, C] (the frontend's)."""
    out = self.speech_encoder(name="speech_encoder")(audio, valid=valid, masked=masked,
                                                     audio_valid=audio_valid, train=train)
    out = dict(x=out["x"], hidden=out["hidden"], features=out["features"])
    if predict:
      out["logits"] = layers.Dense(self.num_classes, axes=("embed", None), dtype=self.dtype,
                                   kernel_init=layers.torch_linear_init,
                                   name="final_proj")(out["x"])
    return out


@dataclasses.dataclass(frozen=True)
class MelHubertObjective(objective_lib.Objective):
  """Model + loss, with the interface of `hubert.HubertObjective`."""
  config: Any

  @property
  def model(self):
    m = self.config.model
    return MelHubertModel(speech_encoder=wav2vec2_model.speech_encoder_from_config(m),
                          num_classes=self.config.objective.num_clusters,
                          dtype=jnp.dtype(m.dtype))

  def frame_valid(self, valid_samples):
    return frontends.frame_valid(self.config.model.frontend, valid_samples)

  def init(self, rng, batch):
    valid = self.frame_valid(batch["valid"])
    rngs = dict(zip(("params", "dropout", "layerdrop"), jax.random.split(rng, 3)))
    return self.model.init(rngs, batch["audio"], valid=valid, masked=valid,
                           audio_valid=batch["valid"], train=True)["params"]

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step
    cfg, obj = self.config, self.config.objective
    labels, labels_valid = hubert.batch_labels(cfg, batch)
    k_mask, k_drop, k_ld = jax.random.split(rng, 3)
    valid = self.frame_valid(batch["valid"])
    m = cfg.masking
    masked = masking.span_mask(k_mask, valid, prob=m.prob, span=m.span, min_spans=m.min_spans,
                               same_count=False)  # require_same_masks=False in MelHuBERT.
    out = self.model.apply({"params": params}, batch["audio"], valid=valid, masked=masked,
                           audio_valid=batch["valid"], train=train,
                           rngs={"dropout": k_drop, "layerdrop": k_ld})
    hop = frontends.hop(cfg.model.frontend)
    targets, ok = hubert.frame_targets(labels, labels_valid, valid.shape[1],
                                       cfg.data.label_rate, frame_hop=hop)
    loss, metrics = hubert.prediction_loss(
        [out["logits"].astype(jnp.float32)], [targets], masked, ok & valid,
        masked_weight=obj.masked_weight, unmasked_weight=obj.unmasked_weight)
    return loss, metrics

  def represent(self, params, batch):
    """(x [B, T, D], hidden tuple of L+1 [B, T, D], valid [B, T]) without masking."""
    return wav2vec2_model.represent(self.config.model, params["speech_encoder"], batch)

  def dry_run_report(self):
    """The paper's headline figure beside the compiled step's: MACs per second of speech
    against HuBERT BASE's (about a third)."""
    base = hubert.HubertObjective(cli.load_config_file(f"{HUBERT_BASE_CONFIG}:iteration=2"))
    out = compare(self, base)
    return dict(macs_per_second=out["macs_per_sec"],
                hubert_base_macs_per_second=out["baseline_macs_per_sec"],
                macs_saving_vs_hubert_base=out["macs_saving"])


def compare(objective, baseline, seconds: float = 1.0):
  """MACs per second of speech (`flops.macs_per_second`) and parameters of `objective`'s model
  next to `baseline`'s (e.g. HuBERT BASE), and the saving."""
  ours = flops.macs_per_second(objective, seconds)
  base = flops.macs_per_second(baseline, seconds)

  def num_params(obj):
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(
        jax.eval_shape(obj.init, jax.random.PRNGKey(0), batching.dummy_batch()))))

  return dict(macs_per_sec=ours, baseline_macs_per_sec=base, macs_saving=1.0 - ours / base,
              num_params=num_params(objective), baseline_num_params=num_params(baseline),
              seconds=seconds)
