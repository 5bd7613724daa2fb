"""Utterance-level fine-tuning (speaker / language ID): the pooled model, its objective under
LoRA and the ladder, the optimizer's head group, config errors, and a whole run."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from configs.finetune import utterance_demo
from jaxssl.evaluation import finetune
from jaxssl.evaluation import finetune_objectives
from jaxssl.training import optimizers
from tests.evaluation import tone_corpus
from tests.peft import helpers

CLASSES = 4
TRAINABLE = r"classifier/.*|peft/.*"


def _base():
  return helpers.base_objective(finetune_objectives.UtteranceObjective, CLASSES)


def _speaker_batch(samples=4800):
  """One utterance of each tone-corpus speaker (distinct pitch and hum), labels = speaker."""
  records = tone_corpus.ToneSource(CLASSES).records
  audio = np.stack([r["audio"][:samples] / 32768.0 for r in records])
  return {"audio": jnp.asarray(audio, jnp.float32), "valid": jnp.ones(audio.shape, bool),
          "labels": jnp.arange(CLASSES, dtype=jnp.int32), "rows": jnp.ones(CLASSES)}


def test_masked_mean_ignores_padded_frames():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3))
  valid = jnp.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
  pooled = finetune_objectives.masked_mean(x, valid)
  np.testing.assert_allclose(pooled[0], x[0, :2].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(pooled[1], 0.0)  # No valid frame: zeros, not NaN.
  garbage = x.at[:, 2:].set(1e6)
  np.testing.assert_array_equal(finetune_objectives.masked_mean(garbage, valid)[0], pooled[0])


class _Frames(nn.Module):
  """A stand-in encoder: audio [B, T * 3] -> frames {"x": [B, T, 3]}, position by position."""

  @nn.compact
  def __call__(self, audio, *, valid, masked=None, audio_valid=None, train: bool):
    del valid, masked, audio_valid, train
    return {"x": jnp.tanh(audio.reshape(audio.shape[0], -1, 3))}


def test_utterance_logits_ignore_padded_frames():
  # The encoder (a stand-in here) keeps valid frames padding-free; the head itself must see only
  # the valid frames.
  model = finetune_objectives.FinetuneModel(_Frames, 5, head="classifier", pool=True)
  audio = jax.random.normal(jax.random.PRNGKey(0), (2, 24))  # 8 frames.
  valid = jnp.array([[True] * 3 + [False] * 5, [True] * 8])
  params = model.init(jax.random.PRNGKey(1), audio, valid=valid, train=False)
  logits = jax.jit(lambda a, v: model.apply(params, a, valid=v, train=False))
  clean = logits(audio, valid)
  assert clean.shape == (2, 5)
  np.testing.assert_allclose(logits(audio.at[0, 9:].set(7.0), valid), clean, rtol=1e-6)
  np.testing.assert_allclose(logits(audio[:1, :9], valid[:1, :3])[0], clean[0], rtol=1e-6)
  assert np.abs(logits(audio.at[0, :9].set(7.0), valid)[0] - clean[0]).max() > 1e-3


def test_lora_utterance_loss_decreases_and_frozen_params_stay_bitwise():
  objective = helpers.peft_objective_for("lora", base=_base(), rank=4)
  b = _speaker_batch()
  params = helpers.init(objective)
  tx = helpers.optimizer(objective, lr=3e-2, trainable=TRAINABLE)

  @jax.jit
  def step(p, opt_state):
    (loss, metrics), grads = jax.value_and_grad(
        lambda q: objective.loss(q, b, jax.random.PRNGKey(0), step=0), has_aux=True)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss, metrics["ce_loss"]

  new, opt_state, losses = params, tx.init(params), []
  for _ in range(13):
    new, opt_state, loss, ce = step(new, opt_state)
    losses.append(float(loss))
    assert float(ce) == losses[-1]  # LoRA adds no term to the cross-entropy.
  assert np.isfinite(losses[0]) and losses[-1] < 0.5 * losses[0], losses
  jax.tree.map(np.testing.assert_array_equal, new["speech_encoder"], params["speech_encoder"])
  assert np.any(new["peft"]["speech_encoder"]["encoder"]["layer_00"]["self_attn"]["value"][
      "dense"]["lora_b"] != 0)
  # The merged (exported) model's predictions: every speaker of the batch learned.
  pred, rows = jax.jit(objective.predict)(new, b)
  assert pred.shape == (CLASSES,) and bool(rows.all())
  np.testing.assert_array_equal(pred, np.arange(CLASSES))


def test_ladder_utterance_model_pools_the_side_network_and_spares_the_backbone():
  objective = helpers.peft_objective_for("ladder", base=_base())
  params = helpers.init(objective)
  assert set(params) == {"speech_encoder", "peft", "classifier"}
  assert params["classifier"]["dense"]["kernel"].shape == (32, CLASSES)  # Pooled [B, D] input.
  b = _speaker_batch()
  grads = jax.jit(jax.grad(
      lambda p: objective.base.loss(p, b, jax.random.PRNGKey(0), step=0)[0]))(params)
  norm = lambda t: float(optax.tree.norm(t))  # pylint: disable=unnecessary-lambda-assignment
  assert norm(grads["speech_encoder"]) == 0.0
  assert norm(grads["peft"]) > 0 and norm(grads["classifier"]) > 0


def test_classifier_is_the_head_group_and_trains_while_the_encoder_waits():
  params = {"speech_encoder": {"feature_extractor": {"w": jnp.ones(3)},
                               "encoder": {"w": jnp.ones(4)}},
            "classifier": {"w": jnp.ones(2)}}
  tx, _ = optimizers.make_finetune_optimizer(
      common.adamw(lr=1e-2, weight_decay=0.0,
                   trainable=r"speech_encoder/(?!feature_extractor/).*|classifier/.*"),
      helpers.SCHEDULE, 10, heads=finetune_objectives.HEADS, freeze_encoder_steps=2)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert np.all(updates["classifier"]["w"] != 0)
  assert not np.any(updates["speech_encoder"]["encoder"]["w"])


def test_config_errors_are_named(tmp_path):
  with pytest.raises(ValueError, match=r"task='phone'; choose from \['speaker', 'language'\]"):
    utterance_demo.get_config("task=phone")
  with pytest.raises(ValueError, match=r"peft.method='qlora': unknown PEFT method"):
    utterance_demo.get_config("peft=qlora")
  c = utterance_demo.get_config("runlocal")
  with c.unlocked():
    c.task = "ctc_finetune"
  with pytest.raises(ValueError, match=r"task='ctc_finetune' with finetune.labels='speaker'.*"
                                       r"'utterance_finetune'"):
    finetune.finetune(c, str(tmp_path))
  c = utterance_demo.get_config("runlocal,peft=lora")
  with c.unlocked():
    c.upstream, c.upstream_arch = "random_init", "configs/wav2vec2/demo.py:runlocal"
    c.optim.trainable = r"speech_encoder/.*|classifier/.*"
  with pytest.raises(ValueError, match=r"the regex must match 'peft/...'"):
    finetune.finetune(c, str(tmp_path), source_fn=tone_corpus.source_fn(12, 4))


@pytest.mark.slow  # ~40 s of CPU: the model compiled for train, frozen-phase and predict steps.
def test_speaker_finetune_with_lora_end_to_end(tmp_path):
  c = utterance_demo.get_config("task=speaker,peft=lora,runlocal")
  with c.unlocked():
    c.upstream, c.upstream_arch = "random_init", "configs/wav2vec2/demo.py:runlocal"
    c.total_steps, c.eval_every_steps, c.finetune.freeze_encoder_steps = 4, 2, 1
  results = finetune.finetune(c, str(tmp_path), source_fn=tone_corpus.source_fn(24, 4))
  assert results["task"] == "utterance_finetune" and set(results["test"]) == {"accuracy"}
  assert results["num_outputs"] == len(tone_corpus.SPEAKERS)
  # The by_utterance holdout of the 24 training records: 4 speakers x (4 train, 1 dev, 1 test).
  assert results["utterances"] == {"train": 16, "dev": 4, "test": 4}
  assert 0 < results["peft"]["trainable_params"] < results["peft"]["total_params"] / 5
  assert (tmp_path / "results.md").exists() and (tmp_path / "ckpt").exists()

