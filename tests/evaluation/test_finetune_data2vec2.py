"""Fine-tuning a data2vec 2.0 checkpoint: its student encoder without decoder or teacher
(models/data2vec2.py SpeechEncoder), read from local_encoder/ + encoder/ (ckpt.init_from_rename)."""
import dataclasses
import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs.finetune import ctc_demo
from configs.finetune import utterance_demo
from jaxssl import objectives
from jaxssl import pretrained
from jaxssl.evaluation import finetune
from jaxssl.evaluation import finetune_objectives
from jaxssl.interop import native
from jaxssl.models import frontends
from jaxssl.training import checkpointing
from jaxssl.training import optimizers
from tests.evaluation import random_run
from tests.evaluation import tone_corpus

ARCH = "configs/data2vec2/demo.py:runlocal"


def _batch():
  """Two tone utterances, the second padded after 3,200 samples."""
  audio = np.stack([r["audio"][:4800] for r in tone_corpus.ToneSource(2).records]) / 32768.0
  valid = np.arange(4800)[None] < np.array([[4800], [3200]])
  return {"audio": jnp.asarray(audio * valid, jnp.float32), "valid": jnp.asarray(valid),
          "labels": jnp.array([[1, 2, 3], [2, 2, 0]]),
          "label_valid": jnp.array([[1, 1, 1], [1, 1, 0]], bool), "rows": jnp.ones(2)}


def _ctc(config, **model_overrides):
  """The fine-tuning objective (ctc_demo's masks, with channel masks) of `config`'s data2vec 2.0
  model, and its rename pairs."""
  make_encoder, rename = finetune_objectives.upstream_encoder(config)
  model = finetune._model_config(config, model_overrides)  # pylint: disable=protected-access
  masks = ml_collections.ConfigDict(dict(ctc_demo.get_config("runlocal").masking,
                                         channel_prob=0.5, channel_span=4))
  return finetune_objectives.CTCObjective(model, masks, vocab_size=5,
                                          make_encoder=make_encoder), rename


def _abstract(ctc, batch):
  """The fine-tuning model's params as ShapeDtypeStructs on the first device (no init runs)."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = nn.unbox(jax.eval_shape(ctc.init, jax.random.PRNGKey(0), batch))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)


def _random(ctc, batch, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(0.1 * rng.standard_normal(x.shape), x.dtype),
                      _abstract(ctc, batch))


def _encode(ctc, params, batch, **kw):
  valid = frontends.frame_valid(ctc.model_config.frontend, batch["valid"])
  return ctc.make_encoder(ctc.model_config)().apply(
      {"params": params["speech_encoder"]}, batch["audio"], valid=valid,
      audio_valid=batch["valid"], train=False, **kw)


def test_encoder_reads_the_checkpoint_and_equals_represent(tmp_path):
  config = pretrained.load_config(ARCH)
  run = str(tmp_path / "pretrained")
  saved = random_run.save(config, run)  # {"local_encoder", "encoder", "decoder"}.
  ctc, rename = _ctc(config, **ctc_demo.get_config("runlocal").model)
  assert rename
  finetune._check_upstream(run, ctc, rename)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="encoder parameters missing or misshapen in the "
                     r"checkpoint, e.g. \['speech_encoder/encoder/"):
    finetune._check_upstream(run, ctc)  # pylint: disable=protected-access
  batch = _batch()
  params, report = checkpointing.load_params(run, _abstract(ctc, batch), rename=rename)
  assert sorted(report["missing"]) == ["ctc_proj/dense/bias", "ctc_proj/dense/kernel"]
  assert not report["shape_mismatch"]
  params = {"speech_encoder": params["speech_encoder"]}  # The head stays abstract.
  # Written back in the checkpoint's layout, the encoder is the checkpoint's (the decoder aside).
  back = checkpointing.rename_params(params, rename)
  encoder = {k: saved[k] for k in ("local_encoder", "encoder")}
  jax.tree.map(np.testing.assert_array_equal, back, encoder)
  # So saved (as finetune writes model/), it loads as a probe upstream without the decoder.
  native.save(str(tmp_path / "model"), config, back)
  loaded_config, loaded = pretrained.load_checkpoint(str(tmp_path / "model"))
  assert loaded_config.objective.name == "data2vec2" and sorted(loaded) == sorted(encoder)

  @jax.jit
  def both(params, saved):
    return _encode(ctc, params, batch), objectives.build(config).represent(saved, batch)

  out, (x, hidden, valid) = both(params, encoder)
  assert not bool(valid[1].all()) and len(out["hidden"]) == len(hidden) == 3
  np.testing.assert_allclose(out["x"], x, rtol=1e-5, atol=1e-6)
  for ours, theirs in zip(out["hidden"], hidden):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_masks_zero_the_projected_frames_and_channels_before_the_positional_encoder():
  config = pretrained.load_config(ARCH)
  ctc, rename = _ctc(config)
  batch = _batch()
  params = _random(ctc, batch, seed=1)
  d2v2 = objectives.build(config)
  p = checkpointing.rename_params(params, rename)  # The pretraining objective's layout.
  valid = d2v2.frame_valid(batch["valid"])
  masked = jnp.zeros(valid.shape, bool).at[:, 3:9].set(True)
  channels = jnp.zeros((2, 32), bool).at[0, :5].set(True).at[1, 20:].set(True)

  @jax.jit
  def run(params, p):
    ours = _encode(ctc, params, batch, masked=masked, channel_masked=channels)["x"]
    plain = _encode(ctc, params, batch)["x"]
    feats = d2v2.local_features(p, batch)
    by_hand = jnp.where(masked[..., None] | channels[:, None, :], 0.0, feats)
    ref, _ = d2v2.encoder(ffn_targets=False).apply({"params": p["encoder"]}, by_hand,
                                                   valid=valid, train=False)
    return ours, plain, ref

  ours, plain, ref = run(params, p)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(ours - plain)).max() > 1e-2  # The masks did change the output.


def test_the_cnn_is_frozen_and_the_frozen_phase_keeps_the_encoder():
  config = pretrained.load_config(ARCH)
  ctc, _ = _ctc(config, feature_grad_mult=0.0)
  batch = _batch()
  params = _random(ctc, batch, seed=2)
  # The frozen-encoder phase (a variant of its own) builds the same encoder.
  phased = dataclasses.replace(ctc, freeze_encoder_steps=2)
  assert phased.variant(1) and not phased.variant(2)
  frozen = phased.specialize(phased.variant(0))
  assert frozen.freeze_encoder and frozen.make_encoder is ctc.make_encoder
  assert dataclasses.replace(frozen, freeze_encoder=False) == phased
  # The recipe's optimizer groups leave the CNN, and only it, out, as for wav2vec 2.0.
  labels = optimizers.trainable_labels(ctc_demo.get_config("runlocal").optim.trainable)(params)
  labels = flax.traverse_util.flatten_dict(labels, sep="/")
  frozen_names = {k for k, v in labels.items() if v == "freeze"}
  assert frozen_names == {k for k in labels if k.startswith("speech_encoder/feature_extractor/")}
  assert frozen_names and "speech_encoder/post_extract_proj/dense/kernel" not in frozen_names

  # Training (time and channel masks, LayerDrop): no gradient reaches the CNN.
  loss, g = jax.jit(jax.value_and_grad(
      lambda p: ctc.loss(p, batch, jax.random.PRNGKey(3), step=0, train=True)[0]))(params)
  norm = lambda t: float(optax.tree.norm(t))  # pylint: disable=unnecessary-lambda-assignment
  enc = g["speech_encoder"]
  assert np.isfinite(loss) and norm(g["ctc_proj"]) > 0
  assert norm(enc["encoder"]) > 0 and norm(enc["post_extract_proj"]) > 0
  assert norm(enc["feature_extractor"]) == 0  # feature_grad_mult 0: fairseq's local_grad_mult.


@pytest.mark.slow  # ~35 s of CPU cold each (train and predict steps compiled on 8 devices).
@pytest.mark.parametrize("recipe", ["ctc", "utterance"])
def test_finetuning_of_a_data2vec2_checkpoint_end_to_end(recipe, tmp_path):
  config = pretrained.load_config(ARCH)
  run = str(tmp_path / "pretrained")
  saved = random_run.save(config, run)
  # utterance_demo's default peft=full: the plain objective, nothing to merge.
  c = (ctc_demo.get_config("runlocal") if recipe == "ctc"
       else utterance_demo.get_config("task=language,runlocal=True"))
  with c.unlocked():
    c.upstream, c.upstream_arch = run, ARCH
    c.total_steps, c.eval_every_steps = 2, 2  # One compiled step: the encoder trains at once.
    c.finetune.freeze_encoder_steps = 0
    c.optim.lr = 1e-3
  out = str(tmp_path / "finetuned")
  results = finetune.finetune(c, out, source_fn=tone_corpus.source_fn(8, 4))
  assert results["best_step"] == 2
  if recipe == "ctc":
    assert np.isfinite(results["test"]["per"])
  else:
    assert 0 <= results["test"]["accuracy"] <= 1 and results["num_outputs"] == 2  # en, fr.
  assert os.path.exists(os.path.join(out, "results.md"))
  # model/ is a data2vec 2.0 checkpoint without decoder: a probe upstream; the CNN as loaded.
  tuned_config, tuned = pretrained.load_checkpoint(os.path.join(out, "model"))
  assert tuned_config.objective.name == "data2vec2"
  assert sorted(tuned) == ["encoder", "local_encoder"]
  tuned, saved = jax.device_get((tuned, saved))
  jax.tree.map(np.testing.assert_array_equal, tuned["local_encoder"]["feature_extractor"],
               saved["local_encoder"]["feature_extractor"])
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), tuned["encoder"],
                                       saved["encoder"]))
  assert all(moved)  # Both steps trained every encoder weight.
