"""Fine-tuning the demo encoder for speaker or language identification (full or PEFT).

  python -m jaxssl.evaluate --config=configs/finetune/utterance_demo.py:task=speaker,peft=lora \
      --config.upstream=workdir/hubert_demo/iter2 --workdir=workdir/finetune/speaker_lora
  # task=speaker|language; peft=full|lora|adalora|ladder (default full); steps=N (default 1,000)

The recipe of configs/finetune/ctc_demo.py (Adam 0.9 / 0.98, tri-stage schedule, frozen CNN,
encoder frozen for the first 10% of updates, LayerDrop 0.05, best dev step tested, peak lr 5e-4,
4x that for the PEFT methods) with an utterance head instead of CTC: the final hidden state
mean-pooled over valid frames and one linear layer onto the classes ("classifier"), cross-entropy,
accuracy (`evaluation.ctc.UtteranceModel`). Time masks are light (p 0.05 of 10 frames, at least
2 spans: the rate of HF's Wav2Vec2ForSequenceClassification) rather than CTC's 0.65, since the
label depends on the whole utterance.
Splits as the probes' (configs/probes/): language ID trains on train and selects / tests on dev /
test (unseen speakers); speaker ID holds out 10% / 20% of every training speaker's utterances for
dev / test (`splits.by_utterance`), since the demo corpus's dev and test speakers are unseen.
"""
from configs import common
from configs import probes
from configs.finetune import ctc_demo
from configs.finetune import peft

TASKS = ("speaker", "language")


def get_config(arg=None):
  arg = common.parse_arg(arg, task="speaker", peft="full", steps=1_000, runlocal=False)
  if arg.task not in TASKS:
    raise ValueError(f"Config argument task={arg.task!r}; choose from {list(TASKS)}.")
  c = ctc_demo.get_config(f"steps={arg.steps},runlocal={arg.runlocal}")
  with c.unlocked():
    c.task = "utterance_finetune"
    c.finetune.labels = arg.task  # Speaker / language of the records' metadata.
    c.splits = probes.splits("demo_corpus", by_utterance=arg.task == "speaker")
    c.masking.prob = 0.05
    c.optim.trainable = r"speech_encoder/(?!feature_extractor/).*|classifier/.*"
    peft.apply(c, arg.peft, head="classifier")
  return c.lock()
