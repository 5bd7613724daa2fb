"""Checkpoint interop against transformers' PyTorch Wav2Vec2 / HuBERT (the numerical reference).

Randomly initialised transformers models at tiny sizes, BASE-like (group-norm extractor, post-LN)
and LARGE-like (layer-norm extractor, conv bias, pre-LN), are converted and every hidden state is
compared on valid frames (relative error = max |ours - theirs| / max |theirs| per hidden state).
fairseq checkpoints and bad inputs are tested in test_convert_fairseq.py (with these helpers).
"""
import json
import os
import subprocess
import sys

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from configs.wav2vec2 import base as base_recipe
from configs.wav2vec2 import large as large_recipe
from jaxssl import convert
from jaxssl.interop import fairseq
from jaxssl.interop import files
from jaxssl.interop import hf
from jaxssl.interop import native
from jaxssl.models import frontends
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.objectives import wav2vec2 as w2v2_objective
from jaxssl.training import checkpointing

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
modeling = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")

ARCHS = [("wav2vec2", False), ("wav2vec2", True), ("hubert", False), ("hubert", True)]
TOL = 1e-4


def hf_model(family, large, heads=False, seed=0):
  """A tiny random transformers model, all dropout and LayerDrop off."""
  kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            feat_proj_dropout=0.0, layerdrop=0.0)
  if large:
    kw.update(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)
  torch.manual_seed(seed)
  if family == "hubert":
    return transformers.HubertModel(transformers.HubertConfig(**kw)).eval()
  kw.update(codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8,
            feat_quantizer_dropout=0.0)
  cls = transformers.Wav2Vec2ForPreTraining if heads else transformers.Wav2Vec2Model
  return cls(transformers.Wav2Vec2Config(**kw)).eval()


def batch(lengths, seed=0):
  """Zero-padded audio [B, S] and its sample mask."""
  s = max(lengths)
  audio = np.random.default_rng(seed).standard_normal((len(lengths), s)).astype(np.float32)
  valid = np.arange(s)[None] < np.asarray(lengths)[:, None]
  return audio * valid, valid


def ours(ckpt_dir, audio, valid):
  """jaxssl SpeechEncoder outputs of a converted checkpoint (+ the frame mask)."""
  config, params = native.load(ckpt_dir)
  enc = wav2vec2_model.speech_encoder_from_config(config.model)()
  frames = frontends.frame_valid(config.model.frontend, jnp.asarray(valid))
  apply = jax.jit(lambda p, a, v: enc.apply({"params": p}, a, valid=v, train=False))
  return apply(params["speech_encoder"], jnp.asarray(audio), frames), np.asarray(frames)


def theirs(model, audio, valid, mask=True):
  base = getattr(model, "wav2vec2", model)
  with torch.no_grad():
    return base(torch.tensor(audio), output_hidden_states=True,
                attention_mask=torch.tensor(valid.astype(np.int64)) if mask else None)


def rel_err(a, b, frames):
  a, b = np.asarray(a)[frames], np.asarray(b)[frames]
  return float(np.abs(a - b).max() / np.abs(b).max())


def assert_hidden_match(out, frames, ref, layer_norm_first):
  """Ours: hidden[0] = blocks' input, hidden[i] = block i, and in pre-LN mode hidden[L] after the
  final LayerNorm. transformers 5 reports that last one before the final LN
  (`capture_outputs(tie_last_hidden_states=False)`); transformers 4, s3prl and fairseq's encoder
  output take it after, so it is compared with `last_hidden_state`."""
  n = len(ref.hidden_states)
  assert len(out["hidden"]) == n
  for i in range(n - 1):
    assert rel_err(out["hidden"][i], ref.hidden_states[i].numpy(), frames) < TOL, i
  last = ref.last_hidden_state if layer_norm_first else ref.hidden_states[-1]
  assert rel_err(out["hidden"][-1], last.numpy(), frames) < TOL
  assert rel_err(out["x"], ref.last_hidden_state.numpy(), frames) < TOL


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(family, large) -> (transformers model, its folder, the converted jaxssl checkpoint)."""
  root = tmp_path_factory.mktemp("hf")
  out = {}
  for family, large in ARCHS:
    model = hf_model(family, large)
    folder = root / f"{family}_{large}"
    model.save_pretrained(folder)
    convert.import_checkpoint("hf", folder, root / f"{family}_{large}_jaxssl")
    out[family, large] = model, folder, root / f"{family}_{large}_jaxssl"
  return out


@pytest.mark.parametrize("family,large", ARCHS)
def test_hidden_states_match_transformers(converted, family, large):
  model, _, ckpt = converted[family, large]
  config, _ = native.load(ckpt)
  assert config.model.layer_norm_first == large
  assert config.model.frontend.mode == ("layer_norm" if large else "default")
  assert config.objective.name == family
  # One frame without an attention mask; a padded batch of 16, 7 and 1 frames with one.
  for lengths, mask in (([400], False), ([5123, 2500, 400], True)):
    audio, valid = batch(lengths)
    out, frames = ours(ckpt, audio, valid)
    assert_hidden_match(out, frames, theirs(model, audio, valid, mask), large)


@pytest.mark.parametrize("large", [False, True])
def test_pretraining_loss_matches_transformers(tmp_path, large):
  """Same mask and negative indices into both. transformers sums the contrastive loss and scales
  the diversity term by the number of masked frames; jaxssl (like fairseq's gradient) averages
  over masked frames, so HF's terms are ours x num_masked. In eval mode transformers' perplexity
  comes from the hard (argmax) codes, our code_perplexity; in train mode from the softmax, our
  prob_perplexity (the one our diversity loss uses)."""
  model = hf_model("wav2vec2", large, heads=True)
  model.save_pretrained(tmp_path / "hf")
  convert.import_checkpoint("hf", tmp_path / "hf", tmp_path / "jx")
  config, params = native.load(tmp_path / "jx")
  audio, valid = batch([6400, 5000, 3300], seed=1)
  frames = np.asarray(frontends.frame_valid(config.model.frontend, jnp.asarray(valid)))
  np.random.seed(0)
  masked = modeling._compute_mask_indices(frames.shape, 0.5, 3, torch.tensor(frames), min_masks=2)
  masked &= frames
  negs = modeling._sample_negative_indices(frames.shape, 6, masked)
  kw = dict(attention_mask=torch.tensor(valid.astype(np.int64)),
            mask_time_indices=torch.tensor(masked), sampled_negative_indices=torch.tensor(negs))
  with torch.no_grad():
    ref = model(torch.tensor(audio), **kw)
    model.train()
    ref_train = model(torch.tensor(audio), **kw)
  apply = jax.jit(lambda p, a, v, m: wav2vec2_model.wav2vec2_from_config(config).apply(
      {"params": p}, a, valid=v, masked=m, temperature=1.0, train=False))
  out = apply(params, jnp.asarray(audio), jnp.asarray(frames), jnp.asarray(masked))
  logits = w2v2_objective.contrastive_logits(out["c"], out["q"], jnp.asarray(negs),
                                             config.objective.logit_temp)
  contrastive, _ = w2v2_objective.contrastive_metrics(logits, jnp.asarray(masked, jnp.float32))
  n, codes = masked.sum(), config.quantizer.num_groups * config.quantizer.num_vars
  np.testing.assert_allclose(float(contrastive) * n, float(ref.contrastive_loss), rtol=1e-5)
  np.testing.assert_allclose(float(out["code_perplexity"]), float(ref.codevector_perplexity),
                             rtol=1e-5)
  diversity = (codes - float(out["code_perplexity"])) / codes
  np.testing.assert_allclose(diversity * n, float(ref.diversity_loss), rtol=1e-5)
  np.testing.assert_allclose(float(contrastive) * n + config.objective.diversity_weight *
                             diversity * n, float(ref.loss), rtol=1e-5)
  np.testing.assert_allclose(float(out["prob_perplexity"]),
                             float(ref_train.codevector_perplexity), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out["c"])[frames], ref.projected_states.numpy()[frames],
                             rtol=1e-4, atol=1e-5)


def test_export_then_import_is_the_identity_and_transformers_loads_it(converted, tmp_path):
  model, folder, ckpt = converted["wav2vec2", True]
  convert.export_hf(ckpt, tmp_path / "hf")
  loaded, info = transformers.Wav2Vec2Model.from_pretrained(tmp_path / "hf",
                                                            output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  reference = model.state_dict()
  for k, v in loaded.state_dict().items():
    np.testing.assert_array_equal(v.numpy(), reference[k].numpy(), err_msg=k)
  convert.import_checkpoint("hf", tmp_path / "hf", tmp_path / "again")
  (c1, p1), (c2, p2) = native.load(ckpt), native.load(tmp_path / "again")
  assert c1 == c2
  f1, f2 = native.flatten(p1, c1), native.flatten(p2, c2)
  assert f1.keys() == f2.keys()
  for k in f1:
    np.testing.assert_array_equal(f1[k], f2[k], err_msg=k)


@pytest.mark.parametrize("large", [False, True])
def test_export_of_a_jaxssl_initialised_model_reproduces_its_hidden_states(tmp_path, large):
  """The export direction checked on its own: a model jaxssl initialised (scanned layers in the
  LARGE recipe) -> transformers -> same hidden states, and the pretraining heads load too."""
  config, _ = native.load(native_checkpoint(tmp_path / "jx", large))
  convert.export_hf(tmp_path / "jx", tmp_path / "hf")
  loaded, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "hf",
                                                                     output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())[
      "do_normalize"] == config.data.normalize
  audio, valid = batch([4800, 3000])
  out, frames = ours(tmp_path / "jx", audio, valid)
  assert_hidden_match(out, frames, theirs(loaded.eval(), audio, valid), large)


def native_checkpoint(path, large):
  """A tiny jaxssl wav2vec 2.0 (recipe init, random) saved as a converted checkpoint would be."""
  config = (large_recipe if large else base_recipe).get_config("runlocal")
  obj = w2v2_objective.Wav2Vec2Objective(config)
  shapes = nn.unbox(jax.eval_shape(obj.init, jax.random.PRNGKey(1), dict(
      audio=jnp.zeros((1, 2000)), valid=jnp.ones((1, 2000), bool))))
  # Random values everywhere (biases, norms and gains too, so that a transposed or swapped
  # tensor cannot go unnoticed), scaled like a fan-in init.
  rs = np.random.default_rng(2)
  flat = {k: (rs.standard_normal(x.shape) / np.sqrt(np.prod(x.shape[:-1]) if x.ndim > 1 else 10)
              + (k[-1] == "scale")).astype(np.float32)
          for k, x in flax.traverse_util.flatten_dict(shapes).items()}
  native.save(path, config, flax.traverse_util.unflatten_dict(flat))
  return path


def test_converted_checkpoint_serves_as_init_from(converted):
  _, _, ckpt = converted["wav2vec2", False]
  _, params = native.load(ckpt)
  fresh = {"speech_encoder": {"mask_emb": jnp.zeros(params["speech_encoder"]["mask_emb"].shape)},
           "quantizer": {"codevectors": jnp.ones((4, 2))}}
  restored, report = checkpointing.load_params(ckpt, fresh)
  np.testing.assert_array_equal(restored["speech_encoder"]["mask_emb"],
                                params["speech_encoder"]["mask_emb"])
  assert report["taken"] == ["speech_encoder/mask_emb"]
  assert report["missing"] == ["quantizer/codevectors"]


def test_cli_imports_exports_and_reports_errors(converted, tmp_path):
  _, folder, _ = converted["hubert", True]
  env = dict(os.environ, PYTHONPATH=os.getcwd(), JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run([sys.executable, "-m", "jaxssl.convert", *a], env=env,
                                  capture_output=True, text=True, timeout=120)
  ok = run("--from=hf", f"--input={folder}", f"--output={tmp_path / 'jx'}")
  assert ok.returncode == 0, ok.stderr
  report = json.loads(ok.stdout.strip().splitlines()[-1])
  assert report["family"] == "hubert" and report["layer_norm_first"]
  again = run("--from=hf", f"--input={folder}", f"--output={tmp_path / 'jx'}")
  assert again.returncode == 2 and "already exists" in again.stderr
  assert "Traceback" not in again.stderr


def _num_params(spec):
  return sum(int(np.prod(s)) for s in native.param_shapes(native.config_from_spec(spec),
                                                          spec).values())


def test_released_configs_map_to_the_reference_architectures():
  """transformers' and fairseq's BASE / LARGE configs -> jaxssl's named variants, with
  the parameter counts in docs/reference.md."""
  base = transformers.Wav2Vec2Config(architectures=["Wav2Vec2ForPreTraining"]).to_dict()
  spec, _, _ = hf.spec_from_config(base)
  assert native.config_from_spec(spec).model.variant == "base"
  assert _num_params(spec) == 95_044_608
  lv60 = transformers.Wav2Vec2Config(
      hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
      feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True, codevector_dim=768,
      proj_codevector_dim=768, architectures=["Wav2Vec2ForPreTraining"]).to_dict()
  spec, _, _ = hf.spec_from_config(lv60)
  config = native.config_from_spec(spec)
  assert config.model.variant == "large" and config.model.final_dim == 0
  assert config.model.layer_norm_first and config.model.frontend.conv_bias
  assert _num_params(spec) == 317_390_592
  spec, _, _ = hf.spec_from_config(transformers.HubertConfig().to_dict())
  assert _num_params(spec) == 94_371_712
  heads = {"label_embs_concat": np.zeros((504, 1)), "final_proj.weight": np.zeros((256, 1))}
  spec = fairseq.spec_from_config(dict(final_dim=256), {}, "hubert", heads, "hubert.pt")
  assert _num_params(spec) == 94_697_600
  spec = fairseq.spec_from_config(dict(final_dim=256), {}, "wav2vec2",
                                  {"final_proj.weight": 0, "quantizer.vars": 0}, "w2v.pt")
  assert _num_params(spec) == 95_044_608


def test_explicit_variant_dims_round_trip_through_config_json():
  dims = dict(num_layers=3, embed_dim=48, mlp_dim=80, num_heads=4, conv_dim=24)
  c = mlc.ConfigDict(json.loads(json.dumps(dict(model=dict(variant=dims)))))
  assert variants.get(c.model.variant) == variants.Variant(**dims)
  with pytest.raises(ValueError, match="num_heads required"):
    variants.get(dict(num_layers=3, embed_dim=48, mlp_dim=80))
  with pytest.raises(ValueError, match="explicit dims take the fields"):
    variants.get(dict(dims, heads=4))


def test_pytorch_bin_sharded_and_legacy_weight_norm_folders_convert_alike(converted, tmp_path):
  """pytorch_model.bin with the pre-parametrization names weight_g / weight_v (older
  transformers), and safetensors shards with an index, give the same params as the fixture."""
  model, _, ckpt = converted["wav2vec2", False]
  legacy = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v
            for k, v in model.state_dict().items()}
  assert "encoder.pos_conv_embed.conv.weight_g" in legacy
  (tmp_path / "bin").mkdir()
  torch.save(legacy, tmp_path / "bin" / "pytorch_model.bin")
  model.config.to_json_file(tmp_path / "bin" / "config.json")
  shards = tmp_path / "shards"
  shards.mkdir()
  model.config.to_json_file(shards / "config.json")
  names = sorted(model.state_dict())
  weight_map = {}
  for i, part in enumerate((names[::2], names[1::2])):
    fname = f"model-0000{i + 1}-of-00002.safetensors"
    files.write_safetensors(shards / fname, {k: model.state_dict()[k].numpy() for k in part},
                            {"format": "pt"})
    weight_map |= {k: fname for k in part}
  (shards / "model.safetensors.index.json").write_text(json.dumps(dict(weight_map=weight_map)))
  config, params = native.load(ckpt)
  want = native.flatten(params, config)
  for folder in (tmp_path / "bin", shards):
    convert.import_checkpoint("hf", folder, tmp_path / f"{folder.name}_jx")
    config, params = native.load(tmp_path / f"{folder.name}_jx")
    got = native.flatten(params, config)
    assert got.keys() == want.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
