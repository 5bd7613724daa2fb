"""jaxssl.extract: all hidden states of audio files, against transformers and padding-exactness,
and from BEST-RQ / data2vec 2.0 training workdirs against their objectives' `represent`."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from configs import common
from configs.best_rq import demo as best_rq_demo
from configs.data2vec2 import demo as data2vec2_demo
from jaxssl import convert
from jaxssl import extract
from jaxssl import objectives
from jaxssl.data import audio as audio_lib
from jaxssl.interop import ConversionError
from jaxssl.models import frontends
from jaxssl.models import variants
from jaxssl.training import checkpointing
from jaxssl.training import optimizers
from jaxssl.training import partitioning
from jaxssl.training import train_state


def tiny_hf(large):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
            layerdrop=0.0)
  if large:
    kw.update(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)
  torch.manual_seed(1)
  return transformers.HubertModel(transformers.HubertConfig(**kw)).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """large -> (transformers model, converted jaxssl checkpoint); LARGE-like ones normalise."""
  transformers = pytest.importorskip("transformers")
  root = tmp_path_factory.mktemp("extract")
  out = {}
  for large in (False, True):
    model = tiny_hf(large)
    model.save_pretrained(root / f"hf_{large}")
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=large)
    extractor.save_pretrained(root / f"hf_{large}")
    convert.import_checkpoint("hf", root / f"hf_{large}", root / f"jx_{large}")
    out[large] = model, root / f"jx_{large}"
  return out


def waves(lengths, seed=0):
  rs = np.random.default_rng(seed)
  # int16-representable values, so writing them to a 16-bit wav loses nothing.
  return [np.round(rs.uniform(-0.5, 0.5, n) * 32768) / 32768 for n in lengths]


def reference(model, wave, normalize):
  """transformers' hidden states of one utterance, in our convention (last one after the final
  LayerNorm in pre-LN models: `last_hidden_state`)."""
  torch = pytest.importorskip("torch")
  x = np.asarray(wave, np.float32)
  if normalize:  # The same standardisation as jaxssl.data.audio.normalize (eps 1e-5).
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
  with torch.no_grad():
    out = model(torch.tensor(x[None]), output_hidden_states=True)
  hidden = [h[0].numpy() for h in out.hidden_states[:-1]] + [out.last_hidden_state[0].numpy()]
  return np.stack(hidden)


@pytest.mark.parametrize("large", [False, True])
def test_extract_matches_transformers_for_every_layer(checkpoints, large):
  model, ckpt = checkpoints[large]
  upstream = extract.load(ckpt)
  assert upstream.normalize == large
  assert upstream.frame_rate == 50.0 and upstream.num_hidden == 3
  lengths = [7000, 400, 3333]
  feats = extract.extract(upstream, waves(lengths), batch_size=3)
  for n, wave, h in zip(lengths, waves(lengths), feats):
    assert h.shape == (3, variants.frames_for(n), 32) and h.dtype == np.float32
    ref = reference(model, wave, large)
    assert np.abs(h - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.parametrize("large", [False, True])
def test_padded_batches_equal_single_utterances(checkpoints, large):
  """Padding leaves valid frames unchanged with either feature encoder: the group-norm one
  (BASE) normalises over each row's valid frames."""
  _, ckpt = checkpoints[large]
  upstream = extract.load(ckpt)
  lengths = [9000, 5555, 401]
  batched = extract.extract(upstream, waves(lengths, 3), batch_size=3, bucket_samples=8000)
  for n, wave, h in zip(lengths, waves(lengths, 3), batched):
    (alone,) = extract.extract(upstream, [wave], bucket_samples=1)  # Exact length, no padding.
    np.testing.assert_allclose(h, alone, rtol=1e-5, atol=1e-5)


def test_group_norm_statistics_ignore_padding_but_the_old_full_length_norm_would_not(checkpoints):
  """The same utterance padded to twice its length: equal on valid frames with the sample mask,
  different without it (GroupNorm over the padded length, as fairseq / transformers compute)."""
  _, ckpt = checkpoints[False]
  upstream = extract.load(ckpt)
  (wave,) = waves([3200])
  audio = np.zeros((1, 6400), np.float32)
  audio[0, :3200] = wave
  valid = np.arange(6400)[None] < 3200
  padded, _ = upstream(audio, valid)
  (exact,) = extract.extract(upstream, [wave], bucket_samples=1)
  t = variants.frames_for(3200)
  np.testing.assert_allclose(np.asarray(padded)[:, 0, :t], exact, rtol=1e-5, atol=1e-5)
  frame_valid = np.arange(variants.frames_for(6400))[None] < t
  unmasked = upstream.encoder.apply({"params": upstream.params}, audio, valid=frame_valid,
                                    train=False)["hidden"]
  assert np.abs(np.asarray(unmasked)[:, 0, :t] - exact).max() > 1e-3


def test_cli_writes_every_layer_and_the_frame_rate(checkpoints, tmp_path):
  model, ckpt = checkpoints[True]
  lengths = [4000, 8000]
  (tmp_path / "wavs").mkdir()
  for i, w in enumerate(waves(lengths, 5)):
    sf.write(tmp_path / "wavs" / f"u{i}.wav", w, 16_000, subtype="PCM_16")
  (tmp_path / "list.txt").write_text("wavs/u1.wav\n\n# comment\nwavs/u0.wav\n")
  env = dict(os.environ, PYTHONPATH=os.getcwd(), JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run([sys.executable, "-m", "jaxssl.extract", *a], env=env,
                                  capture_output=True, text=True, timeout=120)
  ok = run(f"--checkpoint={ckpt}", f"--input={tmp_path / 'list.txt'}",
           f"--output={tmp_path / 'out.npz'}")
  assert ok.returncode == 0, ok.stderr
  with np.load(tmp_path / "out.npz") as f:
    assert [os.path.basename(p) for p in f["paths"]] == ["u1.wav", "u0.wav"]
    assert float(f["frame_rate"]) == 50.0 and int(f["sample_rate"]) == 16_000
    assert list(f["num_frames"]) == [variants.frames_for(8000), variants.frames_for(4000)]
    for key, wave in (("hidden_00000", waves(lengths, 5)[1]), ("hidden_00001",
                                                                waves(lengths, 5)[0])):
      ref = reference(model, wave, True)
      assert np.abs(f[key] - ref).max() / np.abs(ref).max() < 1e-4
  (tmp_path / "bad.txt").write_text("wavs/u0.wav\nwavs/missing.wav\n")
  bad = run(f"--checkpoint={ckpt}", f"--input={tmp_path / 'bad.txt'}",
            f"--output={tmp_path / 'x.npz'}")
  assert bad.returncode == 2 and "bad.txt line 2: no such audio file 'wavs/missing.wav'" in (
      bad.stderr)
  assert "Traceback" not in bad.stderr and not (tmp_path / "x.npz").exists()


def test_bad_inputs_fail_clearly(checkpoints, tmp_path):
  _, ckpt = checkpoints[True]
  with pytest.raises(ConversionError, match="no config.json"):
    extract.load(tmp_path)
  with pytest.raises(ConversionError, match="no such jaxssl checkpoint"):
    extract.load(tmp_path / "nope")
  (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEfmt garbage")
  with pytest.raises(ConversionError, match=r"broken\.wav: unreadable"):
    extract.extract_files(ckpt, tmp_path / "broken.wav", tmp_path / "o.npz")
  (tmp_path / "empty.txt").write_text("\n# nothing\n")
  with pytest.raises(ConversionError, match="lists no audio files"):
    extract.read_input_list(tmp_path / "empty.txt")
  with pytest.raises(ConversionError, match="waveform 1: 399 samples"):
    extract.extract(extract.load(ckpt), waves([400, 399]))
  root = tmp_path / "root"
  root.mkdir()
  sf.write(root / "a.flac", waves([800])[0], 16_000)
  (tmp_path / "train.tsv").write_text(f"{root}\na.flac\t800\n")
  assert extract.read_input_list(tmp_path / "train.tsv") == [str(root / "a.flac")]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """objective name -> (training workdir, config, params): the `:runlocal` demo recipe's fresh
  TrainState saved by the trainer's Checkpointer at step 1 (config.json beside it), the data2vec
  2.0 teacher moved off the student, so that reading it instead would show."""
  out = {}
  for name, demo in (("best_rq", best_rq_demo), ("data2vec2", data2vec2_demo)):
    config = demo.get_config("runlocal")
    with config.unlocked():
      config.mesh = common.mesh(1, 1, 1)
    mesh = partitioning.make_mesh(config.mesh, devices=jax.devices()[:1])
    spec = {k: jax.ShapeDtypeStruct((8, 8_000), d, sharding=partitioning.batch_sharding(mesh))
            for k, d in (("audio", jnp.float32), ("valid", jnp.bool_))}
    tx, _ = optimizers.make_optimizer(config.optim, config.schedule, config.total_steps)
    state, _ = train_state.create(objectives.build(config), tx, spec, 0, mesh)
    if name == "data2vec2":
      state = state.replace(objective_state={"teacher": jax.tree.map(
          lambda x: x + 0.5, state.objective_state["teacher"])})
    workdir = str(tmp_path_factory.mktemp(name))
    checkpointing.save_config(config, workdir)
    ckpt = checkpointing.Checkpointer(workdir, config.ckpt)
    ckpt.save(1, state, {"step": 1}, force=True)
    ckpt.wait()
    ckpt.close()
    out[name] = workdir, config, jax.device_get(state.params)
  return out


# BEST-RQ: ceil((1 + S // 160) / 4) stacked fbank frames; data2vec 2.0: (S - 400) // 320 + 1.
@pytest.mark.parametrize("name,frame_rate,frames", [("best_rq", 25.0, (15, 9)),
                                                    ("data2vec2", 50.0, (27, 17))])
def test_extract_files_of_best_rq_and_data2vec2_workdirs_equal_represent(workdirs, tmp_path, name,
                                                                         frame_rate, frames):
  """The CLI's path (a list of wavs -> .npz) on a training workdir: every hidden state of each
  utterance, [L+1, T, D] at the frontend's frame rate, equals the objective's `represent` of that
  utterance alone (extract pads both into one batch of 16,000 samples)."""
  workdir, config, params = workdirs[name]
  lengths = [9_000, 5_555]
  (tmp_path / "wavs").mkdir()
  for i, w in enumerate(waves(lengths, 7)):
    sf.write(tmp_path / "wavs" / f"u{i}.wav", w, 16_000, subtype="PCM_16")
  (tmp_path / "list.txt").write_text("wavs/u0.wav\nwavs/u1.wav\n")
  extract.extract_files(workdir, tmp_path / "list.txt", tmp_path / "out.npz", batch_size=2)
  objective = objectives.build(config)
  represent = jax.jit(objective.represent)
  v = variants.get(config.model.variant)
  with np.load(tmp_path / "out.npz") as f:
    assert float(f["frame_rate"]) == frame_rate
    for i, (n, wave, t) in enumerate(zip(lengths, waves(lengths, 7), frames)):
      assert frontends.frames_for(config.model.frontend, n) == t
      h = f[f"hidden_{i:05d}"]
      assert h.shape == (v.num_layers + 1, t, v.embed_dim) and h.dtype == np.float32
      assert int(f["num_frames"][i]) == t
      x = wave.astype(np.float32)
      x = audio_lib.normalize(x) if config.data.normalize else x
      _, hidden, valid = represent(params, {"audio": x[None], "valid": np.ones((1, n), bool)})
      assert int(valid.sum()) == t
      want = np.stack([np.asarray(y)[0] for y in hidden])
      np.testing.assert_allclose(h, want, rtol=1e-5, atol=1e-5)
