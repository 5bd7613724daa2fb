"""Libri-light's limited-supervision splits of the librispeech builder (10 min / 1 h / 10 h)."""
import pytest

from jaxssl.data import build
from jaxssl.data import sources
from jaxssl.data.builders.librispeech import librispeech
from tests.data import librispeech_fixture


def _build(source, data_dir, **kwargs):
  return build.build("librispeech", source=str(source), data_dir=str(data_dir), num_workers=2,
                     show_progress=False, **kwargs)


def _texts(data_dir, split):
  src = sources.open_source("librispeech", data_dir=data_dir, split=split)
  return {r["id"]: r["text"] for r in (src[i] for i in range(len(src)))}


def test_finetuning_splits_beside_librispeech(tmp_path):
  want = librispeech_fixture.make(str(tmp_path / "src"))
  summary = _build(tmp_path / "src", tmp_path / "tfds")
  assert set(summary["splits"]) == {"dev_other", "test_clean", "test_other", "train_10min",
                                    "train_1h", "train_10h"}
  for split, expected in want.items():
    assert _texts(tmp_path / "tfds", split) == expected, split
  # 10 min is fold 0 only; 1 h all six folds; 10 h adds 9h.
  assert {u.split("-")[0] for u in want["train_10min"]} == {"100", "200"}
  assert len(want["train_1h"]) == 6 * 2 + 3 * 2 and set(want["train_10min"]) < set(
      want["train_1h"]) < set(want["train_10h"])
  assert {u.split("-")[0] for u in set(want["train_10h"]) - set(want["train_1h"])} == {"300",
                                                                                     "400"}


def test_finetuning_folder_inside_librispeech_or_given_alone(tmp_path):
  want = librispeech_fixture.make(str(tmp_path / "src"), finetuning_at="inside",
                                  eval_splits=("dev-other",))
  _build(tmp_path / "src" / "LibriSpeech", tmp_path / "a", splits=["train_10min", "dev_other"])
  assert _texts(tmp_path / "a", "train_10min") == want["train_10min"]
  alone = tmp_path / "src" / "LibriSpeech" / librispeech.FINETUNING
  _build(alone, tmp_path / "b", splits=["train_1h"])
  assert _texts(tmp_path / "b", "train_1h") == want["train_1h"]


def test_without_a_finetuning_folder_there_are_no_finetuning_splits(tmp_path):
  librispeech_fixture.make(str(tmp_path / "src"), finetuning_at=None, eval_splits=("dev-other",))
  with pytest.raises(ValueError, match=r"train_10min.*not found"):
    _build(tmp_path / "src", tmp_path / "tfds", splits=["train_10min"])


def test_a_missing_fold_is_named(tmp_path):
  librispeech_fixture.make(str(tmp_path / "src"), eval_splits=("dev-other",))
  root = tmp_path / "src" / librispeech.FINETUNING
  (root / "1h" / "3").rename(root / "1h" / "three")
  with pytest.raises(FileNotFoundError, match=r"lacks '1h/3'"):
    librispeech.finetuning_folders(str(root))
