"""wav2vec 2.0 LARGE, LV-60 style (fairseq wav2vec2_large_librivox.yaml).

  python -m jaxssl.main --config=configs/wav2vec2/large.py --workdir=gs://$BUCKET/w2v2_large \
      --config.data.name=local_audio --config.data.data_dir=$TFDS

Pre-LN Transformer with a final LayerNorm, LayerNorm feature extractor with conv bias, no
gradient scaling of the CNN, normalised waveforms, Gumbel temperature floor 0.1, no feature
penalty, all dropouts 0 except 0.1 on the inputs and features. The stored fairseq config says
lr 0.005, which disagrees with the paper's 3e-4 (Baevski et al. 2020, appendix B); we follow the
paper. Batches as fairseq's: 128 GPUs x max_tokens 1.2M samples, crops of at most 320k, no
padding (configs/common.py fairseq_batches); the longest bucket is 384 x 20 s.
"""
import ml_collections as mlc

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 1_000_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10

  c.data = common.data("local_audio", crop_samples=320_000)
  c.data.min_samples = 32_000
  common.fairseq_batches(c.data, gpus=128, max_tokens=1_200_000)
  c.data.normalize = True

  c.model = common.wav2vec2_model(
      "large", layer_norm_first=True,
      frontend=dict(name="cnn", mode="layer_norm", conv_bias=True, feature_grad_mult=1.0),
      dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.0,
      layerdrop_rate=0.0, remat=True, scan_layers=True)
  common.wav2vec2_sections(c, temp=(2.0, 0.1, 0.999995), feature_penalty_weight=0.0)
  c.optim = common.adamw(lr=3e-4, weight_decay=0.01)
  c.schedule = dict(name="warmup_poly", warmup_steps=32_000, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh(data=-1)
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  if arg.runlocal:
    common.shrink_for_cpu(c)
  return c.lock()
