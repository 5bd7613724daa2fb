"""LibriSpeech fine-tuning recipes: fairseq's channel masking, the base_{10m,1h,10h,100h} values,
dev-other selection with test-clean / test-other, and --dry_run on a generated dataset."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from configs.finetune import ctc_base_librispeech
from configs.finetune import ctc_base_librispeech_peft
from jaxssl import masking
from jaxssl import pretrained
from jaxssl.data import build
from jaxssl.evaluation import finetune
from jaxssl.evaluation import finetune_objectives
from jaxssl.evaluation import selection
from jaxssl.models import variants
from jaxssl.models import wav2vec2
from tests import fairseq_reference
from tests.data import librispeech_fixture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("prob,spans", [(0.5, 6), (0.25, 3)])
def test_channel_mask_matches_fairseq_statistics(prob, spans):
  """768 channels, spans of 64: fairseq draws floor(prob * 768 / 64 + u) spans per row and trims
  the batch's rows to the smallest count; batches of 16 rows (one fairseq GPU batch)."""
  keys = jax.random.split(jax.random.key(0), 200)
  ours = np.asarray(jax.vmap(lambda k: masking.channel_mask(k, 16, 768, prob=prob, span=64))(
      keys))
  counts = ours.sum(-1)  # [200, 16]
  assert (counts == counts[:, :1]).all()  # Same count in every row of a batch.
  rng = np.random.default_rng(0)
  ref = np.stack([fairseq_reference.mask_batch(rng, [768] * 16, 768, prob=prob, span=64,
                                               min_spans=0) for _ in range(200)])
  # Std of each batch's count ~25 channels; 200 batches: the means agree within ~4.
  assert abs(counts.mean() - ref.sum(-1).mean()) < 6.0
  assert 64 <= counts.min() and counts.max() <= spans * 64
  # Untrimmed (one row), the mask is a union of `spans` runs of 64: runs of >= 64 channels.
  one = np.asarray(masking.channel_mask(jax.random.key(3), 1, 768, prob=prob, span=64))[0]
  edges = np.flatnonzero(np.diff(np.concatenate([[0], one.astype(int), [0]])))
  runs = edges[1::2] - edges[::2]
  assert len(runs) and (runs >= 64).all() and one.sum() <= spans * 64
  assert not one[704 + 63:].any()  # Starts lie in [0, C - span).


def test_channel_mask_rejects_a_span_wider_than_the_channels():
  with pytest.raises(ValueError, match="channel_span=64"):
    masking.channel_mask(jax.random.key(0), 2, 32, prob=0.5, span=64)


class _Identity:
  """A stand-in encoder that returns its input (to see what the Transformer would get)."""

  def __init__(self, **kwargs):
    del kwargs

  def __call__(self, x, *, valid, train):
    del valid, train
    return x, (x,)


def test_masked_channels_are_zero_in_every_frame_and_the_rest_untouched():
  cfg = pretrained.load_config("configs/wav2vec2/demo.py:runlocal").model
  make = wav2vec2.speech_encoder_from_config(cfg)
  encoder = make.func(**dict(make.keywords, make_encoder=_Identity))
  audio = jax.random.normal(jax.random.key(0), (2, 4000))
  valid = jnp.ones((2, 12), bool)
  params = encoder.init(jax.random.key(1), audio, valid=valid, train=False)
  plain = encoder.apply(params, audio, valid=valid, train=False)["x"]
  d = plain.shape[-1]
  channels = jnp.zeros((2, d), bool).at[0, 1:4].set(True).at[1, d - 1].set(True)
  x = encoder.apply(params, audio, valid=valid, train=False, channel_masked=channels)["x"]
  c = np.asarray(channels)[:, None, :].repeat(x.shape[1], 1)
  assert (np.asarray(x)[c] == 0).all()                     # Whole channels, all frames.
  np.testing.assert_array_equal(np.asarray(x)[~c], np.asarray(plain)[~c])
  assert (np.asarray(plain)[c] != 0).all()                 # They were not zero before.


def _objective(channel_prob):
  config = pretrained.load_config("configs/wav2vec2/demo.py:runlocal")
  model = finetune._model_config(  # pylint: disable=protected-access
      config, {"feature_grad_mult": 0.0})
  m = dict(config.masking.to_dict(), channel_prob=channel_prob, channel_span=8)
  return finetune_objectives.CTCObjective(model, mlc.ConfigDict(m), vocab_size=5)


def test_channel_masking_runs_in_training_only(monkeypatch):
  calls = []
  real = masking.channel_mask
  monkeypatch.setattr(finetune_objectives.masking, "channel_mask",
                      lambda *a, **k: calls.append((a[1:], k)) or real(*a, **k))
  batch = {"audio": jax.random.normal(jax.random.key(0), (2, 3200)),
           "valid": jnp.ones((2, 3200), bool), "labels": jnp.array([[1, 2], [2, 3]]),
           "label_valid": jnp.ones((2, 2), bool), "rows": jnp.ones(2)}
  on, off = _objective(0.5), _objective(0.0)
  params = jax.tree.map(lambda x: getattr(x, "value", x), on.init(jax.random.key(1), batch),
                        is_leaf=lambda x: hasattr(x, "value"))
  rng = jax.random.key(2)

  def loss(objective, train, shape_only=False):  # shape_only: traced, never compiled.
    def fn(p):
      return objective.loss(p, batch, rng, step=0, train=train)[0]
    return jax.eval_shape(fn, params) if shape_only else jax.jit(fn)(params)

  np.testing.assert_allclose(loss(on, False), loss(off, False))
  assert not calls  # Never at eval.
  loss(off, True, shape_only=True)
  assert not calls  # Nor with channel_prob 0.
  loss(on, True, shape_only=True)
  embed = variants.get(on.model_config.variant).embed_dim
  assert calls == [((2, embed), {"prob": 0.5, "span": 8})]


# fairseq examples/wav2vec/config/finetuning/base_{10m,1h,10h,100h}.yaml.
FAIRSEQ = {
    "10min": ("train_10min", 13_000, 5e-5, 10_000, 0.25, 0.1),
    "1": ("train_1h", 13_000, 5e-5, 10_000, 0.25, 0.1),
    "10": ("train_10h", 20_000, 5e-5, 10_000, 0.5, 0.05),
    "100": ("train_clean_100", 80_000, 3e-5, 0, 0.5, 0.1),
}


@pytest.mark.parametrize("hours", sorted(FAIRSEQ))
def test_recipes_carry_fairseqs_values_and_select_on_dev_other(hours):
  c = ctc_base_librispeech.get_config(f"hours={hours}")
  train, steps, lr, freeze, channel_prob, layerdrop = FAIRSEQ[hours]
  assert (c.splits.train, c.total_steps, c.optim.lr, c.finetune.freeze_encoder_steps,
          c.masking.channel_prob, c.model.layerdrop_rate) == (
              train, steps, lr, freeze, channel_prob, layerdrop)
  assert (c.splits.dev, c.splits.test, tuple(c.splits.extra_tests)) == (
      "dev_other", "test_clean", ("test_other",))
  assert (c.masking.prob, c.masking.span, c.masking.channel_span) == (0.65, 10, 64)
  assert c.model.activation_dropout_rate == 0.1 and c.model.feature_grad_mult == 0.0
  assert c.eval_after_steps == freeze  # fairseq validate_after_updates (10k where it freezes).
  assert c.data.batch_size % c.optim.grad_accum_steps == 0
  peft = ctc_base_librispeech_peft.get_config(f"peft=lora,hours={hours}")
  assert peft.splits.train == train


def test_hours_aliases_and_a_clear_error():
  for alias, name in (("0.17", "10m"), ("10m", "10m"), ("1h", "1h"), ("10h", "10h"),
                      ("100h", "100h")):
    assert ctc_base_librispeech.recipe_name(alias) == name
  with pytest.raises(ValueError, match="hours='5'"):
    ctc_base_librispeech.get_config("hours=5")


class _Writer:
  def write(self, step, scalars):
    pass


class _State:
  params = {"w": jnp.zeros(2)}


def test_dev_selection_waits_for_eval_after_steps(tmp_path):
  scored = []
  dev = selection.DevSelection(lambda p: scored.append(1) or {"wer": 1.0 / (len(scored) + 1)},
                               str(tmp_path), every=2, total=9, metric="wer",
                               lower_is_better=True, after=6)
  steps = []
  for step in range(1, 10):
    n = len(scored)
    dev.after_step(step, _State(), _Writer())
    if len(scored) > n:
      steps.append(step)
  assert steps == [6, 8, 9] and dev.best_step == 9


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("ls")
  want = librispeech_fixture.make(str(root / "src"))
  build.build("librispeech", source=str(root / "src"), data_dir=str(root / "tfds"),
              num_workers=2, show_progress=False)
  return str(root / "tfds"), want


def _config(hours, data_dir):
  c = ctc_base_librispeech.get_config(f"hours={hours}")
  with c.unlocked():
    c.data.data_dir = data_dir
  return c


def test_dry_run_describes_each_recipes_splits(built):
  data_dir, want = built
  for hours, train in (("10min", "train_10min"), ("1", "train_1h"), ("10", "train_10h")):
    out = finetune.dry_run(_config(hours, data_dir))
    got = {role: (s["split"], s["utterances"]) for role, s in out["splits"].items()}
    assert got == {"train": (train, len(want[train])), "dev": ("dev_other", 4),
                   "test": ("test_clean", 4), "test_other": ("test_other", 4)}
    assert out["splits"]["train"]["hours"] > 0 and out["masking"]["channel_span"] == 64
  with pytest.raises(ValueError, match="train_clean_100"):  # Not built here.
    finetune.dry_run(_config("100", data_dir))


def test_evaluate_dry_run_command_prints_json_or_a_one_line_error(built, tmp_path):
  data_dir, want = built
  cmd = [sys.executable, "-m", "jaxssl.evaluate",
         "--config=configs/finetune/ctc_base_librispeech.py:hours=10min", "--dry_run"]
  ok = subprocess.run(cmd + [f"--config.data.data_dir={data_dir}"], cwd=REPO,
                      capture_output=True, text=True, timeout=120, check=False)
  assert ok.returncode == 0, ok.stderr[-2000:]
  out = json.loads(ok.stdout.strip().splitlines()[-1])
  assert out["splits"]["train"]["utterances"] == len(want["train_10min"])
  assert out["recipe"] == "fairseq base_10m" and out["total_steps"] == 13_000
  bad = subprocess.run(cmd + [f"--config.data.data_dir={tmp_path / 'none'}"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
  assert bad.returncode == 2 and "jaxssl.data.build --dataset=librispeech" in bad.stderr
