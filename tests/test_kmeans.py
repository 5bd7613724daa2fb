"""Tests for jaxssl/clustering (k-means, cluster quality) and the `python -m jaxssl.kmeans` CLI.

k-means is checked against scikit-learn's KMeans (a test-only reference), for bitwise-equal
results on 1 and 8 devices, and for determinism; the quality metrics against closed forms and
scikit-learn's mutual information.
"""
import json
import os

import jax
import numpy as np
import pytest
from sklearn import cluster as sk_cluster
from sklearn import metrics as sk_metrics

from jaxssl import pretrained
from jaxssl import kmeans as kmeans_cli
from jaxssl import objectives
from jaxssl.clustering import features
from jaxssl.clustering import minibatch as kmeans
from jaxssl.clustering import metrics
from jaxssl.data import batching
from jaxssl.data import build
from jaxssl.data import labels as labels_lib
from jaxssl.data import sources
from jaxssl.models import variants
from tests.data import corpus_fixtures as fx
from tests.evaluation import random_run


def _blobs(seed=0, k=12, n=250, dim=8):
  rng = np.random.default_rng(seed)
  centers = rng.normal(0, 4, (k, dim))
  return np.concatenate([rng.normal(c, 1.0, (n, dim)) for c in centers]).astype(np.float32)


def _mesh(n):
  return kmeans.make_mesh(jax.devices()[:n])


def test_inertia_matches_sklearn_kmeans_on_clustered_data():
  x = _blobs()
  ours = kmeans.fit(x, 12, seed=0, batch_size=1024)  # fairseq's settings otherwise.
  ref = sk_cluster.KMeans(12, n_init=10, random_state=0).fit(x)
  assert ours.inertia == pytest.approx(ref.inertia_, rel=0.01)
  _, inertia = kmeans.predict(x, ours.centroids)
  assert inertia == pytest.approx(ours.inertia, rel=1e-5)


def test_refinement_matches_sklearn_kmeans_on_unclustered_data():
  x = np.random.default_rng(1).normal(size=(3000, 16)).astype(np.float32)
  ref = sk_cluster.KMeans(24, n_init=4, random_state=0).fit(x)
  minibatch = kmeans.fit(x, 24, seed=0, batch_size=1024, num_init=4)
  refined = kmeans.fit(x, 24, seed=0, batch_size=1024, num_init=4, refine_steps=20)
  assert refined.inertia == pytest.approx(ref.inertia_, rel=0.01)
  assert refined.inertia <= minibatch.inertia  # Lloyd passes never raise the inertia.


def test_one_and_eight_devices_give_identical_codebooks_and_labels():
  assert jax.device_count() == 8  # tests/conftest.py
  x = _blobs(seed=3, k=10, n=130, dim=6)
  one = kmeans.fit(x, 10, seed=5, batch_size=512, num_init=3, refine_steps=2, mesh=_mesh(1))
  eight = kmeans.fit(x, 10, seed=5, batch_size=512, num_init=3, refine_steps=2, mesh=_mesh(8))
  np.testing.assert_array_equal(one.centroids, eight.centroids)
  assert one.num_steps == eight.num_steps
  l1, _ = kmeans.predict(x, one.centroids, mesh=_mesh(1), batch_size=256)
  l8, _ = kmeans.predict(x, one.centroids, mesh=_mesh(8), batch_size=256)
  np.testing.assert_array_equal(l1, l8)
  # The labels are the nearest centres (numpy reference).
  d = ((x[:, None] - one.centroids[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(l1, d.argmin(-1))


def test_a_seed_is_deterministic_and_seeds_differ():
  x = np.random.default_rng(2).normal(size=(1500, 4)).astype(np.float32)
  a = kmeans.fit(x, 8, seed=1, batch_size=256, num_init=2)
  b = kmeans.fit(x, 8, seed=1, batch_size=256, num_init=2)
  c = kmeans.fit(x, 8, seed=2, batch_size=256, num_init=2)
  np.testing.assert_array_equal(a.centroids, b.centroids)
  assert not np.array_equal(a.centroids, c.centroids)


def test_kmeans_plusplus_seeds_one_centre_per_separated_blob():
  rng = np.random.default_rng(0)
  centers = np.arange(16)[:, None] * np.array([[100.0, 0.0]])
  x = (centers[:, None] + rng.normal(0, 0.1, (16, 40, 2))).reshape(-1, 2).astype(np.float32)
  init = np.asarray(kmeans.kmeans_plusplus(jax.random.PRNGKey(0), x, num_clusters=16))
  assert all(any((np.abs(r - x) < 1e-6).all(-1)) for r in init)  # Seeds are data points.
  blob = np.round(init[:, 0] / 100).astype(int)
  assert sorted(blob) == list(range(16))


def test_bad_inputs_are_clear_errors():
  with pytest.raises(ValueError, match="num_clusters=5 must be in"):
    kmeans.fit(np.zeros((3, 2), np.float32), 5)
  with pytest.raises(ValueError, match=r"\[N, D\] points"):
    kmeans.fit(np.zeros((4,), np.float32), 2)
  with pytest.raises(ValueError, match="feature dims differ"):
    kmeans.predict(np.zeros((4, 3), np.float32), np.zeros((2, 5), np.float32))
  with pytest.raises(ValueError, match="num_chunks=6 must be a multiple of the 8 devices"):
    kmeans.fit(np.zeros((40, 2), np.float32), 2, num_chunks=6)


def test_quality_closed_forms():
  same = np.repeat(np.arange(5), 20)
  q = metrics.quality([f"p{i}" for i in same], same)
  assert q["pnmi"] == pytest.approx(1.0) and q["phone_purity"] == 1.0 == q["cluster_purity"]
  # A phone split evenly over two clusters: clusters stay pure, each phone is half in one.
  q = metrics.quality([f"p{i}" for i in same], same * 2 + np.tile([0, 1], 50))
  assert q["phone_purity"] == pytest.approx(1.0) and q["cluster_purity"] == pytest.approx(0.5)
  assert q["pnmi"] == pytest.approx(1.0)  # All phone uncertainty is still removed.
  # p(y, z) = [[.5, 0], [.25, .25]]: purities .75, PNMI = I / H(y) by hand.
  q = metrics.cluster_quality([[2, 0], [1, 1]])
  mi = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
  assert q["phone_purity"] == pytest.approx(0.75) and q["cluster_purity"] == pytest.approx(0.75)
  assert q["pnmi"] == pytest.approx(mi / np.log(2))


def test_pnmi_matches_sklearn_and_is_near_zero_for_independent_labels():
  rng = np.random.default_rng(0)
  phones = rng.integers(0, 30, 200_000)
  clusters = rng.integers(0, 50, 200_000)
  q = metrics.quality(phones, clusters, num_clusters=50)
  assert q["pnmi"] < 0.005
  dependent = np.where(rng.random(200_000) < 0.6, phones, clusters)
  q = metrics.quality(phones, dependent, num_clusters=50)
  h = -(np.bincount(phones) / len(phones) * np.log(np.bincount(phones) / len(phones))).sum()
  assert q["pnmi"] == pytest.approx(sk_metrics.mutual_info_score(phones, dependent) / h, rel=1e-9)


def test_frame_phones_uses_frame_centres_and_silence_in_gaps():
  # Phones "a" over [100, 300), "b" over [400, 500); frames every 100 samples centred at 50 + 100i.
  got = metrics.frame_phones("a b", [100, 400], [300, 500], 6, hop=100, offset=50)
  assert got == ["sil", "a", "a", "sil", "b", "sil"]
  assert metrics.frame_phones("", [], [], 2, hop=160) == ["sil", "sil"]
  with pytest.raises(ValueError, match="2 phones, 1 starts"):
    metrics.frame_phones("a b", [0], [1, 2], 3, hop=10)


def _corpus(root, n_train=4, n_dev=2):
  """A demo_corpus source layout with 0.5-1 s utterances and two-phone alignments."""
  for split, n in (("train", n_train), ("dev", n_dev)):
    lines = []
    for i in range(n):
      uid = f"{split}_{i}"
      num = 8000 + 1600 * i
      fx.write(os.path.join(root, "wavs", f"{uid}.wav"),
               np.concatenate([fx.tone(num // 2, freq=300.0, seed=i),
                               fx.tone(num - num // 2, freq=1200.0, seed=i)]), subtype="PCM_16")
      lines.append(json.dumps({
          "id": uid, "path": f"wavs/{uid}.wav", "text": "", "phones": ["a", "i"],
          "phone_starts": [0, num // 2], "phone_ends": [num // 2, num], "speaker": "s",
          "language": "en", "num_samples": num, "sample_rate": 16000}))
    with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
      f.write("\n".join(lines) + "\n")


def test_cli_fits_one_codebook_labels_every_split_and_scores_it(tmp_path):
  _corpus(str(tmp_path / "src"))
  build.build("demo_corpus", source=str(tmp_path / "src"), data_dir=str(tmp_path / "tfds"),
              num_workers=1, show_progress=False)
  meta = kmeans_cli.run(dataset="demo_corpus", data_dir=str(tmp_path / "tfds"), features="mfcc",
                        num_clusters=2, fraction=0.5, name="km2", num_init=2, batch_size=256,
                        log=lambda _: None)
  directory = meta["directory"]
  assert directory.endswith(os.path.join("demo_corpus", "1.0.0", "labels", "km2"))
  assert meta["label_rate"] == 100 and meta["center_offset_samples"] == 200
  centroids = np.load(os.path.join(directory, "codebook.npy"))
  assert centroids.shape == (2, 39)
  for split in ("train", "dev"):
    src = sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split=split)
    labels = labels_lib.LabelSet(directory, split)
    rows = labels.check(src.metadata()["id"], src.metadata()["num_samples"])
    for i in range(len(src)):
      feats = features.mfcc(src[i]["audio"])
      want = ((feats[:, None] - centroids[None]) ** 2).sum(-1).argmin(-1)
      np.testing.assert_array_equal(labels[rows[i]], want)  # One codebook labels all splits.
    # Two tones, two clusters: each phone maps onto its own cluster.
    assert meta["quality"][split]["pnmi"] > 0.5
  with pytest.raises(FileExistsError, match="--overwrite"):
    kmeans_cli.run(dataset="demo_corpus", data_dir=str(tmp_path / "tfds"), name="km2",
                   num_clusters=2, log=lambda _: None)
  kept = kmeans_cli.run(dataset="demo_corpus", data_dir=str(tmp_path / "tfds"), name="km2",
                        num_clusters=2, keep_existing=True, log=lambda _: None)
  assert kept["quality"] == json.loads(json.dumps(meta["quality"]))  # Read back, not refitted.
  np.testing.assert_array_equal(np.load(os.path.join(directory, "codebook.npy")), centroids)


def test_fit_indices_take_the_fraction_deterministically():
  a = kmeans_cli.fit_indices(1000, 0.1, seed=0)
  assert len(a) == 100 and len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
  np.testing.assert_array_equal(a, kmeans_cli.fit_indices(1000, 0.1, seed=0))
  assert not np.array_equal(a, kmeans_cli.fit_indices(1000, 0.1, seed=1))
  with pytest.raises(ValueError, match="--fraction=0"):
    kmeans_cli.fit_indices(10, 0.0, seed=0)


def test_layer_features_are_the_saved_models_hidden_state_from_a_workdir_or_a_step_dir(tmp_path):
  config = pretrained.load_config("configs/wav2vec2/demo.py:runlocal")  # 2 layers of 32.
  run = str(tmp_path / "run")
  params = random_run.save(config, run, seed=3)  # A step-1 checkpoint of these weights.
  rng = np.random.default_rng(0)
  audios = [rng.integers(-3000, 3000, n).astype(np.int16) for n in (12_000, 7_000)]
  from_workdir = features.Extractor("layer", checkpoint=run, layer=1)(audios)
  from_step = features.Extractor("layer", checkpoint=os.path.join(run, "ckpt", "1"),
                                 layer=1)(audios)
  layer0 = features.Extractor("layer", checkpoint=run, layer=0)(audios)
  represent = jax.jit(objectives.build(config).represent)
  for audio, got, same, first in zip(audios, from_workdir, from_step, layer0):
    frames = int(variants.frames_for(len(audio)))
    assert got.shape == (frames, 32)
    np.testing.assert_array_equal(got, same)
    # The saved weights' layer 1 (not a fresh init, not layer 0), on the same row: both share
    # one batch, padded to the longest rounded up to 0.5 s (GroupNorm sees the padding).
    x, valid = batching.crop_batch([audio], [0], 16_000, normalize=config.data.normalize)
    _, hidden, _ = represent(params, dict(audio=x, valid=valid))
    np.testing.assert_allclose(got, hidden[1][0, :frames], rtol=1e-5, atol=1e-5)
    assert not np.allclose(first, got, atol=1e-3)
  with pytest.raises(ValueError, match=r"--layer=3: the checkpoint's encoder has layers 1..2"):
    features.Extractor("layer", checkpoint=run, layer=3)
  with pytest.raises(FileNotFoundError, match="no config.json"):
    features.Extractor("layer", checkpoint=str(tmp_path), layer=1)
