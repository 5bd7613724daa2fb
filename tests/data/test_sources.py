"""SyntheticSource determinism and interface; Source pickling and indexing."""
import pickle

import numpy as np
import pytest

from jaxssl.data import build
from jaxssl.data import sources
from tests.data import corpus_fixtures as fx


def test_synthetic_source_is_deterministic_and_consistent():
  src = sources.SyntheticSource(20, seed=3, min_samples=400, max_samples=900,
                                languages=("en", "fr", "sw"))
  again = sources.SyntheticSource(20, seed=3, min_samples=400, max_samples=900,
                                  languages=("en", "fr", "sw"))
  other = sources.SyntheticSource(20, seed=4, min_samples=400, max_samples=900)
  meta = src.metadata()
  assert len(src) == 20 and meta["num_samples"].dtype == np.int32
  assert ((meta["num_samples"] >= 400) & (meta["num_samples"] <= 900)).all()
  for i in (0, 7, 19):
    r = src[i]
    assert r["audio"].dtype == np.int16 and r["audio"].shape == (meta["num_samples"][i],)
    assert r["num_samples"] == meta["num_samples"][i]
    assert (r["language"], r["speaker"], r["id"]) == (
        meta["language"][i], meta["speaker"][i], meta["id"][i])
    np.testing.assert_array_equal(r["audio"], again[i]["audio"])
  assert list(meta["language"][:4]) == ["en", "fr", "sw", "en"]
  assert not np.array_equal(src[0]["audio"][:400], other[0]["audio"][:400])
  assert np.abs(src[0]["audio"]).max() > 3000  # Not silence.
  assert [r["id"] for r in src.__getitems__([1, 2])] == [src[1]["id"], src[2]["id"]]


def test_synthetic_source_validates_arguments_and_indices():
  with pytest.raises(ValueError, match="min_samples"):
    sources.SyntheticSource(4, min_samples=10, max_samples=5)
  src = sources.SyntheticSource(4, min_samples=400, max_samples=400)
  assert src[-1]["id"] == src[3]["id"]
  with pytest.raises(IndexError):
    src[4]


def test_built_source_pickles_and_batch_reads(tmp_path):
  fx.demo_corpus(str(tmp_path / "demo"), bad=False)
  build.build("demo_corpus", source=str(tmp_path / "demo"), data_dir=str(tmp_path / "tfds"),
              show_progress=False)
  src = sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="train")
  clone = pickle.loads(pickle.dumps(src))  # grain worker processes pickle the source.
  np.testing.assert_array_equal(clone[1]["audio"], src[1]["audio"])
  batch = src.__getitems__([2, 0])
  assert [r["id"] for r in batch] == [src[2]["id"], src[0]["id"]]
  assert isinstance(batch[0]["language"], str)
  with pytest.raises(IndexError):
    src[len(src)]
  sliced = sources.open_source("demo_corpus", data_dir=tmp_path / "tfds", split="train[:2]")
  assert len(sliced) == 2 and list(sliced.metadata()["id"]) == [src[0]["id"], src[1]["id"]]
