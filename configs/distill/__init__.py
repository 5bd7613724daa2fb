"""Distillation configs: shared sections (DistilHuBERT and LightHuBERT: docs/reference.md).

`distill_sections` sets the `student`, `distill` and `objective` sections with s3prl's values:
heads for teacher layers 4, 8, 12, L1 + 1.0 * (-log sigmoid(cos)), student initialised from the
teacher's CNN, projection, positional conv and first layers.
"""
import ml_collections as mlc

from jaxssl.distill import objective as distill_objective


def distill_sections(c, *, teacher, target_layers=(4, 8, 12), target_dim=768,
                     feature_layer_norm=False):
  """Sets c.student, c.distill and c.objective."""
  c.student = mlc.ConfigDict(dict(
      feature_layer_norm=feature_layer_norm,  # DistilHuBERT: no LayerNorm after the CNN.
      head_inter_dim=0,                       # 0: the teacher's width (s3prl: 768).
      # A LightHuBERT subnet (empty heads: the `model` section's encoder with its mixer).
      subnet=dict(embed_dim=0, heads=(), ffn_dims=(), head_dim=64),
  ))
  c.distill = mlc.ConfigDict(dict(
      teacher=teacher,                 # A jaxssl workdir / ckpt dir / `jaxssl.convert` output.
      target_layers=tuple(target_layers),
      target_dim=target_dim,           # The teacher's width.
      cosine_weight=1.0,               # lambda of -log sigmoid(cos).
      teacher_dtype="float32",         # "bfloat16": teacher weights and compute in bf16.
      init_from_teacher=True,
      # Regex of the teacher weights copied into the student; s3prl's scope: CNN, projection,
      # positional conv and the first layers, not the encoder's LayerNorm.
      teacher_copy=distill_objective.S3PRL_COPIED,
      cache_dir="",                    # A teacher-output cache (python -m jaxssl.distill.cache).
  ))
  c.objective = mlc.ConfigDict(dict(name="distill"))


def lighthubert_sections(c, *, space, stage, stage1="", normalize=False):
  """Turns a distillation config `c` into LightHuBERT's (jaxssl/distill/lighthubert.py).

  The supernet is the teacher's shape; stage 1 copies the whole teacher into it and predicts
  the teacher's last layer on masked frames; stage 2 starts from the stage-1 run `stage1`
  (ckpt.init_from) and trains a fresh uniform subnet every step.
  """
  if stage not in (1, 2):
    raise ValueError(f"Config argument stage={stage}: choose 1 or 2.")
  c.objective = mlc.ConfigDict(dict(name="lighthubert"))
  c.lighthubert = mlc.ConfigDict(dict(space=space, stage=stage, normalize=normalize))
  c.masking = mlc.ConfigDict(dict(prob=0.65, span=10, min_spans=2))  # The reference's defaults.
  c.distill.teacher_copy = ".*"                # The whole teacher: the supernet is its shape.
  c.distill.init_from_teacher = stage == 1
  if stage == 2:
    c.ckpt.init_from = stage1
  if "student" in c:
    del c["student"]


TINY_DIMS = dict(embed_dim=32, mlp_dim=64, num_heads=2, conv_dim=32, final_dim=16,
                 pos_conv_kernel=8, pos_conv_groups=4)


def shrink_for_cpu(c, num_layers=2):
  """`configs.common.shrink_for_cpu` for a student with explicit dims: the "tiny" sizes with
  `num_layers` layers, predicting layers 1, 2 of a tiny (2-layer, 32-d) teacher."""
  c.total_steps = 4
  c.log_every_steps = 2
  c.data.batch_size = 8
  c.data.crop_samples = 8_000
  c.model.variant = dict(num_layers=num_layers, **TINY_DIMS)
  c.ckpt.every_steps = 2
  if "warmup_steps" in c.schedule:
    c.schedule.warmup_steps = 1
  c.distill.target_layers = (1, 2)
  c.distill.target_dim = 32
