"""The `peft` section of the fine-tuning configs: LoRA, AdaLoRA, ladder side-tuning or full.

  python -m jaxssl.evaluate --config=configs/finetune/ctc_demo.py:peft=lora \
      --config.upstream=workdir/hubert_demo/iter2 --workdir=workdir/finetune/ctc_demo_lora
  # peft=adalora|ladder|full; any field: --config.peft.rank=4 --config.peft.targets='...'
  # speaker / language ID: configs/finetune/utterance_demo.py:task=speaker,peft=lora

Every method's fields are in the one section (each method reads its own), so command-line
overrides work whichever method is chosen. Defaults (docs/reference.md):
- LoRA (Hu et al. 2021): r 8, alpha 16 (scale alpha / r = 2), dropout 0, on the attention query
  and value projections (the paper's W_q, W_v). peft's LoraConfig defaults to alpha 8 (scale 1);
  16 is kept because the README's PEFT tables were measured with it (`--config.peft.alpha=8`
  gives peft's).
- AdaLoRA (peft AdaLoraConfig): init_r 12 -> target_r 8, alpha 8 (scale alpha / init_r),
  beta1 = beta2 = 0.85, orth_reg_weight 0.5, reallocation every delta_t = 10 steps between
  tinit (the head-only phase + 10% of the other updates) and total - tfinal (tfinal 20% of the
  updates), same targets as LoRA.
- Ladder side-tuning (Sung et al. 2022): reduction factor 8, side heads 0 = the backbone's head
  count when it divides the side width (else 1), side dropout 0.1.
PEFT methods train only "peft/..." and the head, at a 4x higher peak learning rate than full
fine-tuning (adapters and a freshly initialised side network start far from a good solution;
LoRA's paper and peft's examples use 10-100x the full fine-tuning rate).
"""
import ml_collections as mlc

from jaxssl.peft import objective as peft_objective

ATTENTION_QV = r"speech_encoder/encoder/layer_\d+/self_attn/(query|value)/dense/kernel"
PEFT_TRAINABLE = r"ctc_proj/.*|peft/.*"  # `apply`'s optim.trainable for the CTC configs.
LR_MULTIPLIER = 4.0


def section(method, *, total_steps):
  """The `peft` section for `method` (AdaLoRA's phases as fractions of `total_steps`)."""
  peft_objective.REGISTRY.get(method)  # An unknown name: one line with the choices.
  return mlc.ConfigDict(dict(
      method=method,
      # LoRA / AdaLoRA.
      targets=ATTENTION_QV, rank=8, alpha=16.0 if method == "lora" else 8.0, dropout=0.0,
      init_r=12, target_r=8, tinit=total_steps // 10, tfinal=total_steps // 5, delta_t=10,
      beta1=0.85, beta2=0.85, orth_reg_weight=0.5,
      # Ladder side-tuning.
      reduction=8, side_heads=0,
  ))


def apply(c, method, *, head="ctc_proj"):
  """Adds `c.peft` for `method` and, unless full, trains only the adapters / side network and
  the output layer `head` ("ctc_proj", or "classifier" for utterance tasks) at LR_MULTIPLIER
  times the learning rate. `c` is an unlocked fine-tuning config."""
  c.peft = section(method, total_steps=c.total_steps)
  # AdaLoRA's warmup starts after the recipe's head-only phase: the adapters get no gradient
  # before it, and importance scores of zero would mask every triplet at the first reallocation.
  frozen = c.finetune.get("freeze_encoder_steps", 0)
  c.peft.tinit = frozen + (c.total_steps - frozen) // 10
  if method == "ladder":
    c.peft.dropout = 0.1
  if method != "full":
    c.optim.trainable = rf"{head}/.*|peft/.*"
    c.optim.lr = c.optim.lr * LR_MULTIPLIER
  return c
