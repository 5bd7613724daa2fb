"""The DistilHuBERT objective: predict chosen teacher layers from a small student.

Chang et al. 2022, https://arxiv.org/abs/2110.01900 ; s3prl pretrain/distiller/pretrain_expert.py
(docs/reference.md). For each target layer l (default 4, 8, 12 of HuBERT BASE) a head predicts
the teacher's hidden state h_l from the student's last layer; per frame

  loss = mean_d |pred - h_l| + cosine_weight * (-log sigmoid(cos(pred, h_l)))

averaged over heads and real frames (s3prl averages over (B, N, T[, D]), padding included; here
padded frames are left out). The targets are `batch["targets"]` [B, N, T, D_t], put there by the
distillation step (teacher run inside the same compiled step, `teacher.Teacher`) or read from a
teacher-output cache (`distill.cache`), so the loss is a pure function of (params, batch) and the
generic `training.train_step` runs it unchanged.
"""
import dataclasses
from typing import Any

from flax import traverse_util
import jax
import jax.numpy as jnp

from jaxssl.distill import student as student_lib
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import variants

_EPS = 1e-8  # torch.nn.functional.cosine_similarity clamps each norm at eps.


def cosine(a, b):
  """cos(a, b) over the last axis, each norm clamped at 1e-8 (torch). [..., D] -> [...]."""
  an = jnp.maximum(jnp.linalg.norm(a, axis=-1), _EPS)
  bn = jnp.maximum(jnp.linalg.norm(b, axis=-1), _EPS)
  return jnp.sum(a * b, -1) / (an * bn)


def distill_loss(pred, target, valid, *, cosine_weight=1.0):
  """DistilHuBERT's loss over real frames.

  Args:
    pred: [B, N, T, D] head outputs.
    target: [B, N, T, D] teacher hidden states of the N target layers.
    valid: [B, T] bool real frames.
    cosine_weight: lambda of the -log sigmoid(cos) term (1 in the paper).

  Returns:
    (loss [], metrics): metrics hold loss_l1, loss_cos, mean cosine and per-head l1_<n> /
    cos_<n> (cosine similarity), all over real frames.
  """
  pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
  w = jnp.broadcast_to(valid[:, None, :], pred.shape[:3]).astype(jnp.float32)  # [B, N, T]
  l1 = jnp.mean(jnp.abs(pred - target), -1)
  cos = cosine(pred, target)
  sim = -jax.nn.log_sigmoid(cos)
  count = jnp.maximum(w.sum(), 1.0)
  rec, sim_loss = (l1 * w).sum() / count, (sim * w).sum() / count
  per_head = jnp.maximum(w.sum((0, 2)), 1.0)
  metrics = dict(loss_l1=rec, loss_cos=sim_loss, cosine=(cos * w).sum() / count)
  for n in range(pred.shape[1]):
    metrics[f"l1_{n}"] = (l1[:, n] * w[:, n]).sum() / per_head[n]
    metrics[f"cos_{n}"] = (cos[:, n] * w[:, n]).sum() / per_head[n]
  return rec + cosine_weight * sim_loss, metrics


@dataclasses.dataclass(frozen=True)
class DistillObjective:
  """Student + heads + DistilHuBERT loss. `init(rng, batch)`, `loss(params, batch, rng, *, step,
  train)`, `represent(params, batch)`; batch: "audio" [B, S], "valid" [B, S] bool and, for the
  loss, "targets" [B, N, T, D_t] (teacher hidden states of `distill.target_layers`).

  `subnet` overrides the config's architecture (a LightHuBERT subnet, see `supernet.py`).
  """
  config: Any
  subnet: Any = None

  @property
  def model(self):
    return student_lib.student_from_config(self.config, subnet=self.subnet)

  def frame_valid(self, valid_samples):
    """[B, S] sample mask -> [B, T] frame mask (objectives.wav2vec2.frame_valid; not imported
    from there, since jaxssl.objectives registers this module)."""
    t = variants.frames_for(valid_samples.shape[-1])
    lengths = variants.frames_for(valid_samples.sum(-1))
    return jnp.arange(t)[None] < lengths[:, None]

  def init(self, rng, batch):
    valid = self.frame_valid(batch["valid"])
    rngs = dict(zip(("params", "dropout"), jax.random.split(rng)))
    return self.model.init(rngs, batch["audio"], valid=valid, train=False)["params"]

  def loss(self, params, batch, rng, *, step, train: bool = True):
    del step
    if "targets" not in batch:
      raise ValueError("objective.name='distill' needs batch['targets'] (teacher hidden states); "
                       "train it with trainer='distill' (jaxssl.distill.trainer).")
    valid = self.frame_valid(batch["valid"])
    k_drop, k_layerdrop = jax.random.split(rng)
    out = self.model.apply({"params": params}, batch["audio"], valid=valid, train=train,
                           audio_valid=batch["valid"],
                           rngs={"dropout": k_drop, "layerdrop": k_layerdrop})
    targets = jax.lax.stop_gradient(batch["targets"])
    if out["pred"].shape != targets.shape:
      raise ValueError(f"distill: the student's heads predict {out['pred'].shape} but the "
                       f"teacher targets are {targets.shape} ([B, N, T, D]); check "
                       "distill.target_layers and distill.target_dim.")
    return distill_loss(out["pred"], targets, valid,
                        cosine_weight=self.config.distill.cosine_weight)

  def represent(self, params, batch):
    """Frozen-upstream features: (x [B, T, D], hidden tuple of L+1 [B, T, D], valid [B, T])."""
    valid = self.frame_valid(batch["valid"])
    student = student_lib.student_from_config(self.config, subnet=self.subnet, num_targets=0)
    enc_params = {k: v for k, v in params.items() if k != "heads"}
    out = student.apply({"params": enc_params}, batch["audio"], valid=valid, train=False,
                        audio_valid=batch["valid"],
                        heads=False)
    return out["x"], out["hidden"], valid


def _loop_layers(params):
  """Encoder params in unrolled form ("layer_00", ...), whether scanned or not."""
  enc = params.get("encoder", {})
  if "layers" not in enc:
    return params
  num = jax.tree.leaves(enc["layers"])[0].shape[0]
  return encoder_lib.scan_to_loop(params, num)


def init_from_teacher(student_params, teacher_encoder_params):
  """Copies the teacher's feature encoder, projection, positional conv and first layers.

  s3prl's init_teacher_conv_layers / init_teacher_encoder_layers: every student parameter
  outside the heads whose '/'-path exists in the teacher's speech encoder with the same shape
  is taken (student layer i <- teacher layer i). Scanned layers on either side are handled.

  Args:
    student_params: the student's (unboxed) params: "feature_extractor", "post_extract_proj",
      "encoder", "heads", ...
    teacher_encoder_params: the teacher objective's params["speech_encoder"].

  Returns:
    (params, report): report lists '/'-paths "taken" and "kept" (student init kept).
  """
  scanned = "layers" in student_params.get("encoder", {})
  ours = traverse_util.flatten_dict(_loop_layers(student_params), sep="/")
  theirs = traverse_util.flatten_dict(_loop_layers(teacher_encoder_params), sep="/")
  report = dict(taken=[], kept=[])
  for name, x in ours.items():
    t = theirs.get(name)
    if not name.startswith("heads/") and t is not None and tuple(t.shape) == tuple(x.shape):
      # A copy, never the teacher's buffer: the student's state is donated to the train step.
      ours[name] = jnp.array(t, x.dtype, copy=True)
      report["taken"].append(name)
    else:
      report["kept"].append(name)
  params = traverse_util.unflatten_dict(ours, sep="/")
  if scanned:
    num = jax.tree.leaves(student_params["encoder"]["layers"])[0].shape[0]
    params = encoder_lib.loop_to_scan(params, num)
  return params, report


def num_params(params, *, heads=True):
  """Number of parameters, optionally leaving the prediction heads out."""
  tree = params if heads else {k: v for k, v in params.items() if k != "heads"}
  return sum(int(x.size) for x in jax.tree.leaves(tree))
