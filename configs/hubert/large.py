"""HuBERT LARGE on Libri-Light 60k h (fairseq hubert_large_librivox.yaml).

Hsu et al. 2021, https://arxiv.org/abs/2106.07447

  python -m jaxssl.kmeans --dataset=local_audio --data_dir=$TFDS --features=layer --layer=9 \
      --checkpoint=$RUNS/hubert_it2 --num_clusters=500 --name=km500_base_it2_l9 --splits=train
  python -m jaxssl.main --config=configs/hubert/large.py --workdir=$RUNS/hubert_large

Targets are K = 500 units of layer 9 of the iteration-2 BASE model at 50 Hz (fairseq released them
as hubert_base_ls960_L9_km500.bin). Pre-LN Transformer with a final LayerNorm, layer-norm feature
extractor *without* conv bias (HubertConfig's default, unlike wav2vec 2.0 LV-60), no CNN gradient
scaling, normalised waveforms, no dropout or LayerDrop, lr 1.5e-3 with clip 1.0: 316,609,408
parameters with the 504 label embeddings. Batches as fairseq's: 128 GPUs x max_tokens 0.9M
samples, crops of at most 250k, no padding (configs/common.py fairseq_batches); the longest
bucket is 384 x 15.6 s.
"""
import ml_collections as mlc

from configs import common
from configs import hubert


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 400_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10

  c.data = common.data("local_audio", crop_samples=250_000)
  c.data.min_samples = 32_000
  common.fairseq_batches(c.data, gpus=128, max_tokens=900_000)
  c.data.normalize = True  # fairseq: "must be consistent with extractor" (layer_norm).
  c.model = common.wav2vec2_model(
      "large", layer_norm_first=True,
      frontend=dict(name="cnn", mode="layer_norm", conv_bias=False, feature_grad_mult=1.0),
      dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.0,
      input_dropout_rate=0.0, feature_dropout_rate=0.0, layerdrop_rate=0.0,
      remat=True, scan_layers=True)
  hubert.labels_and_objective(c, labels="km500_base_it2_l9", label_rate=50, num_clusters=500,
                              num_extra_embeddings=hubert.FAIRSEQ_DICT_SPECIALS)
  c.optim = common.adamw(lr=1.5e-3, weight_decay=0.01, clip_norm=1.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=32_000, power=1.0, end_lr=0.0)
  c.distributed = common.distributed()
  c.mesh = common.mesh(data=-1)
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  if arg.runlocal:
    common.shrink_for_cpu(c)
  return c.lock()
