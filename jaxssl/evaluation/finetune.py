"""Fine-tuning of a whole pretrained model: fairseq's wav2vec_ctc recipe, CTC or utterance level.

  python -m jaxssl.evaluate --config=configs/finetune/ctc_demo.py \
      --config.upstream=workdir/w2v2_demo --workdir=workdir/finetune/ctc_demo
  python -m jaxssl.evaluate --config=configs/finetune/utterance_demo.py:task=speaker,peft=lora \
      --config.upstream=workdir/hubert_demo/iter2 --workdir=workdir/finetune/speaker_lora

Baevski et al. 2020 §4 (https://arxiv.org/abs/2006.11477) and fairseq's
examples/wav2vec/config/finetuning/base_*.yaml: the pretrained SpeechEncoder plus one linear
layer (Xavier-uniform, zero bias) onto the letters (or phones) and the CTC blank; the CNN feature
encoder stays frozen (feature_grad_mult 0: `optim.trainable` leaves it out, and the encoder's
GradMultiply stops its gradient); for the first `finetune.freeze_encoder_steps` updates
(freeze_finetune_updates) only the output layer trains; time masking with the mask embedding
(mask_prob 0.65, length 10) and channel masking (masking.channel_prob / channel_span: fairseq's
mask_channel_prob / mask_channel_length, zeros on whole channels of the projected features),
LayerDrop and activation dropout as configured; Adam (β 0.9/0.98,
eps 1e-8, no weight decay) under the tri-stage schedule (10% warmup, 40% hold, 50% exponential
decay to 5%); CTC summed per utterance and averaged over utterances (sentence_avg,
zero_infinity); greedy decoding (no language model), scored by WER / CER (letters) or PER (phones).

While the encoder is frozen its Adam state is left untouched (`optimizers.delayed`), as
fairseq's Adam skips parameters without gradients, and a separate compiled step (the objective's
`variant`) stops gradients at the encoder output, so those updates cost only the forward pass
plus the output layer. Training runs through the engine (training/engine.py): exact resume,
SIGTERM save, non-finite stop and cost accounting as in pretraining; dev is scored every
`eval_every_steps` from `eval_after_steps` on (`selection.DevSelection`; fairseq's
validate_after_updates) and test, plus any `splits.extra_tests` (LibriSpeech: test_clean and
test_other), with the best dev step's parameters. `dry_run` opens the splits and describes them
without building a model (`python -m jaxssl.evaluate ... --dry_run`).

With a `peft` config section (configs/finetune/peft.py) the encoder stays frozen and LoRA /
AdaLoRA adapters or a ladder side network train instead (jaxssl/peft/objective.py wraps the
objective; the saved model holds LoRA / AdaLoRA merged into the kernels).

`finetune.labels` picks the task: "phones" / "chars" train `CTCObjective` (CTC, PER or WER /
CER); "speaker" / "language" train `UtteranceObjective` (finetune_objectives.py: the final hidden
state mean-pooled over valid frames, one linear layer onto the classes, cross-entropy, accuracy;
the targets and the speaker holdout are the probes', jaxssl/evaluation/tasks.py). Everything else
(optimizer groups, schedule, frozen CNN, delayed encoder, PEFT, best-dev selection, outputs) is
shared.

A data2vec 2.0 upstream (`objective.name="data2vec2"`) fine-tunes its student encoder without the
decoder and teacher (`models.data2vec2.SpeechEncoder`: masked frames zeroed, no mask embedding),
read from the checkpoint's local_encoder/ and encoder/ (`ckpt.init_from_rename`); model/ is then
written in that layout too (local_encoder/, encoder/ and the output layer).
"""
import dataclasses
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections as mlc
import numpy as np

from jaxssl import pretrained
from jaxssl.data import batching
from jaxssl.data import lexicon as lexicon_lib
from jaxssl.data import pipeline
from jaxssl.data import sources as sources_lib
from jaxssl.evaluation import finetune_objectives
from jaxssl.evaluation import metrics as metrics_lib
from jaxssl.evaluation import probes
from jaxssl.evaluation import probing
from jaxssl.evaluation import results as results_lib
from jaxssl.evaluation import selection
from jaxssl.evaluation import tasks
from jaxssl.evaluation import upstreams
from jaxssl.interop import native
from jaxssl.models import frontends
from jaxssl.peft import objective as peft_objective
from jaxssl.training import checkpointing
from jaxssl.training import engine
from jaxssl.training import optimizers

# finetune.labels -> probe task (jaxssl/evaluation/tasks.py).
LABEL_TASKS = {"chars": "asr", "phones": "phone", "speaker": "speaker", "language": "language"}


def _model_config(upstream_config, overrides):
  """The upstream's `model` section with the fine-tuning dropouts / LayerDrop applied."""
  m = upstream_config.model.copy_and_resolve_references()
  with m.unlocked():
    for key, value in overrides.items():
      if key not in m and key != "feature_grad_mult":
        raise ValueError(f"model.{key} is not a field of the upstream's model section; "
                         f"valid: {sorted(m.keys())}.")
      if key == "feature_grad_mult":
        m.frontend.feature_grad_mult = value
      else:
        m[key] = value
  return m


def _batch(split, batch):
  """Loader batch -> the objective's batch (CTC: targets padded to `split.label_len`; utterance:
  one class per row, -1 on padding rows) with row weights; and the [B] record indices."""
  index = np.asarray(batch["index"])
  frames = np.maximum(frontends.frames_for(split.frontend, np.asarray(batch["valid"]).sum(-1)), 0)
  out = {"audio": np.asarray(batch["audio"], np.float32),
         "valid": np.asarray(batch["valid"], bool)}
  if split.kind == "utterance":
    classes = np.asarray(split.targets.ids)[np.maximum(index, 0)]
    out["labels"] = np.where(index >= 0, classes, -1).astype(np.int32)
    out["rows"] = ((index >= 0) & (frames > 0)).astype(np.float32)
    return out, index
  out.update(probes.ctc_targets(split.targets, index, split.label_len, frames))
  return out, index


@dataclasses.dataclass
class _Split:
  name: str
  source: Any
  targets: Any
  label_len: int
  frontend: Any    # The encoder's `model.frontend` section (frames per utterance).
  kind: str = "ctc"  # The task's kind: "ctc" or "utterance".

  def batches(self, data_cfg, seed, skip=0):
    """(batch, index) of one pass in the order of `seed`, from position `skip` on."""
    loader = pipeline.make_eval_loader(data_cfg, split=self.name, seed=seed, source=self.source)
    try:
      for position, batch in enumerate(loader):
        if position >= skip:
          yield _batch(self, batch)
    finally:
      loader.close()


def finetune(config, workdir, *, source_fn=None):
  """Fine-tunes `config.upstream` (CTC or utterance task), selects the best dev step, scores test.

  Args:
    config: a fine-tuning config (configs/finetune/*.py).
    workdir: output directory: results.json, results.md, metrics.jsonl, ckpt/ (the engine's,
      for resuming) and model/ (the best dev parameters as a standalone checkpoint, PEFT
      adapters merged: a probe upstream or `ckpt.init_from`).
    source_fn: `split name -> Source` instead of opening config.data (tests).

  Returns:
    The results dict, or {"preempted": True, "step"} when SIGTERM stopped the run after saving.
  """
  start = time.perf_counter()
  ft = config.finetune
  if ft.labels not in LABEL_TASKS:
    raise ValueError(f"finetune.labels={ft.labels!r}: choose from {sorted(LABEL_TASKS)}.")
  task = tasks.get(LABEL_TASKS[ft.labels])
  expected = f"{task.kind}_finetune"
  if config.task != expected:
    raise ValueError(f"task={config.task!r} with finetune.labels={ft.labels!r}: the config's "
                     f"task must be {expected!r}.")
  if config.upstream in upstreams.BASELINES or not config.upstream:
    raise ValueError(f"upstream={config.upstream!r}: fine-tuning needs a model checkpoint or "
                     "'random_init'.")
  scratch = config.upstream == "random_init"
  up_config = pretrained.load_config(config.upstream_arch if scratch else config.upstream)
  data_cfg = config.data.copy_and_resolve_references()
  with data_cfg.unlocked():
    data_cfg.normalize = bool(up_config.data.get("normalize", False))

  sources_ = results_lib.open_splits(config, source_fn=source_fn, workdir=workdir)
  sources_.update(_open_extra_tests(config, source_fn, workdir))
  tokens = {k: tasks.read_tokens(task, src) for k, src in sources_.items()}
  vocab = tasks.build_vocab(task, tokens["train"])
  targets = {k: tasks.make_targets(task, tokens[k], vocab, split=k,
                                   languages=tasks.languages_of(sources_[k])) for k in sources_}
  label_len = max(8, -(-max(t.max_length() for t in targets.values()) // 8) * 8)
  model_config = _model_config(up_config, config.model)
  splits = {k: _Split(k, sources_[k], targets[k], label_len, model_config.frontend, task.kind)
            for k in sources_}
  make_objective = (finetune_objectives.UtteranceObjective if task.kind == "utterance"
                    else finetune_objectives.CTCObjective)
  make_encoder, rename = finetune_objectives.upstream_encoder(up_config)
  objective = make_objective(model_config, config.masking, len(vocab), ft.final_dropout_rate,
                             freeze_encoder_steps=ft.freeze_encoder_steps,
                             make_encoder=make_encoder)
  tx, lr_schedule = optimizers.make_finetune_optimizer(
      config.optim, config.schedule, config.total_steps, heads=finetune_objectives.HEADS,
      freeze_encoder_steps=ft.freeze_encoder_steps)
  peft_cfg = config.get("peft") or None  # Parameter-efficient fine-tuning (jaxssl/peft/).
  if peft_cfg is not None:
    peft_objective.check(peft_cfg, config.optim.trainable)
    objective = peft_objective.wrap(objective, peft_cfg, model_config)
    tx = peft_objective.wrap_optimizer(tx, peft_cfg, config.total_steps)
  if not scratch:  # The encoder comes from the upstream (the engine's init_from).
    _check_upstream(config.upstream, objective, rename)
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.ckpt.init_from = config.upstream
      if rename:  # The upstream keeps the encoder under other names (data2vec 2.0).
        config.ckpt.init_from_rename = rename

  predict = jax.jit(objective.predict)

  def evaluate_split(params, split):
    predictions = {}
    for batch, index in split.batches(data_cfg, config.seed):
      ids, valid = predict(params, {"audio": batch["audio"], "valid": batch["valid"]})
      ids = np.asarray(ids)
      decoded = (ids if task.kind == "utterance"
                 else metrics_lib.ctc_greedy_decode(ids, np.asarray(valid)))
      predictions.update({int(i): decoded[r] for r, i in enumerate(index) if i >= 0})
    return results_lib.score(task, vocab, split.targets, predictions)

  metric = task.metrics[0]
  dev = selection.DevSelection(
      lambda params: evaluate_split(params, splits["dev"]), workdir,
      every=config.eval_every_steps, total=config.total_steps, metric=metric,
      lower_is_better=metric in results_lib.LOWER_IS_BETTER, name=expected,
      after=config.get("eval_after_steps", 0))
  train = splits["train"]
  out = engine.train(
      config, workdir, objective=objective, tx=tx, lr_schedule=lr_schedule,
      make_loader=lambda: selection.EpochLoader(lambda e, skip: (
          b for b, _ in train.batches(data_cfg, config.seed + e, skip))),
      callbacks=[dev])
  if out["preempted"]:  # Saved at SIGTERM; the same call resumes.
    return dict(preempted=True, step=out["step"])
  state = out["state"]
  params = dev.best_params(state.params)
  test = evaluate_split(params, splits["test"])
  tests = {config.splits.test: test}
  tests.update({k: evaluate_split(params, splits[k]) for k in _extra_tests(config)})
  peft_report = peft_objective.report(state.params, state.opt_state, config.optim.trainable)
  if peft_cfg is not None:
    peft_report["final_ranks"] = peft_objective.final_ranks(state.opt_state)
    if hasattr(objective, "export"):  # peft=full: `wrap` left the plain objective.
      params = objective.export(params)  # LoRA / AdaLoRA: merged, a plain model.
  native.save(os.path.join(workdir, "model"), _model_checkpoint_config(up_config, model_config),
              jax.device_get(checkpointing.rename_params(params, rename)), overwrite=True)
  results = dict(
      task=expected, labels=ft.labels, upstream=config.upstream,
      dataset=config.data.name, num_outputs=len(vocab),
      chance_accuracy=(1.0 / len(vocab)) if task.kind == "utterance" else None,
      utterances={k: len(v) for k, v in sources_.items()}, best_step=dev.best_step,
      dev=dev.best_dev, test=test, tests=tests, splits=_split_names(config),
      lexicon={src.report["split"]: lexicon_lib.summary(src.report)
               for src in sources_.values() if hasattr(src, "report")} or None,
      train_curve=probing.train_curve(workdir),
      dev_curve=dev.curve, peft=peft_report, seconds=time.perf_counter() - start,
      config=json.loads(config.to_json_best_effort()))
  results_lib.write_results(results, workdir, plot=False)
  return results


def _extra_tests(config):
  """`splits.extra_tests`: more test splits scored with the best dev step (LibriSpeech's
  test_other beside test_clean)."""
  names = tuple(config.splits.get("extra_tests", ()) or ())
  if names and config.splits.by_utterance:
    raise ValueError("splits.extra_tests needs splits.by_utterance=False (a holdout has one "
                     "test part).")
  clash = [n for n in names if n in ("train", "dev", "test")]
  if clash:
    raise ValueError(f"splits.extra_tests={names}: {clash} would shadow a split role.")
  return names


def _open_extra_tests(config, source_fn, workdir):
  """{split name: Source} of `splits.extra_tests`, with lexicon phones when asked."""
  names = _extra_tests(config)
  if not names:
    return {}
  d = config.data
  source_fn = source_fn or (lambda split: sources_lib.open_source(d.name, data_dir=d.data_dir,
                                                                  split=split))
  return results_lib.with_lexicon(config, {n: source_fn(n) for n in names}, workdir=workdir,
                                  names={n: n for n in names})


def _split_names(config):
  s = config.splits
  return dict(train=s.train, dev=s.dev, test=s.test, extra_tests=list(_extra_tests(config)))


def dry_run(config, *, source_fn=None):
  """Opens the config's splits and describes them; builds no model, trains nothing.

  Returns a JSON-able dict: the recipe's steps, learning rate, masking and batch, and per split
  (train / dev / test / extra tests) its name, utterances, hours and speakers, plus the lexicon
  report of phone runs. Missing data raises FileNotFoundError naming the split and the build
  command (`sources.open_source`).
  """
  ft = config.finetune
  if ft.labels not in LABEL_TASKS:
    raise ValueError(f"finetune.labels={ft.labels!r}: choose from {sorted(LABEL_TASKS)}.")
  opened = results_lib.open_splits(config, source_fn=source_fn)
  opened.update(_open_extra_tests(config, source_fn, None))
  names = _split_names(config)
  described = {}
  for role, src in opened.items():
    meta = src.metadata()
    entry = dict(split=names.get(role, role), utterances=len(src),
                 hours=round(float(np.sum(meta["num_samples"])) / 16_000 / 3600, 4),
                 speakers=len(set(str(x) for x in meta["speaker"])))
    if hasattr(src, "report"):
      entry["lexicon"] = lexicon_lib.summary(src.report)
    described[role] = entry
  return dict(task=config.task, recipe=config.get("recipe", ""), labels=ft.labels,
              dataset=config.data.name, total_steps=config.total_steps, lr=config.optim.lr,
              batch_size=config.data.batch_size, grad_accum_steps=config.optim.grad_accum_steps,
              freeze_encoder_steps=ft.freeze_encoder_steps,
              eval_every_steps=config.eval_every_steps,
              eval_after_steps=config.get("eval_after_steps", 0),
              masking=config.masking.to_dict(), model=config.model.to_dict(),
              splits=described)


def _check_upstream(upstream, objective, rename=()):
  """Raises ValueError unless the upstream checkpoint holds every encoder parameter (under the
  `rename` pairs of `upstream_encoder`)."""
  shapes = jax.eval_shape(objective.init, jax.random.PRNGKey(0), batching.dummy_batch())
  report = checkpointing.compare_params(upstream, nn.unbox(shapes), rename=rename)
  lost = [p for p in report["missing"] + report["shape_mismatch"]
          if p.startswith("speech_encoder/")]
  if lost:
    raise ValueError(f"upstream={upstream!r}: encoder parameters missing or misshapen in the "
                     f"checkpoint, e.g. {lost[:3]}.")


def _model_checkpoint_config(up_config, model_config):
  """The fine-tuned model's config.json: the upstream's, with the fine-tuning model section."""
  c = mlc.ConfigDict(up_config.to_dict())
  with c.unlocked():
    c.model = model_config
  return c
