"""CTC fine-tuning of a BASE model on LibriSpeech / Libri-light: fairseq's base_{10m,1h,10h,100h}.

  python -m jaxssl.evaluate --config=configs/finetune/ctc_base_librispeech.py:hours=10min \
      --config.upstream=ckpts/w2v2_base --config.data.data_dir=data/tfds \
      --workdir=workdir/finetune/base_10m
  python -m jaxssl.evaluate --config=configs/finetune/ctc_base_librispeech.py:hours=100 \
      --dry_run   # Opens the splits and prints the data description; trains nothing.

`:hours=` picks the labelled set and fairseq's recipe for it (10min or 0.17, 1, 10, 100; `10m`,
`1h`, `10h`, `100h` too): train_10min / train_1h / train_10h (Libri-light's limited-supervision
folds, jaxssl/data/builders/librispeech) or train_clean_100. As fairseq's valid_subset, the best
dev_other WER (greedy, no LM) selects the step; test_clean and test_other are scored with it
(`splits.test`, `splits.extra_tests`). Values from fairseq examples/wav2vec/config/finetuning/
base_10m.yaml, base_1h.yaml, base_10h.yaml, base_100h.yaml (Baevski et al. 2020, Table 9):

  recipe                   10m     1h      10h     100h
  max_update               13k     13k     20k     80k
  lr                       5e-5    5e-5    5e-5    3e-5
  freeze_finetune_updates  10k     10k     10k     0
  mask_channel_prob        0.25    0.25    0.5     0.5
  layerdrop                0.1     0.1     0.05    0.1
  validation (dev_other)   every 50 after 10k / every 1k after 10k / ~1.1k after 10k / epoch

Shared by all four: Adam (0.9, 0.98, eps 1e-8, no weight decay), tri-stage (0.1 / 0.4 / 0.5,
final scale 0.05; fairseq's init_lr_scale default 0.01), letters, frozen CNN (feature_grad_mult
0), mask_prob 0.65 of 10 frames, mask_channel_length 64, activation dropout 0.1, no other
dropout, sentence-averaged CTC with zero_infinity, max_tokens 3.2M samples x 2 GPUs x
update_freq 4 = about 1,600 s of audio per update.

Differences: batches are counted in utterances, padded whole (fairseq's max_tokens batches).
10h and 100h take 128 utterances (~1,600 s) in 8 accumulated microbatches of 16 (about one
fairseq GPU batch: the channel mask trims counts within it). A batch never spans more than one
of the loader's 4 length buckets, so the 10-min set (~50 utterances) takes 16 per update and 1h
(~300) 64; fairseq's update holds more audio than the 10-min set itself (it repeats utterances).
Dev is scored every `eval_every_steps` from `eval_after_steps` on: fairseq's 10h validates every
50 epochs (~1,125 updates) and its 100h every epoch (~225 updates), here every 1,000 updates.
This recipe has not been run here (no LibriSpeech or accelerator on the project machine).
"""
import ml_collections as mlc

from configs import common
from configs import probes

# hours= value -> fairseq recipe name.
HOURS = {"10min": "10m", "10m": "10m", "0.17": "10m", "1": "1h", "1h": "1h", "10": "10h",
         "10h": "10h", "100": "100h", "100h": "100h"}

# fairseq examples/wav2vec/config/finetuning/base_<recipe>.yaml (see the module docstring).
RECIPES = {
    "10m": dict(train="train_10min", total_steps=13_000, lr=5e-5, freeze=10_000,
                channel_prob=0.25, layerdrop=0.1, eval_every=50, eval_after=10_000,
                batch_size=16, grad_accum=1),
    "1h": dict(train="train_1h", total_steps=13_000, lr=5e-5, freeze=10_000, channel_prob=0.25,
               layerdrop=0.1, eval_every=1_000, eval_after=10_000, batch_size=64, grad_accum=4),
    "10h": dict(train="train_10h", total_steps=20_000, lr=5e-5, freeze=10_000, channel_prob=0.5,
                layerdrop=0.05, eval_every=1_000, eval_after=10_000, batch_size=128,
                grad_accum=8),
    "100h": dict(train="train_clean_100", total_steps=80_000, lr=3e-5, freeze=0,
                 channel_prob=0.5, layerdrop=0.1, eval_every=1_000, eval_after=0,
                 batch_size=128, grad_accum=8),
}


def recipe_name(hours):
  """`hours=` argument -> "10m" | "1h" | "10h" | "100h"."""
  key = str(hours).strip().lower()
  if key not in HOURS:
    raise ValueError(f"hours={hours!r}: choose 10min (or 0.17), 1, 10 or 100.")
  return HOURS[key]


def get_config(arg=None):
  arg = common.parse_arg(arg, hours="100", runlocal=False)
  name = recipe_name(arg.hours)
  r = RECIPES[name]
  c = mlc.ConfigDict()
  c.task = "ctc_finetune"
  c.upstream = ""
  c.upstream_arch = "configs/wav2vec2/base.py"
  c.seed = 0
  c.recipe = f"fairseq base_{name}"
  c.total_steps = r["total_steps"]
  c.eval_every_steps = r["eval_every"]
  c.eval_after_steps = r["eval_after"]  # No dev scoring before (fairseq validate_after_updates).
  c.log_every_steps = 200

  c.data = common.data("librispeech", batch_size=r["batch_size"])
  c.splits = probes.splits("librispeech")
  c.splits.train, c.splits.dev, c.splits.test = r["train"], "dev_other", "test_clean"
  c.splits.extra_tests = ("test_other",)
  c.model = dict(dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.1,
                 input_dropout_rate=0.0, feature_dropout_rate=0.0,
                 layerdrop_rate=r["layerdrop"], feature_grad_mult=0.0)
  c.masking = dict(prob=0.65, span=10, min_spans=2, channel_prob=r["channel_prob"],
                   channel_span=64)
  c.optim = common.adamw(lr=r["lr"], weight_decay=0.0, eps=1e-8,
                         trainable=r"speech_encoder/(?!feature_extractor/).*|ctc_proj/.*")
  c.optim.grad_accum_steps = r["grad_accum"]
  c.schedule = dict(name="tri_stage", phase_ratio=(0.1, 0.4, 0.5), init_lr_scale=0.01,
                    final_lr_scale=0.05)
  c.mesh = common.mesh()
  c.ckpt = common.ckpt(every_steps=c.total_steps, keep=2)
  c.finetune = dict(labels="chars", freeze_encoder_steps=r["freeze"], final_dropout_rate=0.0)
  if arg.runlocal:
    c.total_steps, c.eval_every_steps, c.eval_after_steps, c.log_every_steps = 4, 2, 0, 1
    c.data.batch_size, c.optim.grad_accum_steps = 8, 1
    c.finetune.freeze_encoder_steps = 2
  return c.lock()
