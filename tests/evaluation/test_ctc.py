"""CTC fine-tuning: the optimizer's groups (frozen CNN, encoder frozen for K steps), the loss,
and a whole run from a saved checkpoint."""
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from configs import common
from configs.finetune import ctc_demo
from jaxssl import pretrained
from jaxssl.evaluation import finetune
from jaxssl.evaluation import finetune_objectives
from jaxssl.training import checkpointing
from jaxssl.training import optimizers
from tests.evaluation import random_run
from tests.evaluation import tone_corpus

TRAINABLE = r"speech_encoder/(?!feature_extractor/).*|ctc_proj/.*"


def _params():
  rng = np.random.default_rng(0)
  return {"speech_encoder": {"feature_extractor": {"w": jnp.asarray(rng.normal(size=(3,)))},
                             "encoder": {"w": jnp.asarray(rng.normal(size=(4,)))}},
          "ctc_proj": {"w": jnp.asarray(rng.normal(size=(2,)))}}


def _grads(step):
  return jax.tree.map(lambda x: jnp.cos(x * (step + 1)), _params())


def _run(tx, steps):
  params = _params()
  state, out = tx.init(params), []
  for t in range(steps):
    updates, state = tx.update(_grads(t), state, params)
    out.append(updates)
    params = optax.apply_updates(params, updates)
  return out


def _optim(weight_decay=0.0):
  return common.adamw(lr=1e-2, weight_decay=weight_decay, eps=1e-8, trainable=TRAINABLE)


SCHEDULE = mlc.ConfigDict(dict(name="tri_stage", phase_ratio=(0.1, 0.4, 0.5),
                               init_lr_scale=0.01, final_lr_scale=0.05))


def test_without_freezing_it_is_the_pretraining_optimizer():
  ours, _ = optimizers.make_finetune_optimizer(_optim(0.01), SCHEDULE, 20,
                                               heads=finetune_objectives.HEADS)
  reference, _ = optimizers.make_optimizer(_optim(0.01), SCHEDULE, 20)
  for a, b in zip(_run(ours, 5), _run(reference, 5)):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9), a, b)


def test_encoder_waits_k_steps_then_starts_a_fresh_adam_at_the_global_lr():
  k = 3
  tx, lr = optimizers.make_finetune_optimizer(_optim(), SCHEDULE, 20, freeze_encoder_steps=k,
                                              heads=finetune_objectives.HEADS)
  updates = _run(tx, k + 2)
  for t, u in enumerate(updates):
    assert not np.any(u["speech_encoder"]["feature_extractor"]["w"])  # The CNN never trains.
    assert np.all(u["ctc_proj"]["w"] != 0)
    assert np.any(u["speech_encoder"]["encoder"]["w"]) == (t >= k), t
  # fairseq's Adam skips parameters without gradients: the first encoder update is Adam's
  # first step (bias-corrected: -lr * sign(g)), at the schedule's global step.
  g = _grads(k)["speech_encoder"]["encoder"]["w"]
  np.testing.assert_allclose(updates[k]["speech_encoder"]["encoder"]["w"],
                             -lr(k) * g / (jnp.abs(g) + 1e-8), rtol=1e-5)


def test_sentence_ctc_loss_sums_per_utterance_and_averages_over_real_rows():
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 4))
  valid = jnp.arange(6)[None] < jnp.array([[6], [4], [6]])
  labels = jnp.array([[1, 2, 3], [2, 0, 0], [1, 0, 0]])
  label_valid = jnp.array([[1, 1, 1], [1, 0, 0], [1, 0, 0]], bool)
  nll = jax.jit(optax.ctc_loss)(logits, ~valid, labels, ~label_valid)
  got = jax.jit(finetune_objectives.sentence_ctc_loss)(logits, valid, labels, label_valid,
                                       jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(got, (nll[0] + nll[1]) / 2, rtol=1e-6)


def _finetune_config(upstream):
  c = ctc_demo.get_config("runlocal")
  with c.unlocked():
    c.upstream = upstream
    c.upstream_arch = "configs/wav2vec2/demo.py:runlocal"
    c.total_steps, c.eval_every_steps = 4, 4  # The tested params are the last step's.
    c.finetune.freeze_encoder_steps = 2
    c.optim.lr = 1e-3
  return c


def test_frozen_encoder_gets_no_gradient():
  config = pretrained.load_config("configs/wav2vec2/demo.py:runlocal")
  batch = {"audio": jnp.asarray(tone_corpus.ToneSource(2).records[0]["audio"][None, :4800]
                                / 32768.0, jnp.float32).repeat(2, 0),
           "valid": jnp.ones((2, 4800), bool), "labels": jnp.array([[1, 2, 3], [2, 2, 0]]),
           "label_valid": jnp.array([[1, 1, 1], [1, 1, 0]], bool), "rows": jnp.ones(2)}
  model = finetune._model_config(config, {"feature_grad_mult": 0.0})  # pylint: disable=protected-access
  objective = finetune_objectives.CTCObjective(model, config.masking, vocab_size=5)
  @jax.jit
  def grads(rng):
    params = jax.tree.map(lambda x: getattr(x, "value", x), objective.init(rng, batch),
                          is_leaf=lambda x: hasattr(x, "value"))
    out = {}
    for frozen in (False, True):
      obj = finetune_objectives.CTCObjective(objective.model_config, objective.masking_config, 5,
                             freeze_encoder=frozen)
      fn = lambda p, o=obj: o.loss(p, batch, rng, step=0, train=True)[0]  # pylint: disable=cell-var-from-loop
      out[frozen] = jax.value_and_grad(fn)(params)
    return out

  out = grads(jax.random.PRNGKey(1))
  (loss, g), (frozen_loss, frozen_g) = out[False], out[True]
  np.testing.assert_allclose(loss, frozen_loss, rtol=1e-6)  # Same forward pass.
  norm = lambda t: float(optax.tree.norm(t))  # pylint: disable=unnecessary-lambda-assignment
  assert norm(g["speech_encoder"]["encoder"]) > 0 and norm(g["ctc_proj"]) > 0
  assert norm(frozen_g["speech_encoder"]) == 0 and norm(frozen_g["ctc_proj"]) > 0
  # feature_grad_mult 0: the CNN never gets a gradient (fairseq's frozen feature encoder).
  assert norm(g["speech_encoder"]["feature_extractor"]) == 0


@pytest.mark.slow  # ~30 s of CPU (four compiles of the model on 8 devices).
def test_finetune_from_a_checkpoint_keeps_the_cnn_and_trains_the_rest(tmp_path):
  config = pretrained.load_config("configs/wav2vec2/demo.py:runlocal")
  run = str(tmp_path / "pretrained")
  saved = random_run.save(config, run)  # Random weights of the right shapes.

  out = str(tmp_path / "finetuned")
  results = finetune.finetune(_finetune_config(run), out, source_fn=tone_corpus.source_fn(16, 8))
  assert results["best_step"] == 4 and set(results["test"]) == {"per"}
  assert results["num_outputs"] == 2 + len(tone_corpus.PHONES)  # Blank, <unk>, phones.
  assert os.path.exists(os.path.join(out, "results.md"))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          {"speech_encoder": saved["speech_encoder"]})
  # The best (= last) step's params.
  tuned, report = checkpointing.load_params(os.path.join(out, "model"), abstract)
  assert not report["missing"]
  enc, new = saved["speech_encoder"], tuned["speech_encoder"]
  new, enc = jax.device_get((new, enc))
  jax.tree.map(np.testing.assert_array_equal, new["feature_extractor"], enc["feature_extractor"])
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), new["encoder"],
                                       enc["encoder"]))
  assert all(moved)  # Steps 3-4 trained every Transformer weight.


def test_finetune_config_errors_are_named(tmp_path):
  with pytest.raises(ValueError, match="fine-tuning needs a model checkpoint"):
    finetune.finetune(_finetune_config("mfcc"), str(tmp_path))
  c = _finetune_config("random_init")
  with c.unlocked():
    c.finetune.labels = "words"
  with pytest.raises(ValueError, match=r"finetune.labels='words': choose from \['chars'"):
    finetune.finetune(c, str(tmp_path))
