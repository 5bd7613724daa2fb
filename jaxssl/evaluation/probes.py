"""Probes on a frozen upstream: a learned softmax-weighted layer sum, a projector and a small head.

This is the SUPERB protocol of s3prl (docs/reference.md; https://arxiv.org/abs/2105.01051):
`Featurizer` learns one weight per hidden state (all L+1 of them: the Transformer's input and
every layer's output), initialised to zero, and feeds `sum_l softmax(w)_l * h_l` (optionally each
h_l layer-normalised without affine parameters) to the task head. The heads are s3prl's:

  ctc        Linear(D, projector_dim) -> Linear(projector_dim, vocab), CTC loss (phone
             recognition: ctc/libriphone.yaml, `select: FrameLevel`); with `head="blstm"`, a
             bidirectional LSTM stack in between (ASR: asr/config.yaml, 2 x 1024);
  utterance  Linear(D, projector_dim) -> mean over valid frames -> Linear(projector_dim,
             classes), cross-entropy (speaker ID: voxceleb1, language ID).

CTC loss follows `torch.nn.CTCLoss(zero_infinity=True)` with mean reduction: each utterance's
negative log-likelihood is divided by its target length, infeasible ones (more labels than the
frames can hold) count as 0, and the batch mean is over real (non-padding) rows.

`SpecAugment` is s3prl's SpecAug on the weighted sum (the features the head reads), in training
only: s3prl/downstream/runner.py builds `SpecAug(**config["specaug"])` when a task config has a
`specaug` section (asr/config.yaml does) and applies it to the featurizer's output before the
downstream model; the module is s3prl/downstream/specaug.py.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxssl.models import layers
from jaxssl.training import objective as objective_lib


class WeightedSum(nn.Module):
  """s3prl's Featurizer: softmax-weighted sum of hidden states. [B, L, T, D] -> [B, T, D]."""
  layer_norm: bool = False

  @nn.compact
  def __call__(self, hidden):
    w = self.param("layer_weights", nn.with_logical_partitioning(
        nn.initializers.zeros, ("layers",)), (hidden.shape[1],))
    if self.layer_norm:  # F.layer_norm(h, (D,)): no affine parameters, eps 1e-5.
      mean = hidden.mean(-1, keepdims=True)
      var = hidden.var(-1, keepdims=True)
      hidden = (hidden - mean) * jax.lax.rsqrt(var + 1e-5)
    return jnp.einsum("l,bltd->btd", jax.nn.softmax(w), hidden)


def layer_weights(params):
  """The normalised layer weights (softmax of the learned logits) of probe `params`, [L]."""
  return np.asarray(jax.nn.softmax(nn.unbox(params)["weighted_sum"]["layer_weights"]))


class BLSTM(nn.Module):
  """Stacked bidirectional LSTMs that respect each row's length. [B, T, D] -> [B, T, 2H]."""
  hidden_dim: int
  num_layers: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, lengths, *, train: bool):
    for i in range(self.num_layers):
      x = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim)),
                           nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim)),
                           name=f"blstm_{i:02d}")(x, seq_lengths=lengths)
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return x


_CUBIC_A = -0.75  # PyTorch's bicubic kernel (upsample_bicubic2d).


def _cubic_weights(t):
  """The 4 bicubic weights of the samples at floor(x) - 1 .. floor(x) + 2, t = x - floor(x)."""
  a = _CUBIC_A

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  return far(t + 1), near(t), near(1 - t), far(2 - t)


def warp_frames(x, lengths, center, warped):
  """s3prl's TimeWarp with a given centre: frames [0, center) of each row are resized to
  [0, warped) and [center, length) to [warped, length) by bicubic interpolation
  (`F.interpolate(mode="bicubic", align_corners=False)`: the source position (j + 0.5) * scale
  - 0.5, A = -0.75, neighbours clamped inside each part; tests/evaluation compare with torch).
  Frames past `lengths` and rows with center = warped = 0 are returned unchanged.

  Args:
    x: [B, T, D] features.
    lengths: [B] valid frames (a prefix of each row).
    center, warped: [B] int, 0 < center, warped < length (or both 0: no warp).
  """
  t = x.shape[1]
  j = jnp.arange(t, dtype=jnp.float32)[None]
  n, c, w = (a.astype(jnp.int32)[:, None] for a in (lengths, center, warped))
  left = j < w
  start = jnp.where(left, 0, c)
  last = jnp.where(left, c - 1, n - 1)
  scale = jnp.where(left, c / jnp.maximum(w, 1), (n - c) / jnp.maximum(n - w, 1))
  src = (j - jnp.where(left, 0, w) + 0.5) * scale.astype(jnp.float32) - 0.5
  base = jnp.floor(src)
  out = jnp.zeros_like(x)
  for k, weight in enumerate(_cubic_weights(src - base)):
    idx = jnp.clip(base.astype(jnp.int32) + (k - 1) + start, start, last)
    out = out + weight[..., None].astype(x.dtype) * jnp.take_along_axis(
        x, jnp.clip(idx, 0, t - 1)[..., None], axis=1)
  keep = (j >= n) | (w == 0)
  return jnp.where(keep[..., None], x, out)


def _masks(rng, batch, size, num, width, extent):
  """[B, size] bool: `num` spans per row of width uniform in [width[0], width[1]) starting
  uniformly in [0, max(1, extent - widest span of the batch)), as s3prl's MaskAlongAxis."""
  k_width, k_pos = jax.random.split(rng)
  widths = jax.random.randint(k_width, (batch, num), width[0], width[1])
  pos = jax.random.randint(k_pos, (batch, num), 0, jnp.maximum(1, extent - widths.max()))
  ar = jnp.arange(size)
  return ((pos[..., None] <= ar) & (ar < (pos + widths)[..., None])).any(1)


@dataclasses.dataclass(frozen=True)
class SpecAugment:
  """s3prl's SpecAug (s3prl/downstream/specaug.py), on [B, T, D] features with padding.

  In s3prl's order: a time warp (TimeWarp: per utterance of T > 2 * window frames, a centre
  uniform in [window, T - window) moves to a point uniform in [centre - window + 1,
  centre + window], bicubic), `num_freq_masks` feature-dimension masks and `num_time_masks` time
  masks (MaskAlongAxis, replace_with_zero: per utterance, widths uniform in [lo, hi) - the upper
  end is excluded, as torch.randint's - and starts uniform in [0, max(1, extent - the batch's
  widest mask)), where the time extent is the batch's longest utterance, as s3prl pads the
  batch to it). Padding frames are never changed. s3prl's `adaptive` variant is not implemented
  (asr/config.yaml has adaptive: false). Zero counts / window switch a part off.
  """
  time_warp_window: int = 5
  num_time_masks: int = 2
  time_mask_width: tuple = (0, 40)
  num_freq_masks: int = 4
  freq_mask_width: tuple = (0, 50)

  def __post_init__(self):
    for name in ("time_mask_width", "freq_mask_width"):
      lo, hi = getattr(self, name)
      if not 0 <= lo < hi:
        raise ValueError(f"specaug.{name}=({lo}, {hi}) must satisfy 0 <= lo < hi (widths are "
                         f"drawn from [lo, hi)).")
    for name in ("time_warp_window", "num_time_masks", "num_freq_masks"):
      if getattr(self, name) < 0:
        raise ValueError(f"specaug.{name}={getattr(self, name)} must be >= 0.")

  def __call__(self, x, valid, rng):
    """x: [B, T, D] float, valid: [B, T] bool prefix mask, rng: a key -> augmented x."""
    b, t, d = x.shape
    k_warp, k_freq, k_time = jax.random.split(rng, 3)
    lengths = valid.sum(-1).astype(jnp.int32)
    if self.time_warp_window:
      w = self.time_warp_window
      k_center, k_to = jax.random.split(k_warp)
      ok = lengths - w > w
      center = jax.random.randint(k_center, (b,), w, jnp.maximum(lengths - w, w + 1))
      warped = jax.random.randint(k_to, (b,), center - w, center + w) + 1
      x = warp_frames(x, lengths, jnp.where(ok, center, 0), jnp.where(ok, warped, 0))
    zero = jnp.zeros((), x.dtype)
    if self.num_freq_masks:
      mask = _masks(k_freq, b, d, self.num_freq_masks, self.freq_mask_width, d)
      x = jnp.where(mask[:, None, :] & valid[..., None], zero, x)
    if self.num_time_masks:
      mask = _masks(k_time, b, t, self.num_time_masks, self.time_mask_width, lengths.max())
      x = jnp.where((mask & valid)[..., None], zero, x)
    return x


def specaug_from_config(section):
  """The `SpecAugment` of a probe config's `specaug` section, or None when it is off/absent."""
  if not section or not section.get("enabled", False):
    return None
  kwargs = {k: v for k, v in dict(section).items() if k != "enabled"}
  known = {f.name for f in dataclasses.fields(SpecAugment)}
  unknown = sorted(set(kwargs) - known)
  if unknown:
    raise ValueError(f"Unknown specaug fields {unknown}; valid: {sorted(known | {'enabled'})}.")
  for name in ("time_mask_width", "freq_mask_width"):
    if name in kwargs:
      kwargs[name] = tuple(int(v) for v in kwargs[name])
  return SpecAugment(**kwargs)


class Probe(nn.Module):
  """WeightedSum -> projector -> [BLSTM] -> (frame logits | mean-pooled utterance logits).

  Attributes:
    kind: "ctc" (frame-level logits [B, T, V]) or "utterance" (logits [B, C]).
    num_outputs: vocabulary size (blank included) or number of classes.
    projector_dim: width of the first linear layer (s3prl project_dim / projector_dim).
    head: "linear" or "blstm" (ctc only).
    hidden_dim, num_layers, dropout_rate: the BLSTM's sizes.
    layer_norm: layer-normalise every hidden state before the weighted sum.
    specaug: a `SpecAugment` applied to the weighted sum in training (rng stream "specaug").
  """
  kind: str
  num_outputs: int
  projector_dim: int = 256
  head: str = "linear"
  hidden_dim: int = 1024
  num_layers: int = 2
  dropout_rate: float = 0.2
  layer_norm: bool = False
  specaug: Any = None

  @nn.compact
  def __call__(self, hidden, valid, *, train: bool = False):
    """hidden: [B, L, T, D] float; valid: [B, T] bool -> logits [B, T, V] or [B, C]."""
    x = WeightedSum(self.layer_norm, name="weighted_sum")(hidden.astype(jnp.float32))
    if train and self.specaug is not None:  # s3prl: on the featurizer's output, training only.
      x = self.specaug(x, valid, self.make_rng("specaug"))
    x = layers.Dense(self.projector_dim, axes=("embed", "mlp"),
                     kernel_init=layers.torch_linear_init, name="projector")(x)
    if self.head == "blstm":
      x = BLSTM(self.hidden_dim, self.num_layers, self.dropout_rate, name="blstm")(
          x, valid.sum(-1), train=train)
    elif self.head != "linear":
      raise ValueError(f"probe.head={self.head!r}: choose from ['blstm', 'linear'].")
    if self.kind == "utterance":
      w = valid.astype(x.dtype)[..., None]
      x = (x * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    return layers.Dense(self.num_outputs, axes=("mlp", "vocab"),
                        kernel_init=layers.torch_linear_init, name="output")(x)


def ctc_loss(logits, valid, labels, label_valid, rows):
  """Mean per-token CTC loss over real rows (torch CTCLoss, zero_infinity, reduction="mean").

  Args:
    logits: [B, T, V] float; blank is id 0.
    valid: [B, T] bool frame mask.
    labels: [B, U] int32 targets, padded.
    label_valid: [B, U] bool.
    rows: [B] float, 1 on real rows whose targets fit in their frames, 0 elsewhere (padding rows
      and infeasible alignments, whose loss counts as zero).

  Returns:
    Scalar loss.
  """
  nll = optax.ctc_loss(logits.astype(jnp.float32), (~valid).astype(jnp.float32), labels,
                       (~label_valid).astype(jnp.float32), blank_id=0)
  per_token = nll / jnp.maximum(label_valid.sum(-1), 1)
  return (per_token * rows).sum() / jnp.maximum((rows > 0).sum() + 0.0, 1.0)


def ctc_feasible(label_ids, num_frames):
  """Whether CTC can align each target: labels + repeated neighbours <= frames. [B] bool.

  Args:
    label_ids: B int arrays (unpadded targets).
    num_frames: [B] frames of each row.
  """
  need = [len(x) + int(np.sum(np.asarray(x)[1:] == np.asarray(x)[:-1])) for x in label_ids]
  return np.asarray(need) <= np.asarray(num_frames)


def ctc_targets(targets, index, label_len, num_frames):
  """The CTC label arrays of one batch, for probes and fine-tuning alike.

  Args:
    targets: the split's `tasks.Targets` (`ids[i]`: record i's label ids).
    index: [B] record indices, -1 on padding rows.
    label_len: U, the padded label length.
    num_frames: [B] valid frames per row.

  Returns:
    dict: labels [B, U] int32 (zero-padded), label_valid [B, U] bool, rows [B] float32 (1 on
    real rows with frames whose targets fit in them, see `ctc_feasible`).
  """
  ids = [targets.ids[i] if i >= 0 else np.zeros(0, np.int32) for i in index]
  labels = np.zeros((len(index), label_len), np.int32)
  for r, x in enumerate(ids):
    labels[r, :len(x)] = x
  lengths = np.array([len(x) for x in ids])
  rows = (index >= 0) & (num_frames > 0) & ctc_feasible(ids, num_frames)
  return dict(labels=labels, label_valid=np.arange(label_len)[None] < lengths[:, None],
              rows=rows.astype(np.float32))


def classification_loss(logits, classes, rows):
  """Mean cross-entropy over real rows. logits [B, C], classes [B] int32, rows [B] float."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                       jnp.maximum(classes, 0))
  return (ce * rows).sum() / jnp.maximum(rows.sum(), 1.0)


def loss_fn(probe, params, inputs, *, train: bool, rng=None):
  """The task loss of `probe` on one batch of `inputs` (see `ProbeObjective`)."""
  rngs = None
  if rng is not None:  # SpecAugment draws from its own stream; dropout's is unchanged.
    rngs = {"dropout": rng, "specaug": jax.random.fold_in(rng, 1)}
  logits = probe.apply({"params": params}, inputs["hidden"], inputs["valid"], train=train,
                       rngs=rngs)
  if probe.kind == "ctc":
    return ctc_loss(logits, inputs["valid"], inputs["labels"], inputs["label_valid"],
                    inputs["rows"])
  return classification_loss(logits, inputs["labels"], inputs["rows"])


@dataclasses.dataclass(frozen=True)
class ProbeObjective(objective_lib.Objective):
  """The probe as an engine objective; the upstream never changes (its features are inputs).

  batch: "hidden" [B, L, T, D], "valid" [B, T], "rows" [B] and "labels" ([B, U] with
  "label_valid" for ctc, [B] for utterance). Each new (T, U) shape compiles once; the eval
  loader's length buckets keep that to a few.
  """
  probe: Probe

  def init(self, rng, batch):
    return self.probe.init(rng, batch["hidden"], batch["valid"])["params"]

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step, state
    return loss_fn(self.probe, params, batch, train=train, rng=rng if train else None), {}

  def predict(self, params, batch):
    """Arg-max labels: [B, T] per frame (ctc) or [B] per utterance; and the eval loss."""
    logits = self.probe.apply({"params": params}, batch["hidden"], batch["valid"])
    return jnp.argmax(logits, -1), loss_fn(self.probe, params, batch, train=False)


def make_optimizer(lr, *, clip_norm=0.0, weight_decay=0.0):
  """s3prl's probe optimizer: Adam (AdamW with weight decay) at a constant rate, optionally
  after global-norm clipping. Returns (tx, lr_schedule)."""
  tx = optax.chain(
      optax.clip_by_global_norm(clip_norm) if clip_norm > 0 else optax.identity(),
      optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr))
  return tx, optax.constant_schedule(lr)
