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


def supernet_section(c, *, space, menu_size=8, seed=0):
  """Sets c.supernet and the student's subnet to the space's largest (LightHuBERT)."""
  from jaxssl.distill import supernet  # pylint: disable=g-import-not-at-top
  largest = supernet.get_space(space).largest
  c.supernet = mlc.ConfigDict(dict(space=space, menu_size=menu_size, seed=seed))
  c.student.subnet = largest.to_dict()


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
