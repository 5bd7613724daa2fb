"""fairseq checkpoints and bad inputs: parity, safe loading, and errors that name the problem.

fairseq is not installable here: its checkpoints are built from transformers models with the name
mapping of transformers' own converter (convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py)
and pickled as fairseq pickles them (hydra config dicts, or an argparse.Namespace in old ones, and
its Dictionary objects in task_state).
"""
import argparse
import json
import re
import subprocess

import numpy as np
import pytest

from jaxssl import convert
from jaxssl.interop import ConversionError
from jaxssl.interop import files
from jaxssl.interop import native
from tests import test_convert as tc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# transformers -> fairseq names: the inverse of MAPPING / load_conv_layer in transformers'
# convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py (and the HuBERT converter).
_TO_FAIRSEQ = [
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^masked_spec_embed$", "mask_emb"),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$",
     "encoder.pos_conv.0.weight_g"),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$",
     "encoder.pos_conv.0.weight_v"),
    (r"^encoder\.pos_conv_embed\.conv\.bias$", "encoder.pos_conv.0.bias"),
    (r"\.attention\.", ".self_attn."),
    (r"^(encoder\.layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
    (r"\.feed_forward\.intermediate_dense\.", ".fc1."),
    (r"\.feed_forward\.output_dense\.", ".fc2."),
    (r"^(feature_extractor\.conv_layers\.\d+)\.conv\.", r"\1.0."),
    (r"^quantizer\.codevectors$", "quantizer.vars"),
    (r"^project_hid\.", "final_proj."),
]


def to_fairseq(model, large):
  state = {}
  for k, v in model.state_dict().items():
    k = k.removeprefix("wav2vec2.")
    if ".conv_layers." in k and ".layer_norm." in k:
      k = k.replace(".layer_norm.", ".2.1." if large else ".2.")
    for pattern, repl in _TO_FAIRSEQ:
      k = re.sub(pattern, repl, k)
    state[k] = v.clone()
  return state


class FakeDictionary:
  """Stands for fairseq's Dictionary pickled in task_state: loading must never run its code."""
  touched = False

  def __init__(self, size):
    self.symbols = [f"s{i}" for i in range(size)]

  def __setstate__(self, state):
    FakeDictionary.touched = True
    self.__dict__.update(state)


def fairseq_checkpoint(path, family, large, *, old_style=False, finetuned=False):
  """Writes a fairseq-format checkpoint of a tiny transformers model; returns the model."""
  model = tc.hf_model(family, large, heads=family == "wav2vec2")
  state = to_fairseq(model, large)
  cfg = dict(_name=family, extractor_mode="layer_norm" if large else "default",
             encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
             encoder_attention_heads=2, layer_norm_first=large, conv_bias=large,
             conv_feature_layers="[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16,2,2)] + [(16,2,2)]",
             conv_pos=8, conv_pos_groups=4, final_dim=16, latent_vars=8, latent_groups=2,
             quantize_targets=True, latent_temp="(2,0.5,0.999995)" if old_style else [2, .1, .9])
  task = dict(_name="audio_pretraining", normalize=large)
  ckpt = dict(model=state, optimizer_history=[dict(num_updates=10)])
  if family == "hubert":  # Two label sets (104 and 54 symbols), untied final_proj.
    g = torch.Generator().manual_seed(3)
    state["final_proj.weight"] = torch.randn(32, 32, generator=g)
    state["final_proj.bias"] = torch.randn(32, generator=g)
    state["label_embs_concat"] = torch.randn(158, 16, generator=g)
    cfg["untie_final_proj"] = True
    ckpt["task_state"] = dict(dictionaries=[FakeDictionary(104), FakeDictionary(54)])
  if finetuned:
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()
             if not k.startswith(("quantizer.", "project_q.", "final_proj.", "label_embs"))}
    state["w2v_encoder.proj.weight"] = torch.zeros(5, 32)
    name = "wav2vec_ctc" if family == "wav2vec2" else "hubert_ctc"
    ckpt.update(model=state, cfg=dict(model=dict(_name=name, w2v_args=dict(model=cfg, task=task)),
                                      task=dict(_name="audio_finetuning")))
  elif old_style:
    ckpt["args"] = argparse.Namespace(arch=cfg.pop("_name"), normalize=large, **cfg)
  else:
    ckpt["cfg"] = dict(model=cfg, task=task)
  # Old checkpoints predate torch's zip format (torch < 1.6): the legacy pickle layout.
  torch.save(ckpt, path, _use_new_zipfile_serialization=not old_style)
  return model


@pytest.mark.parametrize("family,large,old_style,finetuned", [
    ("wav2vec2", False, True, False), ("wav2vec2", True, False, False),
    ("hubert", False, False, False), ("hubert", True, False, True)])
def test_fairseq_checkpoints_match_the_transformers_model(tmp_path, family, large, old_style,
                                                          finetuned):
  model = fairseq_checkpoint(tmp_path / "ckpt.pt", family, large, old_style=old_style,
                             finetuned=finetuned)
  report = convert.import_checkpoint("fairseq", tmp_path / "ckpt.pt", tmp_path / "jx")
  assert not FakeDictionary.touched  # The pickled class was stubbed, not imported and run.
  assert report["heads"] == (not finetuned)
  assert any("w2v_encoder.proj" in n for n in report["notes"]) == finetuned
  config, params = native.load(tmp_path / "jx")
  assert config.data.normalize == large and config.objective.name == family
  if family == "wav2vec2" and not finetuned:
    assert list(config.quantizer.temp) == ([2.0, 0.5, 0.999995] if old_style else [2, .1, .9])
    np.testing.assert_array_equal(np.asarray(params["final_proj"]["dense"]["kernel"]),
                                  model.project_hid.weight.detach().numpy().T)
  if family == "hubert" and not finetuned:
    assert list(config.objective.num_clusters) == [100, 50]
    assert config.objective.num_extra_embeddings == 4 and config.objective.untie_final_proj
    assert params["label_embs_concat"].shape == (158, 16)
    assert params["final_proj"]["dense"]["kernel"].shape == (32, 32)
  audio, valid = tc.batch([4000, 2100])
  out, frames = tc.ours(tmp_path / "jx", audio, valid)
  tc.assert_hidden_match(out, frames, tc.theirs(model, audio, valid), large)


def test_safetensors_writer_and_reader_agree_with_the_safetensors_library(tmp_path):
  st = pytest.importorskip("safetensors.numpy")
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  rs = np.random.default_rng(0)
  tensors = {"a.weight": rs.standard_normal((3, 5)).astype(np.float32),
             "b": rs.integers(0, 9, (7,)).astype(np.int64), "c": np.zeros((0, 2), np.float16),
             "d": rs.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)}
  files.write_safetensors(tmp_path / "ours.safetensors", tensors, {"format": "pt"})
  theirs_read = st.load_file(tmp_path / "ours.safetensors")
  st.save_file(tensors, tmp_path / "theirs.safetensors")
  for name in (tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"):
    back = files.read_safetensors(name)
    for k, v in tensors.items():
      assert back[k].dtype == v.dtype and back[k].shape == v.shape
      np.testing.assert_array_equal(back[k], v)
      np.testing.assert_array_equal(theirs_read[k], v)


def _rewrite(folder, edit):
  """Rewrites a folder's model.safetensors through `edit(tensors) -> tensors`."""
  path = folder / "model.safetensors"
  tensors = {k: np.array(v) for k, v in files.read_safetensors(path).items()}
  files.write_safetensors(path, edit(tensors), {"format": "pt"})


class Evil:
  """Unpickling this with plain pickle would run `touch`."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return subprocess.call, (["touch", self.marker],)


def test_truncated_missing_misshapen_and_unknown_inputs_fail_clearly(tmp_path):
  def expect(pattern, source, path):
    with pytest.raises(ConversionError, match=pattern):
      convert.import_checkpoint(source, path, tmp_path / "out")

  expect("no such transformers model folder", "hf", tmp_path / "nope")
  folder = tmp_path / "hf"
  tc.hf_model("wav2vec2", False).save_pretrained(folder)
  weights = (folder / "model.safetensors").read_bytes()
  (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
  expect(r"truncated: tensor '[\w.]+' needs bytes", "hf", folder)
  (folder / "model.safetensors").write_bytes(weights[:5])
  expect("truncated safetensors file", "hf", folder)
  (folder / "model.safetensors").unlink()
  expect("no model.safetensors or pytorch_model.bin", "hf", folder)
  (folder / "model.safetensors").write_bytes(weights)
  _rewrite(folder, lambda t: {k: v for k, v in t.items()
                              if k != "encoder.layers.1.feed_forward.intermediate_dense.weight"})
  expect(r"missing key 'encoder\.layers\.1\.feed_forward\.intermediate_dense\.weight'", "hf",
         folder)
  (folder / "model.safetensors").write_bytes(weights)
  _rewrite(folder, lambda t: t | {"encoder.extra_gate.weight": np.zeros(3, np.float32)})
  expect(r"unexpected key 'encoder\.extra_gate\.weight'", "hf", folder)
  (folder / "model.safetensors").write_bytes(weights)
  _rewrite(folder, lambda t: t | {"encoder.layers.0.attention.q_proj.weight":
                                  np.zeros((32, 16), np.float32)})
  expect(r"wrong shape for 'encoder\.layers\.0\.attention\.q_proj\.weight': \(32, 16\), but the "
         r"config .* implies \(32, 32\)", "hf", folder)
  (folder / "model.safetensors").write_bytes(weights)
  cfg = json.loads((folder / "config.json").read_text())
  (folder / "config.json").write_text(json.dumps(cfg | dict(architectures=["WavLMModel"],
                                                            model_type="wavlm")))
  expect("unsupported architecture 'WavLMModel'", "hf", folder)
  (folder / "config.json").write_text(json.dumps(cfg | dict(feat_extract_norm="batch")))
  expect("unsupported feat_extract_norm='batch'", "hf", folder)
  (folder / "config.json").unlink()
  expect("no config.json", "hf", folder)
  # PyTorch files: truncated, unknown fairseq architecture, and a pickle that would run code.
  torch.save(tc.hf_model("wav2vec2", False).state_dict(), tmp_path / "model.bin")
  blob = (tmp_path / "model.bin").read_bytes()
  (tmp_path / "model.bin").write_bytes(blob[: len(blob) // 2])
  expect("truncated or corrupt PyTorch file", "fairseq", tmp_path / "model.bin")
  torch.save(dict(model={}, cfg=dict(model=dict(_name="wav2vec"))), tmp_path / "v1.pt")
  expect("unsupported fairseq architecture 'wav2vec'", "fairseq", tmp_path / "v1.pt")
  expect("no such file", "fairseq", tmp_path / "missing.pt")
  marker = tmp_path / "pwned"
  torch.save(dict(model={}, cfg=Evil(marker)), tmp_path / "evil.pt")
  with pytest.raises(ConversionError):
    convert.import_checkpoint("fairseq", tmp_path / "evil.pt", tmp_path / "out")
  assert not marker.exists()
  assert not (tmp_path / "out").exists()  # Nothing half-written.
