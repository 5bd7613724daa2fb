"""The DistilHuBERT objective: predict chosen teacher layers from a small student.

Chang et al. 2022, https://arxiv.org/abs/2110.01900 ; s3prl pretrain/distiller/pretrain_expert.py
(docs/reference.md). For each target layer l (default 4, 8, 12 of HuBERT BASE) a head predicts
the teacher's hidden state h_l from the student's last layer; per frame

  loss = mean_d |pred - h_l| + cosine_weight * (-log sigmoid(cos(pred, h_l)))

averaged over heads and real frames (s3prl averages over (B, N, T[, D]), padding included; here
padded frames are left out). The targets are `batch["targets"]` [B, N, T, D_t], put there by the
distillation step (teacher run inside the same compiled step, `teacher.Teacher`) or read from a
teacher-output cache (`distill.cache`), so the loss is a pure function of (params, batch) and the
engine's step runs it unchanged.
"""
import dataclasses
import logging
import re
from typing import Any

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import objectives
from jaxssl.data import batching
from jaxssl.distill import cache as cache_lib
from jaxssl.distill import student as student_lib
from jaxssl.distill import teacher as teacher_lib
from jaxssl.models import encoder as encoder_lib
from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.training import objective as objective_lib

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
  cos = layers.cosine(pred, target)
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
class DistillObjective(objective_lib.Objective):
  """Student + heads + DistilHuBERT loss, with the frozen teacher as the step's constants.

  batch: "audio" [B, S], "valid" [B, S] bool; the loss reads "targets" [B, N, T, D_t] (teacher
  hidden states of `distill.target_layers`), which `prepare` computes inside the compiled step
  from the teacher's params, or which a teacher-output cache (`distill.cache_dir`) provides.
  The engine hooks (training/objective.py), in the order they run:
    constants       loads `distill.teacher` into the student's mesh (optionally bfloat16);
    initial_params  copies the teacher's CNN, projection, positional conv and first layers
                    into a fresh student (`distill.init_from_teacher`, `distill.teacher_copy`);
    prepare         the teacher's forward (no gradient) when it runs in the step.
  LightHuBERT (lighthubert.py) subclasses it with its own model and loss.

  Attributes:
    config: the distillation config (configs/distill/*.py).
    subnet: a LightHuBERT subnet that overrides the config's architecture (an extracted subnet
      is a standalone student of this objective).
    teacher: an already loaded `teacher.Teacher` (default: load `distill.teacher`).
  """
  config: Any
  subnet: Any = None
  teacher: Any = dataclasses.field(default=None, compare=False, repr=False)
  has_constants = True  # `--dry_run` reports sizes without loading the teacher.
  _loaded: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  @property
  def model(self):
    return student_lib.student_from_config(self.config, subnet=self.subnet)

  @property
  def online(self):
    """Whether the teacher runs in the step (no teacher-output cache)."""
    return not self.config.distill.get("cache_dir", "")

  def init(self, rng, batch):
    valid = frontends.frame_valid(self.config.model.frontend, batch["valid"])
    rngs = dict(zip(("params", "dropout"), jax.random.split(rng)))
    return self.model.init(rngs, batch["audio"], valid=valid, train=False)["params"]

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step, state
    if "targets" not in batch:
      raise ValueError("objective.name='distill' needs batch['targets'] (teacher hidden states), "
                       "which `prepare` adds in the engine's step.")
    valid = frontends.frame_valid(self.config.model.frontend, batch["valid"])
    k_drop, k_layerdrop = jax.random.split(rng)
    out = self.model.apply({"params": params}, batch["audio"], valid=valid, train=train,
                           audio_valid=batch["valid"],
                           rngs={"dropout": k_drop, "layerdrop": k_layerdrop})
    targets = jax.lax.stop_gradient(batch["targets"])
    if out["pred"].shape != targets.shape:
      raise ValueError(f"distill: the student's heads predict {out['pred'].shape} but the "
                       f"teacher targets are {targets.shape} ([B, N, T, D]); check "
                       "distill.target_layers, distill.target_dim and that model.frontend "
                       "gives the teacher's frames.")
    return distill_loss(out["pred"], targets, valid,
                        cosine_weight=self.config.distill.cosine_weight)

  def constants(self, mesh, rules):
    d = self.config.distill
    teacher = self.teacher or teacher_lib.load_teacher(
        d.teacher, layers=d.target_layers, mesh=mesh, rules=rules, dtype=d.teacher_dtype)
    check_teacher(self.config, teacher)
    self._loaded["teacher"] = teacher
    logging.info("Distillation teacher %s: %d layers, %d-d.", d.teacher, teacher.num_layers,
                 teacher.dim)
    return (teacher.params, teacher.shardings) if self.online else ({}, {})

  def initial_params(self, params, constants):
    del constants  # The teacher is loaded even when a cache replaces its forward.
    if not self.config.distill.init_from_teacher:
      return params
    params, report = init_from_teacher(params, self._loaded["teacher"].params["speech_encoder"],
                                       self.config.distill.get("teacher_copy", S3PRL_COPIED))
    logging.info("Student init from the teacher: took %d params, kept %s.",
                 len(report["taken"]), report["kept"])
    return params

  def prepare(self, constants, batch):
    if not self.online:
      return batch  # The cache's batches hold the targets.
    return dict(batch, targets=self._loaded["teacher"].targets(constants, batch))

  def make_loader(self, config, *, source=None):
    if self.online:
      return super().make_loader(config, source=source)
    return cache_lib.CachedLoader(config.distill.cache_dir, config=config)

  def dry_run_report(self):
    """The student's size from abstract shapes (the teacher is not loaded): num_params with
    and without heads."""
    params = nn.unbox(jax.eval_shape(self.init, jax.random.PRNGKey(0), batching.dummy_batch()))
    return dict(num_params=num_params(params), num_params_without_heads=num_params(
        params, heads=False))

  def represent(self, params, batch):
    """Frozen-upstream features: (x [B, T, D], hidden tuple of L+1 [B, T, D], valid [B, T])."""
    valid = frontends.frame_valid(self.config.model.frontend, batch["valid"])
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


# s3prl's init_teacher_conv_layers / init_teacher_encoder_layers copy the CNN, the projection,
# the positional conv and the first layers, not the encoder's LayerNorm (DistilHuBERT).
S3PRL_COPIED = (r"feature_extractor/.*|post_extract_proj/.*|encoder/pos_conv/.*|"
                r"encoder/layer_\d+/.*")


def init_from_teacher(student_params, teacher_encoder_params, copied=S3PRL_COPIED):
  """Copies the teacher's weights that `copied` names into the student.

  Every student parameter outside the heads whose '/'-path fullmatches `copied` and exists in
  the teacher's speech encoder with the same shape is taken (student layer i <- teacher layer i).
  Scanned layers on either side are handled.

  Args:
    student_params: the student's (unboxed) params: "feature_extractor", "post_extract_proj",
      "encoder", "heads", ...
    teacher_encoder_params: the teacher objective's params["speech_encoder"].
    copied: regex of the '/'-paths to take (`distill.teacher_copy`; default s3prl's scope).

  Returns:
    (params, report): report lists '/'-paths "taken" and "kept" (student init kept).
  """
  scanned = "layers" in student_params.get("encoder", {})
  ours = traverse_util.flatten_dict(_loop_layers(student_params), sep="/")
  theirs = traverse_util.flatten_dict(_loop_layers(teacher_encoder_params), sep="/")
  report = dict(taken=[], kept=[])
  for name, x in ours.items():
    t = theirs.get(name)
    if (not name.startswith("heads/") and re.fullmatch(copied, name) and t is not None
        and tuple(t.shape) == tuple(x.shape)):
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


def check_teacher(config, teacher):
  """Raises ValueError when the student config does not fit the teacher."""
  d = config.distill
  if teacher.dim != d.target_dim:
    raise ValueError(f"distill.target_dim={d.target_dim} but the teacher {d.teacher!r} is "
                     f"{teacher.dim}-d.")
  if bool(teacher.config.data.get("normalize", False)) != bool(config.data.normalize):
    raise ValueError(f"data.normalize={config.data.normalize} but the teacher {d.teacher!r} was "
                     f"trained with data.normalize={teacher.config.data.get('normalize')}: the "
                     "teacher must see audio scaled as in its pretraining.")


objectives.register("distill", DistillObjective)
