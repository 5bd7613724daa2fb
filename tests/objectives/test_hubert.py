"""HuBERT and MelHuBERT objectives: parameter counts, logits and loss against fairseq's recipe
(a numpy transcription of compute_nce + HubertCriterion), target alignment, loss at init, the
MelHuBERT frontend and masking, MACs, and kill-and-resume through the real trainer with labels.
"""
import importlib.util
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from configs.hubert import demo
from jaxssl import feature_stats
from jaxssl import objectives
from jaxssl.data import labels as labels_lib
from jaxssl.data import sources
from jaxssl.models import frontends
from jaxssl.models.frontends import mel
from jaxssl.models.frontends import mel_stack
from jaxssl.objectives import hubert
from jaxssl.objectives import melhubert
from jaxssl import pretrain
from tests.training import standin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(path, arg=None):
  spec = importlib.util.spec_from_file_location("_cfg", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _num_params(config):
  batch = dict(audio=jax.ShapeDtypeStruct((1, 16_000), jnp.float32),
               valid=jax.ShapeDtypeStruct((1, 16_000), jnp.bool_))
  params = jax.eval_shape(objectives.build(config).init, jax.random.key(0), batch)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("path,arg,want", [
    ("configs/hubert/base.py", "iteration=2", 94_697_600),   # K = 504 label embeddings.
    ("configs/hubert/base.py", "iteration=1", 94_595_200),   # K = 104.
    ("configs/hubert/large.py", None, 316_609_408),
])
def test_parameter_counts_match_fairseq(path, arg, want):
  assert _num_params(_config(path, arg)) == want


def _fairseq_loss(proj, embs, targets, masked, ok, w_m, w_u, temp=0.1):
  """numpy transcription of HubertModel.compute_nce + HubertCriterion (sum / sample size)."""
  def nce(x, t):
    pos = embs[t]
    targets_ = np.concatenate([pos[None], embs[:, None].repeat(len(x), 1)], 0)  # [1+K, S, F]
    cos = (x[None] * targets_).sum(-1) / np.maximum(
        np.linalg.norm(x, axis=-1)[None] * np.linalg.norm(targets_, axis=-1), 1e-8)
    logits = cos / temp
    neg_is_pos = (pos[None] == embs[:, None]).all(-1)  # [K, S]
    logits[1:][neg_is_pos] = -np.inf
    logits = logits.T
    m = logits.max(-1, keepdims=True)
    return -(logits[:, 0] - m[:, 0] - np.log(np.exp(logits - m).sum(-1)))
  sel_m, sel_u = masked & ok, ~masked & ok
  loss_m = nce(proj[sel_m], targets[sel_m]).sum()
  loss_u = nce(proj[sel_u], targets[sel_u]).sum()
  size = (sel_m.sum() if w_m > 0 else 0) + (sel_u.sum() if w_u > 0 else 0)
  return (w_m * loss_m + w_u * loss_u) / size


@pytest.mark.parametrize("w_m,w_u", [(1.0, 0.0), (1.0, 0.5), (0.0, 1.0)])
def test_cosine_logits_and_loss_match_fairseq(w_m, w_u):
  rs = np.random.default_rng(0)
  proj = rs.standard_normal((2, 30, 8)).astype(np.float32)
  embs = rs.uniform(size=(12, 8)).astype(np.float32)
  targets = rs.integers(0, 12, (2, 30))
  masked = rs.random((2, 30)) < 0.6
  ok = rs.random((2, 30)) < 0.9
  logits = hubert.cosine_logits(jnp.asarray(proj), jnp.asarray(embs), 0.1)
  loss, m = hubert.prediction_loss([logits], [jnp.asarray(targets)], jnp.asarray(masked),
                                   jnp.asarray(ok), masked_weight=w_m, unmasked_weight=w_u)
  want = _fairseq_loss(proj, embs, targets, masked, ok, w_m, w_u)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  sel = masked & ok
  acc = (np.asarray(logits).argmax(-1) == targets)[sel].mean()
  assert float(m["accuracy_masked"]) == pytest.approx(acc)
  assert float(m["masked_fraction"]) == pytest.approx(sel.sum() / ok.sum())


def test_frame_targets_follow_feat2tar_ratio_and_stop_where_labels_do():
  labels = jnp.arange(2 * 9).reshape(2, 9)
  valid = jnp.arange(9)[None] < jnp.array([[9], [5]])
  t100, ok100 = hubert.frame_targets(labels, valid, 6, 100)  # 100 Hz labels, 50 Hz frames.
  np.testing.assert_array_equal(t100[0, :5], [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(ok100, [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
  t50, ok50 = hubert.frame_targets(labels, valid, 6, 50)
  np.testing.assert_array_equal(t50[1], [9, 10, 11, 12, 13, 14])
  np.testing.assert_array_equal(ok50[1], [1, 1, 1, 1, 1, 0])
  sets, _ = hubert.frame_targets(jnp.stack([labels, labels + 100], 1), valid, 4, 50)
  assert sets.shape == (2, 2, 4) and int(sets[0, 1, 3]) == 103


@pytest.fixture(scope="module")
def tiny():
  """The demo config at test size with BASE's final_dim and loss weights."""
  c = demo.get_config("runlocal")
  with c.unlocked():
    c.model.final_dim = 256  # BASE's width: random cosines to the label embeddings concentrate.
    c.objective.feature_penalty_weight = 10.0
    c.objective.unmasked_weight = 0.0  # BASE's: masked frames only.
  obj = objectives.build(c)
  rs = np.random.default_rng(0)
  s = 24_000
  batch = dict(audio=jnp.asarray(rs.standard_normal((8, s)), jnp.float32),
               valid=jnp.ones((8, s), bool),
               labels=jnp.asarray(rs.integers(0, 100, (8, s // 160 + 1)), jnp.int32),
               labels_valid=jnp.ones((8, s // 160 + 1), bool))
  params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
  fn = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(1), step=0, train=False))
  return c, obj, params, batch, fn


def test_loss_at_init_is_log_k(tiny):
  _, obj, params, batch, fn = tiny
  loss, m = fn(params, batch)
  assert float(m["loss_masked"]) == pytest.approx(np.log(100), abs=0.1)
  assert float(m["loss_unmasked"]) == pytest.approx(np.log(100), abs=0.1)
  want = float(m["loss_prediction"]) + 10.0 * float(m["loss_features"])
  assert float(loss) == pytest.approx(want, rel=1e-5)
  # p = 0.8, spans of 10, 8 rows of 74 frames trimmed to their minimum count: fairseq's
  # require_same_masks gives 0.457 +- 0.055 for this batch (tests/fairseq_reference.py).
  assert 0.28 < float(m["masked_fraction"]) < 0.59
  counts = np.asarray(obj.draw_mask(jax.random.split(jax.random.key(1), 3)[0],
                                    obj.frame_valid(batch["valid"])).sum(-1))
  assert (counts == counts[0]).all()  # Equal masked counts per row, as fairseq's HuBERT.
  assert params["label_embs_concat"].shape == (100, 256)
  assert params["final_proj"]["dense"]["kernel"].shape == (32, 256)


def test_unmasked_labels_do_not_matter_with_weight_zero_and_dry_run_needs_no_labels(tiny):
  c, obj, params, batch, fn = tiny
  loss, m = fn(params, batch)
  # Redraw the mask's frames' labels only on unmasked frames: same loss.
  valid = obj.frame_valid(batch["valid"])
  masked = obj.draw_mask(jax.random.split(jax.random.key(1), 3)[0], valid)
  idx = np.floor(np.arange(valid.shape[1]) * 2).astype(int)
  labels = np.array(batch["labels"])
  unmasked_pos = idx[None].repeat(8, 0)[~np.asarray(masked)]
  rows = np.nonzero(~np.asarray(masked))[0]
  labels[rows, unmasked_pos] = (labels[rows, unmasked_pos] + 7) % 100
  loss2, m2 = fn(params, dict(batch, labels=jnp.asarray(labels)))
  assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
  assert abs(float(m2["loss_unmasked"]) - float(m["loss_unmasked"])) > 1e-3  # f32 noise: ~1e-6.
  # The trainer's --dry_run batch has no labels: zero labels of the loader's shape stand in.
  nolabels = {k: v for k, v in batch.items() if not k.startswith("labels")}
  assert jax.eval_shape(fn, params, nolabels)[0].shape == ()  # Traces (no compile needed).
  with c.unlocked():
    c.data.labels = ""
  with pytest.raises(ValueError, match="needs k-means labels: set data.labels"):
    objectives.build(c).loss(params, nolabels, jax.random.key(1), step=0)


def test_mel_stack_frontend_stacks_pairs_and_normalises_over_real_frames():
  rs = np.random.default_rng(0)
  audio = jnp.asarray(rs.standard_normal((2, 3_300)), jnp.float32)  # 21 mel frames -> 11.
  raw = np.asarray(mel.log_mel(audio, n_mels=40))
  stack = jax.jit(lambda a, v, normalize=True: mel_stack.MelStack(normalize=normalize).apply(
      {}, a, v), static_argnames="normalize")
  out = np.asarray(stack(audio, None, normalize=False))
  assert out.shape == (2, 11, 80) == (2, mel_stack.frames_for(3_300), 80)
  np.testing.assert_allclose(out[:, 3, :40], raw[:, 6], rtol=1e-5)
  np.testing.assert_allclose(out[:, 3, 40:], raw[:, 7], rtol=1e-5)
  np.testing.assert_array_equal(out[:, 10, 40:], 0.0)  # Odd tail: zero-padded, as MelHuBERT.
  a = np.asarray(stack(audio, None))
  frames = np.concatenate([a[:, :, :40], a[:, :10, 40:]], 1)  # The 21 real 10 ms frames.
  np.testing.assert_allclose(frames.mean(1), 0.0, atol=1e-4)  # Per-utterance CMVN.
  np.testing.assert_allclose(frames.std(1), 1.0, atol=1e-3)
  # Padding invariance: a row padded with zeros gives the same features on its real frames.
  padded = jnp.pad(audio, ((0, 0), (0, 1_700)))
  valid = jnp.repeat(jnp.arange(5_000)[None] < 3_300, 2, 0)
  fe = ml_collections.ConfigDict(dict(name="mel_stack", num_mels=40, stack=2))
  assert frontends.frame_valid(fe, valid).shape == (2, 16)
  assert frontends.frame_valid(fe, valid)[0].sum() == 11
  b = np.asarray(stack(padded, valid))
  np.testing.assert_allclose(b[:, :11], a, atol=2e-4)
  np.testing.assert_array_equal(b[:, 11:], 0.0)


def test_melhubert_masks_inputs_with_zeros_and_starts_at_log_k():
  c = _config("configs/hubert/melhubert.py", "runlocal")
  obj = objectives.build(c)
  rs = np.random.default_rng(0)
  s = 16_000
  batch = dict(audio=jnp.asarray(rs.standard_normal((8, s)), jnp.float32),
               valid=jnp.ones((8, s), bool),
               labels=jnp.asarray(rs.integers(0, 512, (8, s // 160 + 1)), jnp.int32),
               labels_valid=jnp.ones((8, s // 160 + 1), bool))
  params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
  assert "mask_emb" not in str(jax.tree_util.tree_structure(params))  # Zeros, not learned.
  assert "layer_norm" not in params["speech_encoder"]  # No LayerNorm over the mel features.
  assert params["final_proj"]["dense"]["kernel"].shape == (32, 512)
  loss, m = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(1), step=0, train=False))(
      params, batch)
  # torch's Linear init gives unit-variance inputs logits of variance 1/3 whatever the width,
  # so the expected cross-entropy is about log K + 1/6.
  assert float(loss) == pytest.approx(np.log(512) + 1 / 6, abs=0.15)
  assert float(m["loss_masked"]) == float(loss)
  # With every frame masked the input is all zeros: the output no longer depends on the audio.
  valid = obj.frame_valid(batch["valid"])
  run = jax.jit(lambda a, masked: obj.model.apply({"params": params}, a, valid=valid,
                                                  masked=masked, train=False)["logits"])
  np.testing.assert_allclose(run(batch["audio"], valid), run(batch["audio"][::-1], valid),
                             atol=1e-5)
  unmasked = jnp.zeros_like(valid)
  assert not np.allclose(run(batch["audio"], unmasked), run(batch["audio"][::-1], unmasked),
                         atol=1e-3)


def test_melhubert_saves_about_a_third_of_hubert_base_macs():
  mel = feature_stats.fill_config(_config("configs/hubert/melhubert.py"), required=False)
  out = melhubert.compare(objectives.build(mel),
                          objectives.build(_config("configs/hubert/base.py", "iteration=2")),
                          seconds=10.0)
  # The paper: 33.5% fewer MACs per second of speech (arXiv 2211.09944). Per second of a long
  # utterance: at 1 s, edge frames weigh in (Kaldi's whole frames give 49 stacked frames where
  # centred librosa frames give 51, the CNN 49).
  assert 0.30 < out["macs_saving"] < 0.37
  assert 4.0e9 < out["macs_per_sec"] < out["baseline_macs_per_sec"] < 8.0e9


def _labelled_source(tmp_path, k=20):
  src = sources.SyntheticSource(32, seed=0, min_samples=6_000, max_samples=12_000)
  meta = src.metadata()
  rs = np.random.default_rng(0)
  directory = str(tmp_path / "labels")
  labels_lib.write_split(directory, "train", list(meta["id"]),
                         [rs.integers(0, k, 1 + n // 160) for n in meta["num_samples"]])
  labels_lib.write_meta(directory, label_rate=100, num_clusters=k)
  return src, directory


def _labelled_config(directory, total_steps):
  c = demo.get_config("runlocal")
  with c.unlocked():
    c.total_steps, c.log_every_steps, c.data.name = total_steps, 1, "synthetic"
    c.data.labels = directory
    c.objective.num_clusters = 20
    c.model.final_dim = 256  # Cosines to random label embeddings concentrate: loss ~ log K.
    c.mesh = common.mesh(2, 2, 2)
  return c


def test_trains_on_k_means_labels_through_the_sharded_trainer(tmp_path):
  src, directory = _labelled_source(tmp_path)
  final = pretrain.train_and_evaluate(_labelled_config(directory, 2), str(tmp_path / "w"),
                                     source=src)
  assert final["step"] == 2 and final["train/skipped_steps"] == 0
  # Random labels over K = 20: the masked-frame loss starts near log 20.
  assert abs(final["train/loss_masked"] - np.log(20)) < 0.5
  assert 0.3 < final["train/masked_fraction"] < 0.9


@pytest.mark.slow  # Three trainer runs: ~1-2 min on 2 cores.
def test_kill_and_resume_matches_an_uninterrupted_run_on_a_sharded_mesh(tmp_path, monkeypatch):
  src, directory = _labelled_source(tmp_path)
  c = _labelled_config(directory, 4)
  straight = pretrain.train_and_evaluate(c, str(tmp_path / "straight"), source=src)
  assert straight["step"] == 4 and np.isfinite(straight["train/loss"])

  standin.sigterm_after_logging(monkeypatch, 2)
  resumed = str(tmp_path / "resumed")
  assert pretrain.train_and_evaluate(c, resumed, source=src)["step"] == 2
  monkeypatch.undo()
  assert pretrain.train_and_evaluate(c, resumed, source=src)["step"] == 4
  (sa, pa), (sb, pb) = (standin.latest_params(str(tmp_path / "straight")),
                        standin.latest_params(resumed))
  assert sa == sb == 4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), pa, pb)
