"""Parameter-efficient CTC fine-tuning of a BASE model on LibriSpeech (LoRA / AdaLoRA / ladder).

  python -m jaxssl.evaluate --config=configs/finetune/ctc_base_librispeech_peft.py:peft=lora \
      --config.upstream=ckpts/w2v2_base --config.data.data_dir=data/tfds \
      --workdir=workdir/finetune/base_100h_lora

configs/finetune/ctc_base_librispeech.py (fairseq base_100h; `:hours=10min`, 1 or 10 the others)
with the `peft` section of configs/finetune/peft.py: only the adapters / side network and the
output layer train, at 4x the full fine-tuning learning rate. Arguments: peft (lora, adalora,
ladder, full), hours (10min, 1, 10 or 100), runlocal. Not run here (no LibriSpeech on the project
machine).
"""
from configs import common
from configs.finetune import ctc_base_librispeech
from configs.finetune import peft


def get_config(arg=None):
  arg = common.parse_arg(arg, peft="lora", hours="100", runlocal=False)
  c = ctc_base_librispeech.get_config(f"hours={arg.hours},runlocal={arg.runlocal}")
  with c.unlocked():
    peft.apply(c, arg.peft)
  return c.lock()
