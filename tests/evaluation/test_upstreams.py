"""Upstreams: baseline features, hidden states of a model (fresh or restored), clear errors."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import kaldi_native_fbank as knf
import numpy as np
import pytest

from configs import common
from jaxssl import pretrained
from jaxssl import objectives
from jaxssl.data import features
from jaxssl.evaluation import upstreams
from jaxssl.training import checkpointing

TINY = "configs/wav2vec2/demo.py:runlocal"  # The demo recipe at the "tiny" size.


def _batch(lengths, total):
  rng = np.random.default_rng(0)
  audio = np.zeros((len(lengths), total), np.float32)
  for i, n in enumerate(lengths):
    audio[i, :n] = 0.1 * rng.standard_normal(n)
  return {"audio": audio, "valid": np.arange(total)[None] < np.array(lengths)[:, None]}


def _knf(wave, kind):
  """kaldi-native-fbank on the [-1, 1) floats, as s3prl's torchaudio.compliance.kaldi call."""
  opts = knf.MfccOptions() if kind == "mfcc" else knf.FbankOptions()
  opts.frame_opts.dither = 0.0  # torchaudio's default; knf's is 3e-5.
  if kind == "mfcc":
    opts.use_energy = False  # torchaudio's default; Kaldi's is true.
  else:
    opts.mel_opts.num_bins = 80
  comp = knf.OnlineMfcc(opts) if kind == "mfcc" else knf.OnlineFbank(opts)
  comp.accept_waveform(16_000, wave.tolist())
  comp.input_finished()
  return np.stack([comp.get_frame(i) for i in range(comp.num_frames_ready)])


def _np_deltas(x):
  """torchaudio.functional.compute_deltas (win_length 5, replicate) along time, in NumPy."""
  p = np.pad(x, ((2, 2), (0, 0)), mode="edge")
  return sum(k * p[2 + k:2 + k + len(x)] for k in range(-2, 3)) / 10.0


@pytest.mark.parametrize("kind,dim", [("mfcc", 39), ("fbank", 240)])
def test_baselines_are_s3prls_kaldi_features_with_deltas_and_cmvn(kind, dim):
  up, raw_up = upstreams.load(kind), upstreams.load(f"{kind}_no_cmvn")
  assert (up.num_hidden, up.dim, up.frame_rate, up.normalize) == (1, dim, 100.0, False)
  batch = _batch([8000, 4000, 0], 8000)
  hidden, valid = up(batch)
  raw, raw_valid = raw_up(batch)
  assert hidden.shape == raw.shape == (3, 1, 48, dim)
  # Kaldi's snip_edges frames: 1 + (n - 400) // 160; a padding row has none.
  assert list(valid.sum(-1)) == list(raw_valid.sum(-1)) == [48, 23, 0]
  static = _knf(batch["audio"][1, :4000], kind)  # Padding past 4000 samples changes nothing.
  d1 = _np_deltas(static)
  want = np.concatenate([static, d1, _np_deltas(d1)], -1)
  assert want.shape == (23, dim)
  # knf's float32 log energies agree to ~1e-4 (test_kaldi_fbank); deltas add no error to speak of.
  np.testing.assert_allclose(raw[1, 0, :23], want, rtol=1e-4, atol=1e-3)
  cmvn = (want - want.mean(0)) / (1e-10 + want.std(0, ddof=1))  # s3prl: torch's unbiased std.
  np.testing.assert_allclose(hidden[1, 0, :23], cmvn, rtol=1e-3, atol=1e-3)
  assert not hidden[1, 0, 23:].any() and not hidden[2].any() and not raw[2].any()


def test_librosa_mfcc_baseline_is_the_earlier_one():
  up = upstreams.load("mfcc_librosa")
  assert (up.num_hidden, up.dim, up.frame_rate, up.normalize) == (1, 39, 100.0, False)
  batch = _batch([8000, 4000, 0], 8000)
  hidden, valid = up(batch)
  assert hidden.shape == (3, 1, 51, 39)
  assert list(valid.sum(-1)) == [51, 26, 0]  # 1 + n // 160 centred frames.
  raw = features.mfcc(batch["audio"][1, :4000])
  np.testing.assert_allclose(hidden[1, 0, :26], (raw - raw.mean(0)) / (raw.std(0) + 1e-5),
                             rtol=1e-4, atol=1e-4)
  plain, _ = upstreams.load("mfcc_librosa_no_cmvn")(batch)
  np.testing.assert_allclose(plain[1, 0, :26], raw, rtol=1e-5, atol=1e-5)
  assert not hidden[1, 0, 26:].any() and not hidden[2].any()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A saved tiny wav2vec 2.0 run (step 7) and the params it holds."""
  config = pretrained.load_config(TINY)
  params = jax.tree.map(lambda x: x + 0.01, pretrained.init_params(config, 5))  # pylint: disable=protected-access
  run = str(tmp_path_factory.mktemp("upstream") / "run")
  ckpt = checkpointing.Checkpointer(run, common.ckpt(every_steps=1, keep=2))
  ckpt.save(7, {"params": params}, {"step": 7}, force=True)
  ckpt.wait()
  ckpt.close()
  checkpointing.save_config(config, run)
  return run, config, params


def test_checkpoint_upstream_gives_the_saved_models_hidden_states(tiny_run):
  run, config, params = tiny_run
  up = upstreams.load(run)
  assert (up.num_hidden, up.dim, up.frame_rate) == (3, 32, 50.0)  # tiny: 2 layers of 32.
  assert up.normalize == config.data.normalize is True
  batch = _batch([16000, 9000], 16000)
  hidden, valid = up(batch)
  assert hidden.shape == (2, 3, 49, 32)
  assert list(np.asarray(valid).sum(-1)) == [49, 27]
  _, expected, _ = jax.jit(objectives.build(config).represent)(
      params, jax.tree.map(jnp.asarray, batch))
  np.testing.assert_allclose(hidden, jnp.stack(expected, 1), rtol=1e-5, atol=1e-5)
  _, restored = pretrained.load_checkpoint(os.path.join(run, "ckpt", "7"))  # A step dir.
  jax.tree.map(np.testing.assert_array_equal, restored, params)


def test_checkpoint_without_pretraining_heads_loads_the_encoder(tiny_run, tmp_path):
  """E.g. a HuBERT encoder converted from transformers, which has no heads."""
  _, config, params = tiny_run
  run = str(tmp_path / "encoder_only")
  ckpt = checkpointing.Checkpointer(run, common.ckpt(every_steps=1, keep=2))
  ckpt.save(0, {"params": {"speech_encoder": params["speech_encoder"]}}, {}, force=True)
  ckpt.wait()
  ckpt.close()
  checkpointing.save_config(config, run)
  _, restored = pretrained.load_checkpoint(run)
  assert set(restored) == {"speech_encoder"}
  jax.tree.map(np.testing.assert_array_equal, restored["speech_encoder"],
               params["speech_encoder"])


def test_random_init_is_the_same_architecture_untrained(tiny_run):
  run, _, params = tiny_run
  up = upstreams.load("random_init", arch=run, seed=0)  # Architecture from config.json.
  assert (up.num_hidden, up.dim, up.normalize, up.name) == (3, 32, True, "random_init")
  fresh = pretrained.init_params(up.config, 0)  # pylint: disable=protected-access
  assert jax.tree.structure(fresh) == jax.tree.structure(params)
  assert not np.allclose(fresh["speech_encoder"]["post_extract_proj"]["dense"]["kernel"],
                         params["speech_encoder"]["post_extract_proj"]["dense"]["kernel"])


def test_checkpoint_errors_name_the_problem(tiny_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    upstreams.load(str(tmp_path))
  with pytest.raises(ValueError, match="upstream is empty"):
    upstreams.load("")
  with pytest.raises(FileNotFoundError, match="no such config file"):
    upstreams.load("random_init", arch="configs/nope.py")
  run = str(tmp_path / "run")
  shutil.copytree(tiny_run[0], run)
  with open(os.path.join(run, "config.json")) as f:
    saved = json.load(f)
  saved["model"]["variant"] = "demo"  # config.json no longer matches the weights.
  with open(os.path.join(run, "config.json"), "w") as f:
    json.dump(saved, f)
  with pytest.raises(ValueError, match="encoder parameters missing or misshapen"):
    upstreams.load(run)


def test_random_init_of_a_mel_recipe_reads_its_training_statistics(tmp_path):
  # MelHuBERT normalises by its training set's statistics, which a run copies into its config;
  # random_init of the recipe file must do the same (it once failed: "not filled in").
  stats = {"features": "fbank", "num_mels": 40, "mean": [1.0] * 40, "std": [2.0] * 40}
  path = tmp_path / "fbank40.json"
  path.write_text(json.dumps(stats))
  arch = tmp_path / "mel.py"
  arch.write_text("from configs.hubert import melhubert\n\n\ndef get_config(arg=None):\n"
                  "  c = melhubert.get_config('demo').unlock()\n"
                  f"  c.model.frontend.stats = {str(path)!r}\n  c.model.variant = 'tiny'\n"
                  "  return c.lock()\n")
  up = upstreams.load("random_init", arch=str(arch), seed=0)
  assert up.name == "random_init"
  np.testing.assert_allclose(up.config.model.frontend.mean, [1.0] * 40)
  np.testing.assert_allclose(up.config.model.frontend.std, [2.0] * 40)
