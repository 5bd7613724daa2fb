"""The name -> component registries: frontends (live in every encoder), mixers, probe tasks,
datasets. Components registered from outside `jaxssl` build through the config like built-ins."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from configs.hubert import demo as hubert_demo
from configs.wav2vec2 import demo as w2v2_demo
from jaxssl import objectives
from jaxssl import pretrained
from jaxssl.data import builders
from jaxssl.evaluation import tasks
from jaxssl.models import frontends
from jaxssl.models import mixers
from jaxssl.models import variants
from jaxssl.models import wav2vec2 as wav2vec2_model

MEL = dict(name="mel", num_mels=40)
MEL_STACK = dict(name="mel_stack", num_mels=40, stack=2)
CNN = dict(name="cnn", mode="default", conv_bias=False, feature_grad_mult=1.0)


@pytest.mark.parametrize("fe,hop,centre", [(CNN, 320, 200), (MEL, 160, 0),
                                           (MEL_STACK, 320, 80)])
def test_frontend_frames_hops_and_padding_masks(fe, hop, centre):
  fe = mlc.ConfigDict(fe)
  lengths = np.array([399, 400, 3_300, 16_000, 16_123])
  want = {"cnn": variants.frames_for(lengths),          # floor((S - 400) / 320) + 1
          "mel": 1 + lengths // 160,                     # centred 10 ms frames
          "mel_stack": -(-(1 + lengths // 160) // 2)}[fe.name]
  np.testing.assert_array_equal(frontends.frames_for(fe, lengths), want)
  assert frontends.hop(fe) == hop and frontends.centre(fe) == centre
  valid = np.arange(16_123)[None] < lengths[:, None]
  mask = np.asarray(frontends.frame_valid(fe, jnp.asarray(valid)))
  assert mask.shape == (5, want[-1])
  np.testing.assert_array_equal(mask.sum(1), np.maximum(want, 0))
  # The module gives exactly that many frames.
  v = variants.get("tiny")
  out = jax.eval_shape(lambda a: frontends.get(fe).module(fe, v, jnp.float32)().init_with_output(
      jax.random.key(0), a, None)[0], jax.ShapeDtypeStruct((1, 16_000), jnp.float32))
  assert out.shape[1] == frontends.frames_for(fe, 16_000)


def _batch(config, seconds=1.0, rows=4):
  s = int(16_000 * seconds)
  rs = np.random.default_rng(0)
  lengths = np.array([s, s, s - 3_000, s - 5_000])[:rows]
  batch = dict(audio=jnp.asarray(rs.standard_normal((rows, s)), jnp.float32),
               valid=jnp.asarray(np.arange(s)[None] < lengths[:, None]))
  if "labels" in config.data and config.data.labels:
    n = int(s * config.data.label_rate / 16_000) + 1
    batch["labels"] = jnp.asarray(rs.integers(0, 100, (rows, n)), jnp.int32)
    batch["labels_valid"] = jnp.ones((rows, n), bool)
  return batch


@pytest.mark.parametrize("recipe,fe", [("hubert", MEL), ("wav2vec2", MEL_STACK)])
def test_every_encoder_takes_every_frontend(recipe, fe):
  """HuBERT and wav2vec 2.0 with a mel frontend: one config line; the loss is finite, the
  encoder's frames are the frontend's, and the params hold no CNN."""
  c = (hubert_demo if recipe == "hubert" else w2v2_demo).get_config("runlocal")
  with c.unlocked():
    c.model.frontend = fe
  obj = objectives.build(c)
  batch = _batch(c)
  params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
  assert "conv_layers" not in str(jax.tree_util.tree_structure(params))
  loss, _ = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(1), step=0))(params, batch)
  assert np.isfinite(float(loss))
  x, hidden, valid = jax.jit(obj.represent)(params, batch)
  assert x.shape[1] == valid.shape[1] == frontends.frames_for(c.model.frontend, 16_000)
  np.testing.assert_array_equal(np.asarray(valid.sum(1)),
                                frontends.frames_for(c.model.frontend,
                                                     np.asarray(batch["valid"].sum(1))))


def test_unknown_frontend_is_one_line_with_the_choices():
  c = w2v2_demo.get_config("runlocal")
  with c.unlocked():
    c.model.frontend = dict(name="mfcc")
  with pytest.raises(ValueError, match=r"model.frontend.name='mfcc': unknown frontend; choose "
                                       r"from \['cnn', 'fbank_conv', 'mel', 'mel_stack'\]"):
    wav2vec2_model.speech_encoder_from_config(c.model)


class _Framer(nn.Module):
  """A toy frontend: non-overlapping 10 ms frames of raw samples, through one Dense."""
  width: int = 8

  @nn.compact
  def __call__(self, audio, audio_valid=None):
    b, s = audio.shape
    t = s // 160
    return nn.Dense(self.width)(audio[:, :t * 160].reshape(b, t, 160))


class _Shift(nn.Module):
  """A toy mixer: each frame takes its predecessor's value (the mixer signature)."""
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, *, valid, train):
    del train
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1] * valid[..., None]


@pytest.fixture(name="registered")
def _registered():
  """Registers test components for one test and removes them after it."""
  added = []

  def register(table, name, value):
    table.register(name, value)
    added.append((table, name))
    return value

  yield register
  for table, name in added:
    table.unregister(name)


def test_components_registered_from_outside_build_through_the_config(registered):
  registered(frontends.REGISTRY, "test_framer", frontends.Frontend(
      module=lambda fe, v, dtype: functools.partial(_Framer, width=fe.width),
      frames_for=lambda fe, n: n // 160, hop=lambda fe: 160, centre=lambda fe: 80))
  registered(mixers.REGISTRY, "test_shift", _Shift)
  c = w2v2_demo.get_config("runlocal")
  with c.unlocked():
    c.model.frontend = dict(name="test_framer", width=12)
    c.model.mixer = dict(name="test_shift")
  obj = objectives.build(c)
  batch = _batch(c)
  params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
  fx = params["speech_encoder"]["feature_extractor"]
  assert fx["Dense_0"]["kernel"].shape == (160, 12)
  x, _, valid = jax.jit(obj.represent)(params, batch)
  assert x.shape[1] == 100 and list(np.asarray(valid.sum(1))) == [100, 100, 81, 68]
  loss, _ = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(1), step=0))(params, batch)
  assert np.isfinite(float(loss))


def test_task_and_dataset_registries_take_new_entries_and_name_close_matches(registered):
  task = registered(tasks.REGISTRY, "emotion",
                    tasks.Task("emotion", "utterance", "emotion", ("accuracy",)))
  assert tasks.get("emotion") is task
  with pytest.raises(ValueError, match=r"task='emotio': unknown task; .* Did you mean 'emotion'"):
    tasks.get("emotio")
  with pytest.raises(ValueError, match="already registered"):
    tasks.register("phone", task)
  assert builders.get("librispeech").__name__ == "Librispeech"
  with pytest.raises(ValueError, match=r"dataset='librispeach': unknown dataset; .* Did you "
                                       r"mean 'librispeech'"):
    builders.get("librispeach")
  tasks.REGISTRY.unregister("emotion")
  assert "emotion" not in tasks.REGISTRY
  tasks.register("emotion", task)  # The fixture removes it again.
  with pytest.raises(ValueError, match="unknown task"):
    tasks.REGISTRY.unregister("never_added")


def test_configs_written_before_the_frontend_fields_load_as_trained(tmp_path):
  c = w2v2_demo.get_config("runlocal").to_dict()
  del c["model"]["feature_layer_norm"], c["model"]["mask_token"]
  (tmp_path / "config.json").write_text(mlc.ConfigDict(c).to_json())
  m = pretrained.config_json(tmp_path).model
  assert m.feature_layer_norm is True and m.mask_token == "learned"
