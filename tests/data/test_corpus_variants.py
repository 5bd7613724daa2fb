"""Tests of the demo corpus variants: dirty builds (labelled corruptions) and imbalanced
multilingual builds (--language_hours), and the scorers on a dirty build end to end."""
import collections
import json
import pathlib
import subprocess
import sys
import wave

import numpy as np
import pytest

from jaxssl import constants
from jaxssl.data import build as build_lib
from jaxssl.data import corruptions
from jaxssl.data import demo_corpus
from jaxssl.data import demo_variants
from jaxssl.data import sampling
from tests.data import corpus_fixtures as fx

_TINY_HOURS = 0.01  # One round: 80 utterances (64 / 8 / 8).
_FRACTION = 0.25


def _records(root, split):
  with open(pathlib.Path(root) / f"{split}.jsonl", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _audio(root, record):
  with wave.open(str(pathlib.Path(root) / record["path"]), "rb") as w:
    return np.frombuffer(w.readframes(w.getnframes()), "<i2")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp("variants")
  clean = root / "clean"
  dirty = root / "dirty"
  demo_corpus.build(clean, hours=_TINY_HOURS, seed=0, num_workers=1)
  meta = demo_corpus.build(dirty, hours=_TINY_HOURS, seed=0, num_workers=1,
                           dirty_fraction=_FRACTION)
  return clean, dirty, meta


# ---------------------------------------------------------------- dirty builds


def test_dirty_build_labels_exact_counts_and_clean_utterances_untouched(corpora):
  clean, dirty, meta = corpora
  assert meta["dirty_fraction"] == _FRACTION
  assert meta["corruptions"] == list(corruptions.CORRUPTIONS)
  for split in demo_corpus.SPLITS:
    records, originals = _records(dirty, split), _records(clean, split)
    assert all("corruption" in r for r in records)
    labels = [r["corruption"] for r in records]
    # Exactly floor(f * N + 0.5) per split, each kind within one of the others.
    assert sum(bool(k) for k in labels) == int(np.floor(_FRACTION * len(records) + 0.5))
    counts = collections.Counter(k for k in labels if k)
    assert dict(counts) == {k: v for k, v in meta["corruption_counts"][split].items() if v}
    assert max(counts.values()) - min(meta["corruption_counts"][split].values()) <= 1
    for r, o in zip(records, originals):
      assert {k: v for k, v in r.items() if k != "corruption"} == o
      same = np.array_equal(_audio(dirty, r), _audio(clean, o))
      assert same == (r["corruption"] == ""), r["id"]
  assert meta["counts"]["train"] == 64
  assert sum(meta["corruption_counts"]["train"].values()) == 16  # All six kinds in train.
  assert all(v >= 2 for v in meta["corruption_counts"]["train"].values())


def test_each_corruption_changes_the_audio_as_its_label_says(corpora):
  clean, dirty, _ = corpora
  by_kind = collections.defaultdict(list)
  for r, o in zip(_records(dirty, "train"), _records(clean, "train")):
    if r["corruption"]:
      by_kind[r["corruption"]].append((_audio(dirty, r).astype(np.float64),
                                       _audio(clean, o).astype(np.float64)))
  assert set(by_kind) == set(corruptions.CORRUPTIONS)
  rms = lambda x: np.sqrt(np.mean(x ** 2))
  corr = lambda a, b: abs(np.corrcoef(a, b)[0, 1])
  for x, o in by_kind["silence"]:
    assert np.abs(x).max() <= 1 and len(x) == len(o)
  for x, o in by_kind["clipping"]:
    assert np.mean(np.abs(x) >= 32767) > 0.05 and corr(x, o) > 0.5
  for x, o in by_kind["noise"]:
    assert corr(x, o) < 0.1 and 0.8 < rms(x) / rms(o) < 1.25
  for x, o in by_kind["low_snr"]:  # Added noise at 0 dB of the utterance's mean power.
    added = x - o
    assert 10 * np.log10(rms(o) ** 2 / rms(added) ** 2) == pytest.approx(0.0, abs=0.5)
  for x, o in by_kind["music"]:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    top = np.sort(spectrum)[::-1][:len(spectrum) // 100].sum() / spectrum.sum()
    assert corr(x, o) < 0.1 and top > 0.5  # Tonal: 1% of the bins hold most of the energy.
  for x, o in by_kind["bad_resample"]:
    assert np.array_equal(x[0::2][:len(x) // 2], x[1::2][:len(x) // 2])  # Sample-and-hold.
    assert np.array_equal(x[0::2], o[0::2]) and not np.array_equal(x, o)


def test_dirty_build_is_deterministic_for_a_seed(corpora, tmp_path):
  _, dirty, _ = corpora
  again = demo_corpus.build(tmp_path / "a", hours=_TINY_HOURS, seed=0, num_workers=2,
                            dirty_fraction=_FRACTION)
  assert again["skipped"] is False
  assert fx.tree_hash(tmp_path / "a") == fx.tree_hash(dirty)
  # Another fraction is another build (not "already complete").
  other = demo_corpus.build(tmp_path / "a", hours=_TINY_HOURS, seed=0, num_workers=1,
                            dirty_fraction=0.5, corruption_kinds=["silence", "clipping"])
  assert other["skipped"] is False
  labels = [r["corruption"] for r in _records(tmp_path / "a", "train")]
  assert collections.Counter(labels) == {"": 32, "silence": 16, "clipping": 16}


def test_choose_rule_and_bad_flags():
  for n in (1, 7, 8, 64, 101):
    for f in (0.0, 0.1, 0.25, 0.5, 1.0):
      labels = corruptions.choose(n, f, ["noise", "music"], seed=3)
      assert sum(bool(k) for k in labels) == int(np.floor(f * n + 0.5))
      assert labels == corruptions.choose(n, f, ["noise", "music"], seed=3)
  assert corruptions.choose(64, 0.5, ["noise"], 1) != corruptions.choose(64, 0.5, ["noise"], 2)
  with pytest.raises(ValueError, match="dirty_fraction"):
    demo_corpus.build("/nonexistent/never", hours=0.01, dirty_fraction=1.5)
  with pytest.raises(ValueError, match="Unknown corruption 'hum'"):
    demo_corpus.build("/nonexistent/never", hours=0.01, dirty_fraction=0.5,
                      corruption_kinds=["hum"])


def test_scorers_find_the_corruptions_of_a_built_dirty_corpus(corpora, tmp_path):
  _, dirty, _ = corpora
  data_dir = tmp_path / "tfds"
  build_lib.build("demo_corpus", source=dirty, data_dir=data_dir, splits=["train"],
                  num_workers=2, show_progress=False)
  kinds = {r["id"]: r["corruption"] for r in _records(dirty, "train")}
  scores = {}
  for scorer in ("activity", "clipping", "snr"):
    out = tmp_path / f"{scorer}.tsv"
    result = subprocess.run(
        [sys.executable, "-m", "jaxssl.score", "--dataset=demo_corpus", f"--data_dir={data_dir}",
         "--split=train", f"--scorer={scorer}", f"--output={out}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith(f"# scorer={scorer}\n")
    scores[scorer] = sampling.read_scores(str(out))
    assert set(scores[scorer]) == set(kinds)
  # Every silent utterance has activity 0 and nothing else does; the clipped ones are exactly
  # the utterances with a clipping score below zero; noise-only scores below every clean SNR.
  assert {i for i, s in scores["activity"].items() if s == 0} == {
      i for i, k in kinds.items() if k == "silence"}
  assert {i for i, s in scores["clipping"].items() if s < -0.01} == {
      i for i, k in kinds.items() if k == "clipping"}
  clean_snr = [scores["snr"][i] for i, k in kinds.items() if not k]
  assert max(scores["snr"][i] for i, k in kinds.items() if k == "noise") < min(clean_snr)
  # Keeping the top 75% by activity drops every silent utterance.
  kept = sampling.select_by_score(list(kinds), str(tmp_path / "activity.tsv"), 0.75)
  assert not {list(kinds)[i] for i in kept} & {i for i, k in kinds.items() if k == "silence"}


# ---------------------------------------------------------------- imbalanced builds


def test_imbalanced_build_hours_per_language(tmp_path):
  hours = {"fr": 0.01, "en": 0.1}
  meta = demo_corpus.build(tmp_path / "imb", seed=0, num_workers=1, language_hours=hours)
  assert meta["language_hours"] == {"en": 0.1, "fr": 0.01}  # LANGUAGES order.
  assert meta["languages"] == ["en", "fr"] and meta["hours"] == pytest.approx(0.11)
  seconds = collections.Counter()
  for split in demo_corpus.SPLITS:
    records = _records(tmp_path / "imb", split)
    # Every split has both languages (one whole round each at least).
    assert {r["language"] for r in records} == {"en", "fr"}
    for r in records:
      seconds[r["language"]] += r["num_samples"] / constants.SAMPLE_RATE
  assert seconds == pytest.approx(meta["language_seconds"])
  # Each language reaches its hours and overshoots by less than one utterance (< 10 s).
  for lang, h in hours.items():
    assert h * 3600 <= seconds[lang] < h * 3600 + 10
  assert seconds["en"] / seconds["fr"] == pytest.approx(10.0, rel=0.25)
  # Utterance i is the balanced build's: the same ids and texts as utterance_plan gives.
  for r in _records(tmp_path / "imb", "train")[:5]:
    index = int(r["id"].rsplit("_", 1)[1])
    speaker, text, _ = demo_corpus.utterance_plan(0, index)
    assert (speaker.id, speaker.language, text) == (r["speaker"], r["language"], r["text"])
  again = demo_corpus.build(tmp_path / "imb2", seed=0, num_workers=2,
                            language_hours={"en": 0.1, "fr": 0.01})
  assert fx.tree_hash(tmp_path / "imb2") == fx.tree_hash(tmp_path / "imb")
  assert again["skipped"] is False


def test_language_hours_flag_parsing_and_errors(tmp_path):
  assert demo_variants.parse_language_hours("fr:0.1, en:1", demo_corpus.LANGUAGES) == {
      "en": 1.0, "fr": 0.1}
  for bad, match in [("en", "not 'lang:hours'"), ("en:x", "not 'lang:hours'"),
                     ("xx:1", "unknown language 'xx'"), ("en:0", "positive hours"),
                     ("", "empty")]:
    with pytest.raises(ValueError, match=match):
      demo_variants.parse_language_hours(bad, demo_corpus.LANGUAGES)
  result = subprocess.run(
      [sys.executable, "-m", "jaxssl.data.demo_corpus", f"--out={tmp_path}", "--hours=1",
       "--language_hours=en:1"], capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0 and "exclude each other" in result.stderr
