"""The training set's fbank statistics (MelHuBERT's normalisation): computed over every real frame,
carried by the run's config into its checkpoint, read by the frontend and by k-means."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from configs.hubert import melhubert as melhubert_config
from jaxssl import feature_stats
from jaxssl import objectives
from jaxssl import pretrain
from jaxssl import pretrained
from jaxssl.clustering import features as cluster_features
from jaxssl.data import labels as labels_lib
from jaxssl.data import sources
from jaxssl.models.frontends import kaldi_fbank


def _reference_stats(source):
  """numpy over each utterance's own (unpadded) Kaldi fbank, concatenated."""
  feats = []
  for i in range(len(source)):
    audio = source[i]["audio"].astype(np.float32) / 32768.0
    feats.append(np.asarray(kaldi_fbank.fbank(jnp.asarray(audio[None]), num_bins=40))[0])
  f = np.concatenate(feats).astype(np.float64)
  return f.mean(0), f.std(0), len(f)


def test_statistics_are_over_every_real_frame_of_the_split():
  src = sources.SyntheticSource(4, seed=3, min_samples=3_000, max_samples=21_000)
  stats = feature_stats.compute(src, features="fbank", num_mels=40)
  mean, std, frames = _reference_stats(src)
  assert stats["frames"] == frames == sum(
      int(kaldi_fbank.frames_for(n)) for n in src.metadata()["num_samples"])
  np.testing.assert_allclose(stats["mean"], mean, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(stats["std"], std, rtol=1e-4, atol=1e-4)


class _Dataset(sources.SyntheticSource):
  """A synthetic split with a dataset folder (where stats and labels live)."""

  def __init__(self, path, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.path = path


def _mel_config(stats):
  c = melhubert_config.get_config("runlocal")
  with c.unlocked():
    c.model.frontend.stats = stats
  return c


def test_missing_or_mismatched_statistics_are_named_with_the_command_that_makes_them(tmp_path):
  src = _Dataset(str(tmp_path), 2, seed=0, min_samples=4_000, max_samples=4_000)
  with pytest.raises(feature_stats.StatsError, match="python -m jaxssl.feature_stats"):
    feature_stats.fill_config(_mel_config("fbank40"), src)
  feature_stats.write(feature_stats.resolve("logmel40", src.path),
                      feature_stats.compute(src, features="logmel", num_mels=40))
  with pytest.raises(feature_stats.StatsError, match="features='logmel'"):
    feature_stats.fill_config(_mel_config("logmel40"), src)  # The frontend reads Kaldi fbank.
  # Building the model before the statistics are filled in is refused, not silently wrong.
  with pytest.raises(ValueError, match="not filled in"):
    objectives.build(_mel_config("fbank40")).init(
        jax.random.key(0), dict(audio=jnp.zeros((1, 4_000)), valid=jnp.ones((1, 4_000), bool)))
  # --dry_run needs shapes only: placeholder statistics, no error.
  dry = feature_stats.fill_config(_mel_config("fbank40"), src, required=False)
  assert dry.model.frontend.mean == (0.0,) * 40 and dry.model.frontend.std == (1.0,) * 40


def test_frontend_normalises_real_frames_by_the_dataset_statistics():
  rs = np.random.default_rng(0)
  mean, std = tuple(rs.normal(-5, 2, 40).tolist()), tuple(rs.uniform(0.5, 3, 40).tolist())
  fe = ml_collections.ConfigDict(dict(name="mel_stack", num_mels=40, stack=2, features="kaldi",
                                      stats="x", mean=mean, std=std))
  from jaxssl.models import frontends  # pylint: disable=g-import-not-at-top
  module = frontends.get(fe).module(fe, None, jnp.float32)()
  audio = rs.normal(size=(2, 8_000)).astype(np.float32) * 0.1
  valid = np.arange(8_000)[None] < np.array([[8_000], [5_000]])
  out = np.asarray(module.apply({}, jnp.asarray(audio * valid), jnp.asarray(valid)))
  f = np.asarray(kaldi_fbank.fbank(jnp.asarray(audio[:1]), num_bins=40))[0]
  want = ((f - np.array(mean)) / np.array(std)).astype(np.float32)
  t = len(want)
  want = np.pad(want, ((0, 2 * out.shape[1] - t), (0, 0))).reshape(out.shape[1], 80)
  np.testing.assert_allclose(out[0], want, rtol=1e-4, atol=1e-4)
  real = int(kaldi_fbank.frames_for(5_000))
  assert np.all(out[1].reshape(-1, 40)[real:] == 0)  # Padding frames are zero.


def test_the_run_carries_its_statistics_into_the_checkpoint(tmp_path):
  """Train MelHuBERT on dataset statistics, delete them: the checkpoint still reads the same."""
  src = _Dataset(str(tmp_path / "ds"), 16, seed=0, min_samples=6_000, max_samples=12_000)
  meta = src.metadata()
  rs = np.random.default_rng(0)
  labels = str(tmp_path / "ds" / "labels" / "k20")
  labels_lib.write_split(labels, "train", list(meta["id"]),
                         [rs.integers(0, 20, 1 + n // 160) for n in meta["num_samples"]])
  labels_lib.write_meta(labels, label_rate=100, num_clusters=20)
  path = feature_stats.resolve("fbank40", src.path)
  feature_stats.write(path, feature_stats.compute(src))
  c = _mel_config("fbank40")
  with c.unlocked():
    c.total_steps, c.data.name, c.data.labels, c.data.min_samples = 2, "synthetic", "k20", 0
    c.data.split = "train"
    c.objective.num_clusters = 20
    c.mesh = common.mesh()
  work = str(tmp_path / "run")
  assert pretrain.train_and_evaluate(c, work, source=src)["step"] == 2
  with open(os.path.join(work, "config.json")) as f:
    saved = json.load(f)["model"]["frontend"]
  with open(path) as f:
    np.testing.assert_array_equal(saved["mean"], json.load(f)["mean"])
  batch = dict(audio=jnp.asarray(src[0]["audio"][None, :6_000] / 32768.0, jnp.float32),
               valid=jnp.ones((1, 6_000), bool))
  config, params = pretrained.load_checkpoint(work)
  filled = feature_stats.fill_config(c, src)
  want = jax.jit(objectives.build(filled).represent)(params, batch)[1][-1]
  os.remove(path)
  config, params = pretrained.load_checkpoint(work)  # Without the dataset's statistics.
  got = jax.jit(objectives.build(config).represent)(params, batch)[1][-1]
  np.testing.assert_array_equal(got, want)
  with c.unlocked():
    c.model.frontend.stats = ""  # Per-utterance statistics: a different input.
  unnormalised = jax.jit(objectives.build(c).represent)
  assert not np.allclose(unnormalised(params, batch)[1][-1], want, atol=1e-3)


def test_k_means_reads_fbank_normalised_by_the_statistics():
  src = sources.SyntheticSource(3, seed=1, min_samples=4_000, max_samples=9_000)
  audios = [src[i]["audio"] for i in range(3)]
  stats = feature_stats.compute(src)
  plain = cluster_features.Extractor("fbank")(audios)
  normed = cluster_features.Extractor(
      "fbank", stats=(stats["mean"], stats["std"]))(audios)
  allf = np.concatenate(normed)
  np.testing.assert_allclose(allf.mean(0), 0.0, atol=1e-3)
  np.testing.assert_allclose(allf.std(0), 1.0, atol=1e-3)
  for a, p, n in zip(audios, plain, normed):
    assert len(p) == int(kaldi_fbank.frames_for(len(a)))
    np.testing.assert_allclose(p, (n * np.array(stats["std"]) + np.array(stats["mean"])),
                               rtol=1e-4, atol=1e-3)
  with pytest.raises(ValueError, match="normalises --features=fbank"):
    cluster_features.Extractor("mfcc", stats=(stats["mean"], stats["std"]))
