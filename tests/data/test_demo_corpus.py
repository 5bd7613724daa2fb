"""Tests for the eSpeak NG binding and the synthetic multilingual demo corpus."""
import _ctypes
import ctypes
import json
import pathlib
import subprocess
import sys
import wave

import numpy as np
import pytest

from jaxssl import constants
from jaxssl.data import demo_corpus
from jaxssl.data import espeak
from tests.data import corpus_fixtures as fx

_TINY_HOURS = 0.01  # Rounded up to one round: 80 utterances, ~4 min of audio.


def _records(root, split):
  with open(pathlib.Path(root) / f"{split}.jsonl", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """One tiny build through the worker pool (the path the CLI takes)."""
  out = tmp_path_factory.mktemp("demo") / "corpus"
  summary = demo_corpus.build(out, hours=_TINY_HOURS, seed=0, num_workers=2)
  return out, summary


# ---------------------------------------------------------------- espeak binding


def test_synthesize_returns_audio_and_consistent_phones():
  samples, rate, phones = espeak.synthesize("Hello world, this is a test.", voice="en",
                                            variant="m3")
  assert rate == espeak.sample_rate() == 22050
  assert samples.dtype == np.int16 and samples.ndim == 1
  assert 0.8 * rate < len(samples) < 4 * rate
  assert np.abs(samples.astype(np.int32)).max() > 1000  # Not silence.
  names = [p[0] for p in phones]
  assert "h" in names and "w" in names and len(names) > 12
  prev_end = 0
  for _, start, end in phones:
    assert prev_end <= start < end <= len(samples)
    prev_end = end


def test_synthesize_is_a_pure_function():
  # Without the per-call reload, the second call differs in samples and length.
  kwargs = dict(voice="en", variant="f2", rate=170, pitch=60, seed=3)
  first = espeak.synthesize("The quick brown fox jumps.", **kwargs)
  espeak.synthesize("Hola amigo, buenos días.", voice="es", variant="m7")
  second = espeak.synthesize("The quick brown fox jumps.", **kwargs)
  np.testing.assert_array_equal(first.samples, second.samples)
  assert first.phones == second.phones


def test_synthesize_voice_parameters_change_the_audio():
  base = espeak.synthesize("Good morning everybody.", variant="m3", rate=175, pitch=50)
  slow = espeak.synthesize("Good morning everybody.", variant="m3", rate=100, pitch=50)
  high = espeak.synthesize("Good morning everybody.", variant="f2", rate=175, pitch=80)
  assert len(slow.samples) > 1.3 * len(base.samples)
  assert len(high.samples) != len(base.samples) or not np.array_equal(high.samples, base.samples)


def test_warns_when_the_library_cannot_be_unloaded(monkeypatch):
  monkeypatch.setattr(espeak, "_WARNED_STILL_LOADED", False)
  held = ctypes.CDLL(espeak._paths()[0])  # Another user keeps it mapped.
  try:
    with pytest.warns(RuntimeWarning, match="stays loaded"):
      espeak.synthesize("hello there")
  finally:
    _ctypes.dlclose(held._handle)
  kwargs = dict(voice="en", variant="m1")
  first = espeak.synthesize("hello there", **kwargs)
  np.testing.assert_array_equal(first.samples, espeak.synthesize("hello there", **kwargs).samples)


@pytest.mark.parametrize("kwargs, match", [
    (dict(text=""), "non-empty"),
    (dict(text="hi", variant="nope"), "Unknown eSpeak variant"),
    (dict(text="hi", rate=10), "rate=10"),
    (dict(text="hi", pitch=101), "pitch=101"),
])
def test_synthesize_rejects_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    espeak.synthesize(**kwargs)


def test_synthesize_unknown_language_raises():
  with pytest.raises(espeak.EspeakError, match="no voice"):
    espeak.synthesize("hello", voice="xx-notalanguage", variant="")


def test_phone_segments_pauses_unnamed_sounds_and_zero_length():
  ph, end = espeak._PHONEME_EVENT, espeak._END_EVENT
  samples = np.zeros(100, np.int16)
  samples[10:60] = 1000  # a, b, c and the unnamed sound after c.
  samples[80:95] = 1000  # d.
  events = [(ph, 10, "a"), (ph, 30, "b"), (ph, 30, "c"), (ph, 40, ""), (ph, 60, ""),
            (ph, 80, "d"), (end, 95, None)]
  # b has no duration; the sounding unnamed segment extends c; the silent one
  # is a pause (gap); d ends at the END event, inside the audio.
  assert espeak._phone_segments(events, samples) == [("a", 10, 30), ("c", 30, 60),
                                                     ("d", 80, 95)]


def test_linked_words_leave_no_sounding_gap():
  # "answer ease": a linking r runs into "ease"; WORD events used as boundaries
  # used to cut the r short and leave a loud gap.
  samples, _, phones = espeak.synthesize("Answer ease after shape.", variant="m3", rate=150)
  x = samples.astype(np.float64)
  rms = np.sqrt(np.mean(x**2))
  for (_, _, end), (_, start, _) in zip(phones[:-1], phones[1:]):
    if start > end:
      assert np.sqrt(np.mean(x[end:start]**2)) < 0.3 * rms


def test_normalize_phones():
  phones = [("ˈa", 0, 10), ("p", 10, 20), ("ʲ", 20, 25), ("ə-", 25, 30), ("ss", 30, 40),
            ("ː", 45, 50)]
  assert espeak.normalize_phones(phones) == [
      ("a", 0, 10), ("pʲ", 10, 25), ("ə", 25, 30), ("sː", 30, 40), ("ː", 45, 50)]


# ---------------------------------------------------------------- corpus layout


def test_speakers_and_plan():
  all_ids = set()
  for lang in demo_corpus.LANGUAGES:
    spk = demo_corpus.speakers(lang)
    assert [s.split for s in spk] == ["train"] * 4 + ["dev", "test"]
    assert len({s.id for s in spk}) == 6 and all(s.id.startswith(lang + "_") for s in spk)
    all_ids |= {s.id for s in spk}
  assert len(all_ids) == 6 * len(demo_corpus.LANGUAGES)
  plan = demo_corpus.utterance_plan(7, 123)
  assert plan == demo_corpus.utterance_plan(7, 123)
  assert plan != demo_corpus.utterance_plan(8, 123)
  assert 4 <= len(plan[1].split()) <= 12 and plan[1].endswith(".")


def test_meta_languages_speakers_and_splits(corpus):
  out, summary = corpus
  meta = json.loads((out / "meta.json").read_text())
  assert summary["skipped"] is False
  assert {k: summary[k] for k in meta} == meta
  assert len(meta["languages"]) >= 6
  all_speakers = [s for split in demo_corpus.SPLITS for s in meta["speakers"][split]]
  assert len(set(all_speakers)) >= 10
  train = set(meta["speakers"]["train"])
  assert not train & set(meta["speakers"]["dev"]) and not train & set(meta["speakers"]["test"])
  assert not set(meta["speakers"]["dev"]) & set(meta["speakers"]["test"])
  for split in demo_corpus.SPLITS:
    records = _records(out, split)
    assert len(records) == meta["counts"][split]
    # Every language in every split, with exactly that split's speakers.
    assert {r["language"] for r in records} == set(meta["languages"])
    assert {r["speaker"] for r in records} == set(meta["speakers"][split])
    seconds = sum(r["num_samples"] for r in records) / constants.SAMPLE_RATE
    assert seconds == pytest.approx(meta["seconds"][split])
  assert meta["total_seconds"] >= _TINY_HOURS * 3600
  assert meta["counts"]["train"] == 8 * meta["counts"]["dev"] == 8 * meta["counts"]["test"]


def test_records_audio_and_alignments(corpus):
  out, _ = corpus
  meta = json.loads((out / "meta.json").read_text())
  ids = set()
  for split in demo_corpus.SPLITS:
    for r in _records(out, split):
      assert r["id"] not in ids
      ids.add(r["id"])
      assert r["path"] == f"wav/{split}/{r['id']}.wav"
      info = meta["speaker_info"][r["speaker"]]
      assert info["language"] == r["language"] and info["split"] == split
      assert r["text"] and r["phones"] and r["sample_rate"] == 16000
      assert len(r["phones"]) == len(r["phone_starts"]) == len(r["phone_ends"])
      assert all(p and "ˈ" not in p and "-" not in p for p in r["phones"])
      starts, ends = np.array(r["phone_starts"]), np.array(r["phone_ends"])
      assert starts[0] >= 0 and ends[-1] <= r["num_samples"]
      assert np.all(starts < ends) and np.all(ends[:-1] <= starts[1:])
      with wave.open(str(out / r["path"]), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() == r["num_samples"]
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
      # The alignments sit on the speech: gaps between phones are (near) silent.
      rms = np.sqrt(np.mean(audio**2))
      for end, start in zip(ends[:-1], starts[1:]):
        if start > end:
          assert np.sqrt(np.mean(audio[end:start]**2)) < 0.3 * rms, (r["id"], end, start)
  assert sorted(meta["phone_inventory"]) == meta["phone_inventory"]
  assert len(ids) == sum(meta["counts"].values()) >= 80


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path, capsys):
  out, _ = corpus
  inline = tmp_path / "inline"
  demo_corpus.build(inline, hours=_TINY_HOURS, seed=0, num_workers=1)
  assert fx.tree_hash(inline) == fx.tree_hash(out)  # Pool of 2 == inline.
  # Same seed and hours again: a no-op that leaves the files alone.
  mtime = (inline / "meta.json").stat().st_mtime_ns
  again = demo_corpus.build(inline, hours=_TINY_HOURS, seed=0, num_workers=1)
  assert again["skipped"] is True and "nothing to do" in capsys.readouterr().out
  assert (inline / "meta.json").stat().st_mtime_ns == mtime
  # Another seed into the same directory rebuilds it completely.
  other = demo_corpus.build(inline, hours=_TINY_HOURS, seed=1, num_workers=1)
  assert other["skipped"] is False and other["seed"] == 1
  assert fx.tree_hash(inline) != fx.tree_hash(out)
  assert _records(inline, "train")[0]["text"] != _records(out, "train")[0]["text"]
  num_wavs = len(list((inline / "wav").rglob("*.wav")))
  assert num_wavs == sum(other["counts"].values())  # No stale files from seed 0.


def test_hours_scales_the_corpus(tmp_path):
  summary = demo_corpus.build(tmp_path, hours=0.1, seed=0, num_workers=1)
  assert summary["num_rounds"] > 1
  assert 0.1 * 3600 <= summary["total_seconds"] < 0.1 * 3600 + 300  # Within one round.


def test_build_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="--hours"):
    demo_corpus.build(tmp_path, hours=0, seed=0)
  with pytest.raises(ValueError, match="--seed"):
    demo_corpus.build(tmp_path, hours=0.01, seed=-1)


def test_cli_entry_point(corpus, tmp_path):
  out, _ = corpus
  result = subprocess.run(
      [sys.executable, "-m", "jaxssl.data.demo_corpus", f"--out={tmp_path}",
       f"--hours={_TINY_HOURS}", "--seed=0", "--num_workers=1"],
      capture_output=True, text=True, timeout=120, check=False,
      cwd=pathlib.Path(demo_corpus.__file__).parents[2])
  assert result.returncode == 0, result.stderr[-2000:]
  assert fx.tree_hash(tmp_path) == fx.tree_hash(out)
