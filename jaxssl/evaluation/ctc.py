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
(mask_prob 0.65, length 10), LayerDrop and activation dropout as configured; Adam (β 0.9/0.98,
eps 1e-8, no weight decay) under the tri-stage schedule (10% warmup, 40% hold, 50% exponential
decay to 5%); CTC summed per utterance and averaged over utterances (sentence_avg,
zero_infinity); greedy decoding (no language model), scored by WER / CER (letters) or PER (phones).

While the encoder is frozen its Adam state is left untouched (`delayed`), as fairseq's Adam
skips parameters without gradients, and a separate compiled step stops gradients at the encoder
output, so those updates cost only the forward pass plus the output layer.

With a `peft` config section (configs/finetune/peft.py) the encoder stays frozen and LoRA /
AdaLoRA adapters or a ladder side network train instead (jaxssl/peft/objective.py wraps the
objective; the saved checkpoint holds LoRA / AdaLoRA merged into the kernels).

`finetune.labels` picks the task: "phones" / "chars" train `CTCModel` (CTC, PER or WER / CER);
"speaker" / "language" train `UtteranceModel` (the final hidden state mean-pooled over valid
frames, one linear layer onto the classes, cross-entropy, accuracy; the targets and the speaker
holdout are the probes', jaxssl/evaluation/tasks.py). Everything else (optimizer groups,
schedule, frozen CNN, delayed encoder, PEFT, best-dev selection, outputs) is shared.

Not implemented: fairseq's channel masking (mask_channel_prob 0.5, length 64) would need a hook
in models/wav2vec2.py between the feature projection and the Transformer.
"""
import dataclasses
import json
import logging
import time
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxssl import masking
from jaxssl.data import pipeline
from jaxssl.evaluation import evaluate
from jaxssl.evaluation import metrics as metrics_lib
from jaxssl.evaluation import probes
from jaxssl.evaluation import tasks
from jaxssl.evaluation import upstreams
from jaxssl.models import layers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.objectives import wav2vec2 as wav2vec2_objective
from jaxssl.peft import objective as peft_objective
from jaxssl.training import checkpointing
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state
from jaxssl.training import train_step

# finetune.labels -> probe task (jaxssl/evaluation/tasks.py).
LABEL_TASKS = {"chars": "asr", "phones": "phone", "speaker": "speaker", "language": "language"}
# The output layers: they train from the first update (the rest waits freeze_encoder_steps).
HEADS = ("ctc_proj", "classifier")


class CTCModel(nn.Module):
  """SpeechEncoder -> dropout -> Linear(D, vocab). audio [B, S] -> logits [B, T, V]."""
  speech_encoder: Any
  vocab_size: int
  final_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool,
               freeze_encoder: bool = False):
    x = self.speech_encoder(name="speech_encoder")(audio, valid=valid, masked=masked,
                                                   audio_valid=audio_valid, train=train)["x"]
    if freeze_encoder:  # fairseq runs the encoder under no_grad for freeze_finetune_updates.
      x = jax.lax.stop_gradient(x)
    x = nn.Dropout(self.final_dropout_rate)(x, deterministic=not train)
    return layers.Dense(self.vocab_size, axes=("embed", "vocab"),
                        kernel_init=nn.initializers.xavier_uniform(), name="ctc_proj")(x)


def sentence_ctc_loss(logits, valid, labels, label_valid, rows):
  """fairseq's CTC criterion with sentence_avg and zero_infinity: summed per utterance NLL,
  averaged over real rows; rows [B] is 1 on real rows whose targets fit, else 0."""
  nll = optax.ctc_loss(logits.astype(jnp.float32), (~valid).astype(jnp.float32), labels,
                       (~label_valid).astype(jnp.float32), blank_id=0)
  return (nll * rows).sum() / jnp.maximum((rows > 0).sum() + 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class CTCObjective:
  """The fine-tuning objective (`init`, `loss`, `predict`), usable by training/train_step.py.

  batch: "audio" [B, S], "valid" [B, S], "labels" [B, U] int32, "label_valid" [B, U],
  "rows" [B] float (see `sentence_ctc_loss`).
  """
  model_config: Any
  masking_config: Any
  vocab_size: int
  final_dropout_rate: float = 0.0
  freeze_encoder: bool = False
  make_model: Any = CTCModel  # (speech_encoder, vocab_size, final_dropout_rate) -> module.
  head: ClassVar[str] = "ctc_proj"  # The output layer's name (the ladder model's too).
  pooled: ClassVar[bool] = False  # Frame-level logits.

  @property
  def model(self):
    return self.make_model(wav2vec2_model.speech_encoder_from_config(self.model_config),
                           self.vocab_size, final_dropout_rate=self.final_dropout_rate)

  def init(self, rng, batch):
    valid = wav2vec2_objective.frame_valid(batch["valid"])
    rngs = dict(zip(("params", "dropout", "layerdrop"), jax.random.split(rng, 3)))
    return self.model.init(rngs, batch["audio"], valid=valid, train=False)["params"]

  def loss(self, params, batch, rng, *, step, train: bool = True):
    del step  # The frozen phase is a separate objective (static), see the module docstring.
    logits, valid = _apply(self, params, batch, rng, train=train)
    loss = sentence_ctc_loss(logits, valid, batch["labels"], batch["label_valid"], batch["rows"])
    return loss, {"ctc_loss": loss}

  def predict(self, params, batch):
    """Arg-max label per frame [B, T] and the frame mask [B, T]."""
    valid = wav2vec2_objective.frame_valid(batch["valid"])
    logits = self.model.apply({"params": params}, batch["audio"], valid=valid,
                              audio_valid=batch["valid"], train=False)
    return jnp.argmax(logits, -1), valid


def _apply(objective, params, batch, rng, *, train):
  """The objective's model on a batch (time masks when training): (logits, frame valid [B, T])."""
  k_mask, k_drop, k_ld = jax.random.split(rng, 3)
  valid = wav2vec2_objective.frame_valid(batch["valid"])
  m = objective.masking_config
  masked = None
  if train and m.prob > 0:
    # Own count per row (fine-tuning batches are padded, of mixed lengths).
    masked = masking.span_mask(k_mask, valid, prob=m.prob, span=m.span,
                               min_spans=m.min_spans, same_count=False)
  logits = objective.model.apply({"params": params}, batch["audio"], valid=valid, masked=masked,
                                 audio_valid=batch["valid"], train=train,
                                 freeze_encoder=objective.freeze_encoder, rngs={"dropout": k_drop, "layerdrop": k_ld})
  return logits, valid


def masked_mean(x, valid):
  """Mean over the valid frames: x [B, T, D], valid [B, T] -> [B, D] (0 for a row without any)."""
  w = valid.astype(x.dtype)[..., None]
  return (x * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


class UtteranceModel(nn.Module):
  """SpeechEncoder -> mean over valid frames -> dropout -> Linear(D, classes).

  audio [B, S] -> logits [B, C]. The final hidden state is pooled (the probes' utterance head
  pools a learned layer mixture instead; fine-tuning adapts the last layer itself).
  """
  speech_encoder: Any
  num_classes: int
  final_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool,
               freeze_encoder: bool = False):
    x = self.speech_encoder(name="speech_encoder")(audio, valid=valid, masked=masked,
                                                   audio_valid=audio_valid, train=train)["x"]
    if freeze_encoder:
      x = jax.lax.stop_gradient(x)
    x = masked_mean(x.astype(jnp.float32), valid)
    x = nn.Dropout(self.final_dropout_rate)(x, deterministic=not train)
    return layers.Dense(self.num_classes, axes=("embed", "vocab"),
                        kernel_init=nn.initializers.xavier_uniform(), name="classifier")(x)


@dataclasses.dataclass(frozen=True)
class UtteranceObjective(CTCObjective):
  """Utterance classification: cross-entropy averaged over real rows, arg-max class.

  The fields, `model` and `init` of `CTCObjective` (subclassed for them); `vocab_size` is the
  class count. batch: "audio" [B, S], "valid" [B, S], "labels" [B] int32 classes (-1 on
  padding rows), "rows" [B] float (1 on real rows with at least one frame).
  """
  make_model: Any = UtteranceModel
  head: ClassVar[str] = "classifier"
  pooled: ClassVar[bool] = True

  def loss(self, params, batch, rng, *, step, train: bool = True):
    del step
    logits, _ = _apply(self, params, batch, rng, train=train)
    loss = probes.classification_loss(logits, batch["labels"], batch["rows"])
    return loss, {"ce_loss": loss}

  def predict(self, params, batch):
    """Arg-max class per utterance [B] and the row mask [B] (rows with a valid frame)."""
    valid = wav2vec2_objective.frame_valid(batch["valid"])
    logits = self.model.apply({"params": params}, batch["audio"], valid=valid,
                              audio_valid=batch["valid"], train=False)
    return jnp.argmax(logits, -1), valid.any(-1)


def delayed(inner, num_steps: int):
  """`inner` whose updates are zero, and whose state stays untouched, for `num_steps` calls."""
  if num_steps <= 0:
    return inner

  def init(params):
    return (jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    count, inner_state = state
    new_updates, new_inner = inner.update(updates, inner_state, params)
    frozen = count < num_steps
    pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(frozen, x, y), a, b)
    return (pick(jax.tree.map(jnp.zeros_like, new_updates), new_updates),
            (count + 1, pick(inner_state, new_inner)))

  return optax.GradientTransformation(init, update)


def make_optimizer(optim_cfg, schedule_cfg, total_steps, *, freeze_encoder_steps=0):
  """Adam + schedule with three groups: output layer, encoder (delayed), frozen (CNN).

  Equals `training.optimizers.make_optimizer` when freeze_encoder_steps is 0. The learning rate
  follows the global step in every group (fairseq's scheduler counts updates, not a group's).

  Returns:
    (tx, lr_schedule).
  """
  lr_schedule = optimizers.make_schedule(schedule_cfg, optim_cfg.lr, total_steps)

  def branch(delay):
    adam = optax.chain(optax.scale_by_adam(b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps),
                       optax.add_decayed_weights(optim_cfg.weight_decay))
    return optax.chain(delayed(adam, delay), optax.scale_by_learning_rate(lr_schedule))

  trainable = optimizers.trainable_labels(optim_cfg.trainable)

  def labels(params):
    base = trainable(params)
    return jax.tree_util.tree_map_with_path(
        lambda p, lab: lab if lab == "freeze" else (
            "head" if optimizers.param_path(p).split("/")[0] in HEADS else "encoder"),
        base)

  groups = {"head": branch(0), "encoder": branch(freeze_encoder_steps),
            "freeze": optax.set_to_zero()}
  clip = optim_cfg.get("clip_norm", 0.0)
  tx = optax.chain(optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(),
                   optax.multi_transform(groups, labels))
  return tx, lr_schedule


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
  frames = np.maximum(variants.frames_for(np.asarray(batch["valid"]).sum(-1)), 0)
  out = {"audio": np.asarray(batch["audio"], np.float32),
         "valid": np.asarray(batch["valid"], bool)}
  if split.kind == "utterance":
    classes = np.asarray(split.targets.ids)[np.maximum(index, 0)]
    out["labels"] = np.where(index >= 0, classes, -1).astype(np.int32)
    out["rows"] = ((index >= 0) & (frames > 0)).astype(np.float32)
    return out, index
  ids = [split.targets.ids[i] if i >= 0 else np.zeros(0, np.int32) for i in index]
  labels = np.zeros((len(index), split.label_len), np.int32)
  for r, x in enumerate(ids):
    labels[r, :len(x)] = x
  lengths = np.array([len(x) for x in ids])
  rows = (index >= 0) & (frames > 0) & probes.ctc_feasible(ids, frames)
  out.update(labels=labels, label_valid=np.arange(split.label_len)[None] < lengths[:, None],
             rows=rows.astype(np.float32))
  return out, index


@dataclasses.dataclass
class _Split:
  name: str
  source: Any
  targets: Any
  label_len: int
  kind: str = "ctc"  # The task's kind: "ctc" or "utterance".

  def batches(self, data_cfg, seed):
    loader = pipeline.make_eval_loader(data_cfg, split=self.name, seed=seed, source=self.source)
    try:
      for batch in loader:
        yield _batch(self, batch)
    finally:
      loader.close()


def finetune(config, workdir, *, source_fn=None):
  """Fine-tunes `config.upstream` (CTC or utterance task), selects the best dev step, scores test.

  Args:
    config: a fine-tuning config (configs/finetune/*.py).
    workdir: output directory: results.json, results.md, metrics.jsonl and ckpt/ (the best
      dev parameters, readable by `checkpointing.load_params` / as an upstream).
    source_fn: `split name -> Source` instead of opening config.data (tests).

  Returns:
    The results dict.
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
  up_config = upstreams.load_config(config.upstream_arch if scratch else config.upstream)
  data_cfg = config.data.copy_and_resolve_references()
  with data_cfg.unlocked():
    data_cfg.normalize = bool(up_config.data.get("normalize", False))

  sources_ = evaluate.open_splits(config, source_fn=source_fn)
  tokens = {k: tasks.read_tokens(task, src) for k, src in sources_.items()}
  vocab = tasks.build_vocab(task, tokens["train"])
  targets = {k: tasks.make_targets(task, tokens[k], vocab, split=k) for k in sources_}
  label_len = max(8, -(-max(t.max_length() for t in targets.values()) // 8) * 8)
  splits = {k: _Split(k, sources_[k], targets[k], label_len, task.kind) for k in sources_}

  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))
  model_config = _model_config(up_config, config.model)
  make_objective = UtteranceObjective if task.kind == "utterance" else CTCObjective
  objective = make_objective(model_config, config.masking, len(vocab), ft.final_dropout_rate)
  tx, lr_schedule = make_optimizer(config.optim, config.schedule, config.total_steps,
                                   freeze_encoder_steps=ft.freeze_encoder_steps)
  peft_cfg = config.get("peft") or None  # Parameter-efficient fine-tuning (jaxssl/peft/).
  if peft_cfg is not None:
    peft_objective.check(peft_cfg, config.optim.trainable)
    objective = peft_objective.wrap(objective, peft_cfg, model_config)
    tx = peft_objective.wrap_optimizer(tx, peft_cfg, config.total_steps)
  batch_sharding = partitioning.batch_sharding(mesh)

  def train_batches():
    e = 0
    while True:
      yield from splits["train"].batches(data_cfg, config.seed + e)
      e += 1

  train = train_batches()
  local, _ = next(train)
  state, state_sharding = train_state.create(
      objective, tx, partitioning.abstract_batch(local, batch_sharding), config.seed, mesh, rules)
  peft_report = peft_objective.report(state.params, state.opt_state, config.optim.trainable)
  logging.info("%s: %s", expected, peft_report)
  if not scratch:
    params, report = checkpointing.load_params(config.upstream, state.params)
    lost = [p for p in report["missing"] + report["shape_mismatch"]
            if p.startswith("speech_encoder/")]
    if lost:
      raise ValueError(f"upstream={config.upstream!r}: encoder parameters missing or misshapen "
                       f"in the checkpoint, e.g. {lost[:3]}.")
    state = state.replace(params=params)
  steps = {frozen: train_step.make_train_step(
      mesh, state_sharding, batch_sharding, rules=rules,
      objective=dataclasses.replace(objective, freeze_encoder=frozen), tx=tx,
      lr_schedule=lr_schedule, grad_accum_steps=config.optim.grad_accum_steps)
           for frozen in (False, True)}

  def predict_fn(params, batch):
    with partitioning.activation_rules(mesh, rules):
      return objective.predict(params, batch)

  predict = jax.jit(predict_fn)

  def evaluate_split(params, split):
    predictions = {}
    for batch, index in split.batches(data_cfg, config.seed):
      ids, valid = predict(params, {"audio": batch["audio"], "valid": batch["valid"]})
      ids = np.asarray(ids)
      decoded = (ids if task.kind == "utterance"
                 else metrics_lib.ctc_greedy_decode(ids, np.asarray(valid)))
      predictions.update({int(i): decoded[r] for r, i in enumerate(index) if i >= 0})
    return evaluate.score(task, vocab, split.targets, predictions)

  metric = task.metrics[0]
  sign = 1.0 if metric in evaluate.LOWER_IS_BETTER else -1.0  # Accuracy: higher is better.
  best, curve, dev_curve = None, [], []
  for step in range(1, config.total_steps + 1):
    if step > 1:
      local, _ = next(train)
    batch = partitioning.make_global_batch(local, batch_sharding)
    state, m = steps[step <= ft.freeze_encoder_steps](state, batch)
    if step % config.log_every_steps == 0 or step == 1:
      curve.append((step, float(m["train/loss"])))
      logging.info("%s step %d: loss %.4f lr %.3g", expected, step, curve[-1][1],
                   float(m["train/learning_rate"]))
    if step % config.eval_every_steps == 0 or step == config.total_steps:
      dev = evaluate_split(state.params, splits["dev"])
      dev_curve.append((step, dev))
      logging.info("%s step %d: dev %s", expected, step, dev)
      if best is None or sign * dev[metric] < sign * best[1][metric]:
        # A device copy (the state is donated to the next step) keeps the shardings, so
        # scoring test with these params reuses the compiled predict.
        best = (step, dev, jax.tree.map(jnp.copy, state.params))
  best_step, dev, params = best
  test = evaluate_split(params, splits["test"])
  if isinstance(objective, peft_objective.PeftObjective):
    peft_report["final_ranks"] = peft_objective.final_ranks(state.opt_state)
    params = objective.export(params)  # LoRA / AdaLoRA: merged, a plain model.
  ckpt = checkpointing.Checkpointer(workdir, config.ckpt)
  ckpt.save(best_step, {"params": params}, {"step": best_step}, force=True)
  ckpt.wait()
  ckpt.close()
  checkpointing.save_config(config, workdir)
  results = dict(
      task=expected, labels=ft.labels, upstream=config.upstream,
      dataset=config.data.name, num_outputs=len(vocab),
      chance_accuracy=(1.0 / len(vocab)) if task.kind == "utterance" else None,
      utterances={k: len(v) for k, v in sources_.items()}, best_step=best_step, dev=dev,
      test=test, train_curve=curve, dev_curve=dev_curve, peft=peft_report,
      seconds=time.perf_counter() - start, config=json.loads(config.to_json_best_effort()))
  evaluate.write_results(results, workdir, plot=False)
  return results
