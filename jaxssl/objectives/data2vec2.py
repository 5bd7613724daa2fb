"""The data2vec 2.0 objective (audio): regress an EMA teacher's contextualized targets.

Baevski et al. 2022, "Efficient Self-supervised Learning with Contextualized Target
Representations for Vision, Speech and Language", https://arxiv.org/abs/2212.07525 ; fairseq
examples/data2vec/models/data2vec2.py (Data2VecMultiModel), models/modalities/base.py
(contextualized_features, compute_mask, make_maskinfo, decoder_input, get_annealed_rate),
models/modalities/audio.py (AudioEncoder), models/modalities/modules.py (Decoder1d, AltBlock),
fairseq/modules/ema_module.py (EMAModule.step) and config/v2/base_audio_only_task.yaml.

One step, per batch of B utterances:
1. Local features: the wav2vec 2.0 CNN (mode "layer_norm", no conv bias) -> LayerNorm ->
   Linear to the model width (`local_encoder` params; AudioEncoder.project_features).
2. Teacher, once per utterance: the EMA copy of `encoder` (positional convs, LayerNorm, ALiBi
   scales, blocks; ema_encoder_only false with ema_local_encoder false: the teacher reads the
   student's local features, without gradient) encodes all frames unmasked, in eval mode.
   `objective.ema_local_encoder=True` (fairseq's switch of the same name, true in its image
   recipes) gives the teacher an EMA copy of the local encoder too, which then reads the audio
   itself: the targets no longer move with the student's CNN from step to step.
   Targets = the mean over the top `average_top_k_layers` blocks of their FFN outputs (before the
   residual and LayerNorm: AltBlock ffn_targets), each instance-normalised over time
   (instance_norm_target_layer); the recipe normalises nothing after the mean.
3. Student, `clone_batch` masks per utterance (the features repeated, the targets too): masked
   frames are zeroed, the positional conv runs over all frames, then only the unmasked frames go
   through LayerNorm, dropout and the blocks (ALiBi at their original positions).
4. Decoder: dropout on the student's output, N(0, mask_noise_std) tokens at the masked frames,
   the frames put back in order, `Decoder1d` (grouped convs + LayerNorm without affine + GELU,
   residual where widths match, Linear back to the model width).
5. Loss: sum over masked frames and channels of (pred - target)^2 * loss_scale
   (None/0: 1/sqrt(D)), divided by the number of masked frames (ModelCriterion sums, the
   trainer divides by sample_size = masked frames).
After the optimizer update the teacher moves: teacher = tau * teacher + (1 - tau) * student,
tau linear from ema.decay to ema.end_decay over ema.anneal_end_step updates (get_annealed_rate,
evaluated at the update count after this step, as set_num_updates does).

Static shapes (departure): fairseq's compute_mask_indices draws spans (mask_prob / mask_length
starts, min_masks 1) and trims every row to the batch minimum, so the number of kept frames
changes each step. Here the spans are drawn the same way, then every row of L valid frames is
trimmed or topped up with random frames to exactly floor(f * L + 0.5) masked frames, f =
1 - (1 - mask_prob / mask_length)^mask_length the expected fraction of the span draw (0.41 for
0.5 / 5; fairseq's batch minimum gives slightly less). The student keeps K = T - floor(f T + 0.5)
frames per row: the unmasked ones, then padding (attention-masked). `mask_prob_adjust` of the
yaml is read only by the image modality (compute_block_mask_2d), so it is not a field here.
Padding (fairseq's recipe has none): the instance norm takes its statistics over valid frames.
Fine-tuning (evaluation/finetune.py) keeps `local_encoder` and `encoder` (the student's, not the
teacher's) as one `models.data2vec2.SpeechEncoder`; the decoder and the teacher are dropped.
"""
import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import masking
from jaxssl import validate
from jaxssl.models import data2vec2 as d2v2_model
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.training import objective as objective_lib


def ema_decay_rate(num_updates, start: float, end: float, anneal_end_step: int):
  """1 - tau after `num_updates` updates: fairseq get_annealed_rate (linear start -> end over
  anneal_end_step, then end), returned as the EMA's step size lr = 1 - tau in float32."""
  if anneal_end_step <= 0:
    return jnp.float32(1.0 - end)
  frac = jnp.minimum(jnp.asarray(num_updates, jnp.float32) / anneal_end_step, 1.0)
  return (1.0 - start) * (1.0 - frac) + (1.0 - end) * frac


def ema_update(teacher, student, rate):
  """fairseq EMAModule.step: ema * (1 - rate) + rate * param, leaf by leaf."""
  return jax.tree.map(lambda e, p: e * (1.0 - rate) + rate * p.astype(e.dtype), teacher, student)


def instance_norm(x, valid, eps: float = 1e-5):
  """torch F.instance_norm of [B, T, D] over time (per utterance and channel, biased variance,
  no affine); the statistics come from the `valid` [B, T] frames only."""
  x = x.astype(jnp.float32)
  w = valid.astype(jnp.float32)[..., None]
  n = jnp.maximum(w.sum(1, keepdims=True), 1.0)
  mean = (x * w).sum(1, keepdims=True) / n
  var = (jnp.square(x - mean) * w).sum(1, keepdims=True) / n
  return (x - mean) * jax.lax.rsqrt(var + eps)


def make_targets(layer_results, valid, top_k: int):
  """data2vec2.py make_targets with instance_norm_target_layer: the mean of the last `top_k`
  layer results, each instance-normalised. Returns [B, T, D] float32."""
  normed = [instance_norm(y, valid) for y in layer_results[-top_k:]]
  return sum(normed) / len(normed)


def expected_masked_fraction(prob: float, span: int) -> float:
  """The expected masked fraction of a long row under span masking: 1 - (1 - prob/span)^span."""
  return 1.0 - (1.0 - prob / span) ** span


def num_kept(num_frames: int, prob: float, span: int) -> int:
  """K: frames every student row keeps (static) for `num_frames` frames."""
  return num_frames - int(math.floor(expected_masked_fraction(prob, span) * num_frames + 0.5))


def draw_mask(rng, valid, *, prob: float, span: int, min_spans: int = 1):
  """Span masks with a fixed count per row, and the frames the student keeps.

  Args:
    rng: PRNG key.
    valid: [R, T] bool (each row's valid frames a prefix).
    prob, span, min_spans: fairseq mask_prob, mask_length, min_masks.

  Returns:
    (masked [R, T] bool with exactly floor(f * L + 0.5) True among a row's L valid frames,
     keep [R, K] int32 ascending frame indices, K = `num_kept(T, ...)`, none of them masked).
  """
  r, t = valid.shape
  k_span, k_fill = jax.random.split(rng)
  spans = masking.span_mask(k_span, valid, prob=prob, span=span, min_spans=min_spans,
                            same_count=False)
  frac = expected_masked_fraction(prob, span)
  target = jnp.floor(frac * valid.sum(-1) + 0.5).astype(jnp.int32)
  u = jax.random.uniform(k_fill, (r, t))
  # Span frames first (a random subset of them if too many), then random other valid frames.
  scores = jnp.where(spans, 1.0 + u, jnp.where(valid, u, -1.0))
  rank = jnp.argsort(jnp.argsort(-scores, axis=-1), axis=-1)
  masked = (rank < target[:, None]) & valid
  category = jnp.where(masked, 2, jnp.where(valid, 0, 1))  # Unmasked, padding, masked.
  order = jnp.argsort(category * t + jnp.arange(t), axis=-1)
  keep = jnp.sort(order[:, :num_kept(t, prob, span)], axis=-1)
  return masked, keep.astype(jnp.int32)


def regression_loss(pred, targets, masked, scale: float):
  """sum_{masked t, d} (pred - target)^2 * scale / #masked, and the masked rows [N, D] (as
  fairseq's y[masked_b] / x[masked_b]) weights for the variance metrics."""
  w = masked.astype(jnp.float32)
  se = jnp.square(pred.astype(jnp.float32) - targets).sum(-1)
  return (se * w).sum() * scale / jnp.maximum(w.sum(), 1.0)


def masked_std(y, masked):
  """data2vec2.py compute_var over the masked frames: mean over channels of
  sqrt(unbiased variance over frames + 1e-6)."""
  w = masked.reshape(-1, 1).astype(jnp.float32)
  y = y.reshape(-1, y.shape[-1]).astype(jnp.float32)
  n = w.sum()
  mean = (y * w).sum(0) / jnp.maximum(n, 1.0)
  var = (jnp.square(y - mean) * w).sum(0) / jnp.maximum(n - 1.0, 1.0)
  return jnp.sqrt(var + 1e-6).mean()


def time_variance_share(x, valid):
  """A collapse monitor for [B, T, D] features: the variance over an utterance's valid frames
  (summed over channels, averaged over utterances) over the mean squared norm of a frame.
  About 0.5-0.8 for a random CNN; near 0 when every frame is nearly the same vector (the local
  encoder collapsed: the teacher's targets then carry position only)."""
  x = x.astype(jnp.float32)
  w = valid.astype(jnp.float32)[..., None]
  n_t = jnp.maximum(w.sum(1, keepdims=True), 1.0)
  mean_t = (x * w).sum(1, keepdims=True) / n_t
  within = (jnp.square(x - mean_t) * w).sum() / jnp.maximum(w.sum(), 1.0)
  power = (jnp.square(x) * w).sum() / jnp.maximum(w.sum(), 1.0)
  return within / jnp.maximum(power, 1e-12)


def _torch_conv_init(fan_in):
  bound = fan_in ** -0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


class Decoder1d(nn.Module):
  """fairseq modules.py Decoder1d: `num_layers` x (grouped conv `kernel_size` to `dim`, SamePad,
  LayerNorm without affine, GELU, + residual where the widths match), then Linear back to the
  input width. Convs and Linear keep torch's default init (AudioEncoder.reset_parameters).
  [B, T, D] -> [B, T, D]."""
  dim: int = 384
  kernel_size: int = 7
  groups: int = 16
  num_layers: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_dim = x.shape[-1]
    residual = x
    for i in range(self.num_layers):
      d_in = x.shape[-1]
      if d_in % self.groups or self.dim % self.groups:
        raise ValueError(f"objective.decoder.groups={self.groups} must divide the widths "
                         f"{d_in} and objective.decoder.dim={self.dim}.")
      init = _torch_conv_init(self.kernel_size * d_in // self.groups)
      kernel = self.param(f"kernel_{i}", nn.with_logical_partitioning(
          init, ("conv_kernel", None, None)), (self.kernel_size, d_in // self.groups, self.dim))
      bias = self.param(f"bias_{i}", nn.with_logical_partitioning(init, (None,)), (self.dim,))
      h = encoder_lib.grouped_conv1d(x.astype(self.dtype), kernel.astype(self.dtype),
                                     self.groups)
      if self.kernel_size % 2 == 0:
        h = h[:, :-1]
      h = h + bias.astype(self.dtype)
      h = nn.LayerNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=self.dtype,
                       name=f"norm_{i}")(h)
      h = layers.gelu(h)
      x = h + residual if residual.shape[-1] == h.shape[-1] else h
      residual = x
    return layers.Dense(out_dim, axes=(None, "embed"), dtype=self.dtype,
                        kernel_init=layers.torch_linear_init, name="proj")(x)


@dataclasses.dataclass(frozen=True)
class Data2Vec2Objective(objective_lib.Objective):
  """Model + loss + EMA teacher state. Params: {"local_encoder", "encoder", "decoder"}; state:
  {"teacher": EMA of params["encoder"]}. batch: "audio" [B, S] float, "valid" [B, S] bool."""
  config: Any
  # Params no upstream reads (`pretrained.load_checkpoint`): a fine-tuned model/ has none.
  pretraining_heads: ClassVar[tuple[str, ...]] = ("decoder",)

  def __post_init__(self):
    cfg, obj = self.config, self.config.objective
    layers_ = variants.get(cfg.model.variant).num_layers
    if not 1 <= obj.average_top_k_layers <= layers_:
      raise validate.ConfigError(
          f"objective.average_top_k_layers={obj.average_top_k_layers} must be in [1, "
          f"{layers_}] (the model's blocks).")
    if obj.clone_batch < 1:
      raise validate.ConfigError(f"objective.clone_batch={obj.clone_batch} must be >= 1.")
    if not 0.0 < cfg.masking.prob / cfg.masking.span < 1.0:
      raise validate.ConfigError(f"masking.prob={cfg.masking.prob} / masking.span="
                                 f"{cfg.masking.span} must be in (0, 1).")
    if cfg.model.get("alibi", False) and (cfg.model.mixer.name != "mha"
                                          or cfg.model.block != "transformer"):
      raise validate.ConfigError("model.alibi needs model.mixer.name='mha' and "
                                 "model.block='transformer'.")
    if cfg.model.get("mask_token", "learned") != "learned" or not cfg.model.feature_layer_norm:
      raise validate.ConfigError("objective.name='data2vec2' zeroes masked frames itself and "
                                 "always LayerNorms the features: leave model.mask_token and "
                                 "model.feature_layer_norm at their defaults.")

  # --- modules --------------------------------------------------------------------------------

  def local_encoder(self):
    kw = wav2vec2_model.speech_encoder_from_config(self.config.model).keywords
    return d2v2_model.LocalEncoder(kw["make_frontend"], kw["embed_dim"], kw["feature_grad_mult"],
                                   dtype=kw["dtype"])

  def encoder(self, ffn_targets=True):
    """The student's / teacher's Encoder (the same params; `ffn_targets` only picks hidden)."""
    return d2v2_model.make_encoder(self.config.model, ffn_targets=ffn_targets)()

  def decoder(self):
    d = self.config.objective.decoder
    return Decoder1d(d.dim, d.kernel_size, d.groups, d.num_layers,
                     dtype=jnp.dtype(self.config.model.dtype))

  def frame_valid(self, valid_samples):
    return frontends.frame_valid(self.config.model.frontend, valid_samples)

  # --- the objective --------------------------------------------------------------------------

  def init(self, rng, batch):
    k_local, k_enc, k_dec = jax.random.split(rng, 3)
    valid = self.frame_valid(batch["valid"])
    local_module = self.local_encoder()
    local = local_module.init(k_local, batch["audio"], batch["valid"])["params"]
    feats = local_module.apply({"params": nn.unbox(local)}, batch["audio"], batch["valid"])
    enc = self.encoder().init(k_enc, feats, valid=valid, train=False)["params"]
    dec = self.decoder().init(k_dec, feats)["params"]
    return {"local_encoder": local, "encoder": enc, "decoder": dec}

  def init_state(self, params):
    state = {"teacher": jax.tree.map(jnp.copy, params["encoder"])}  # Boxed: same logical axes.
    if self.config.objective.get("ema_local_encoder", False):
      state["teacher_local"] = jax.tree.map(jnp.copy, params["local_encoder"])
    return state

  def ema_rate(self, num_updates):
    e = self.config.objective.ema
    return ema_decay_rate(num_updates, e.decay, e.end_decay, e.anneal_end_step)

  def update_state(self, state, params, step):
    # fairseq steps the EMA in set_num_updates(step + 1), after the optimizer update.
    rate = self.ema_rate(step + 1)
    out = {"teacher": ema_update(state["teacher"], params["encoder"], rate)}
    if "teacher_local" in state:
      out["teacher_local"] = ema_update(state["teacher_local"], params["local_encoder"], rate)
    return out

  def local_features(self, params, batch):
    """[B, T, D] projected CNN features of the student."""
    return self.local_encoder().apply({"params": params["local_encoder"]}, batch["audio"],
                                      batch["valid"])

  def teacher_targets(self, teacher_params, feats, valid):
    """One teacher pass over [B, T, D] unmasked features -> [B, T, D] targets."""
    _, hidden = self.encoder().apply({"params": teacher_params}, feats, valid=valid,
                                     train=False)
    return make_targets(hidden[1:], valid, self.config.objective.average_top_k_layers)

  def student_predictions(self, params, feats, valid, masked, keep, rng, *, train):
    """[R, T, D] features -> [R, T, D] decoder predictions from the unmasked frames only."""
    obj = self.config.objective
    k_drop, k_ld, k_in, k_noise = jax.random.split(rng, 4)
    x = jnp.where(masked[..., None], jnp.zeros((), feats.dtype), feats)  # apply_mask.
    x, _ = self.encoder().apply({"params": params["encoder"]}, x, valid=valid, keep=keep,
                                train=train, rngs={"dropout": k_drop, "layerdrop": k_ld})
    rate = obj.decoder.input_dropout
    if train and rate > 0.0:
      x = x * jax.random.bernoulli(k_in, 1.0 - rate, x.shape) / (1.0 - rate)
    full = obj.mask_noise_std * jax.random.normal(k_noise, feats.shape, x.dtype)
    full = full.at[jnp.arange(x.shape[0])[:, None], keep].set(x)
    return self.decoder().apply({"params": params["decoder"]}, full)

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    cfg, obj = self.config, self.config.objective
    k_mask, k_student = jax.random.split(rng)
    valid = self.frame_valid(batch["valid"])
    feats = self.local_features(params, batch)
    teacher = state["teacher"] if state else params["encoder"]  # No state: teacher = student.
    teacher_feats = feats
    if state and "teacher_local" in state:  # ema_local_encoder: the teacher's own CNN.
      teacher_feats = self.local_features({"local_encoder": state["teacher_local"]}, batch)
    targets = self.teacher_targets(jax.lax.stop_gradient(teacher),
                                   jax.lax.stop_gradient(teacher_feats), valid)
    c = obj.clone_batch
    clone = lambda a: jnp.repeat(a, c, axis=0)  # repeat_interleave: the clones of a row adjoin.
    valid_c, targets_c = clone(valid), clone(targets)
    masked, keep = draw_mask(k_mask, valid_c, prob=cfg.masking.prob, span=cfg.masking.span,
                             min_spans=cfg.masking.min_spans)
    pred = self.student_predictions(params, clone(feats), valid_c, masked, keep, k_student,
                                    train=train)
    scale = obj.loss_scale or feats.shape[-1] ** -0.5
    loss = regression_loss(pred, targets_c, masked, scale)
    metrics = dict(
        loss_regression=loss, target_var=masked_std(targets_c, masked),
        pred_var=masked_std(pred, masked), ema_decay=1.0 - self.ema_rate(step + 1),
        masked_fraction=masked.sum() / jnp.maximum(valid_c.sum(), 1),
        local_time_var=time_variance_share(jax.lax.stop_gradient(feats), valid))
    return loss, metrics

  def represent(self, params, batch):
    """Frozen-upstream features (no masking, no dropout): (x [B, T, D], hidden tuple of L+1
    block outputs [B, T, D], valid [B, T])."""
    valid = self.frame_valid(batch["valid"])
    x, hidden = self.encoder(ffn_targets=False).apply(
        {"params": params["encoder"]}, self.local_features(params, batch), valid=valid,
        train=False)
    return x, hidden, valid

  def dry_run_report(self):
    cfg = self.config
    t = variants.frames_for(cfg.data.crop_samples)
    return {"student_rows": cfg.data.batch_size * cfg.objective.clone_batch,
            "student_frames": num_kept(t, cfg.masking.prob, cfg.masking.span),
            "frames": t}
