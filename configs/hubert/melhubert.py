"""MelHuBERT-20ms on LibriSpeech 360 h (nervjack2/MelHuBERT config_{model,runner}_20ms.yaml).

Lin et al. 2022, https://arxiv.org/abs/2211.09944

  python -m jaxssl.feature_stats --dataset=librispeech --data_dir=$TFDS \
      --split=train_clean_360 --features=fbank --num_mels=40          # -> stats/fbank40.json
  python -m jaxssl.kmeans --dataset=librispeech --data_dir=$TFDS --fit_split=train_clean_360 \
      --features=fbank --stats=fbank40 --num_clusters=512 --name=km512_fbank \
      --splits=train_clean_360
  python -m jaxssl.main --config=configs/hubert/melhubert.py --workdir=$RUNS/melhubert
  python experiments/hubert_demo/macs.py   # MACs per second of speech next to HuBERT BASE

HuBERT BASE's Transformer (post-LN, 12 x 768/3072/12, conv positional embedding, dropouts 0.1)
on 40-d Kaldi fbank frames (Hamming window, pre-emphasis, torchaudio's Kaldi routine, as the
reference extracts them), normalised by the training set's mean and standard deviation per band
(`jaxssl.feature_stats`; the run's config.json carries the values), stacked to 80-d at 20 ms
instead of the CNN; zero masking before the input projection (mask_prob 0.7, spans of 5
frames); a linear classifier over K = 512 k-means units of the same normalised fbank frames
(stage 1), cross-entropy on masked frames. Runner: Adam(0.9, 0.999),
eps 1e-8, no weight decay, constant lr 1e-4, clip 10, batches of 4 x 8 accumulation = 32 random
750-frame (15 s) crops of utterances longer than 320 fbank frames (3.2 s), 200 epochs of the
104k utterances (~650k updates). `:runlocal` shrinks it for a CPU smoke run (each utterance
normalised by its own statistics: no statistics pass).

`:demo` is the same recipe on the embedded demo corpus at the HuBERT demo's size and optimizer
(configs/hubert/demo.py: `demo` variant, pre-LN, no dropout, AdamW 2e-3, warmup 100, 1,200
steps of 8 x 2 s crops, K = 100 on the demo corpus's own statistics):

  python -m jaxssl.feature_stats --dataset=demo_corpus --data_dir=data/tfds --split=train \
      --features=fbank --num_mels=40
  python -m jaxssl.kmeans --dataset=demo_corpus --data_dir=data/tfds --features=fbank \
      --stats=fbank40 --num_clusters=100 --fraction=0.5
  python -m jaxssl.main --config=configs/hubert/melhubert.py:demo --workdir=workdir/melhubert_demo
"""
import ml_collections as mlc

from configs import common
from configs import probes


def get_config(arg=None):
  arg = common.parse_arg(arg, demo=False, runlocal=False)
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 650_000
  c.log_every_steps = 100
  c.max_consecutive_nonfinite = 10

  c.data = common.data("librispeech", split="train_clean_360", crop_samples=240_000,
                       batch_size=32)
  c.data.min_samples = 51_200  # MelHuBERT keeps utterances over 320 fbank frames (10 ms): 3.2 s.
  c.data.labels = "km512_fbank"  # k-means on the normalised 10 ms fbank frames (stage 1).
  c.data.label_rate = 100
  c.model = common.wav2vec2_model(
      "base", frontend=dict(name="mel_stack", num_mels=40, stack=2, features="kaldi",
                                 stats="fbank40"),
      feature_layer_norm=False, mask_token="zeros",  # MelHuBERT's model.py: neither.
      dropout_rate=0.1, attention_dropout_rate=0.1, activation_dropout_rate=0.1,
      input_dropout_rate=0.0, feature_dropout_rate=0.0, layerdrop_rate=0.0)
  c.masking = dict(prob=0.7, span=5, min_spans=2)
  c.objective = dict(name="melhubert", num_clusters=512, masked_weight=1.0, unmasked_weight=0.0)
  c.optim = common.adamw(lr=1e-4, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=10.0)
  c.schedule = dict(name="constant", warmup_steps=0)
  c.distributed = common.distributed()
  c.mesh = common.mesh(data=-1)
  c.ckpt = common.ckpt(every_steps=5_000, keep=3)
  if arg.demo:
    _demo(c)
  if arg.runlocal:
    common.shrink_for_cpu(c)
    c.model.frontend.stats = ""
  return c.lock()


def _demo(c):
  """The demo corpus at the HuBERT demo's size, schedule and batch (configs/hubert/demo.py)."""
  c.total_steps = 1_200
  c.log_every_steps = 25
  c.data = common.data("demo_corpus", crop_samples=32_000, batch_size=8)
  c.data.labels = "km100_fbank"
  c.data.label_rate = 100
  c.model.variant = "demo"
  c.model.layer_norm_first = True
  for rate in ("dropout_rate", "attention_dropout_rate", "activation_dropout_rate"):
    c.model[rate] = 0.0
  c.objective.num_clusters = 100
  c.optim = common.adamw(lr=2e-3, weight_decay=0.01, clip_norm=10.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=100, power=1.0, end_lr=0.0)
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=200, keep=2)
  c.evals = dict(phone=probes.pretraining_eval("phone", every_steps=400))  # PER vs compute.
