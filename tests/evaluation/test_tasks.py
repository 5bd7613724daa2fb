"""Task targets: vocabularies, text normalisation, per-speaker holdout splits, clear errors."""
import numpy as np
import pytest

from jaxssl.evaluation import tasks
from tests.evaluation import tone_corpus


def test_ctc_vocabulary_has_blank_and_unk_first():
  vocab = tasks.Vocabulary(["b", "a", "a", "ʃ"], ctc=True)
  assert vocab.tokens[:2] == [tasks.BLANK, tasks.UNK] and len(vocab) == 5
  ids = vocab.encode(["a", "ʃ", "unseen"])
  assert list(ids) == [2, 4, 1] and vocab.decode(ids[:2]) == ["a", "ʃ"]


def test_class_vocabulary_rejects_unseen_classes_and_hints_speaker_splits():
  task = tasks.get("speaker")
  vocab = tasks.build_vocab(task, ["s1", "s0", "s1"])
  assert vocab.tokens == ["s0", "s1"]
  np.testing.assert_array_equal(tasks.make_targets(task, ["s1", "s0"], vocab, split="dev").ids,
                                [1, 0])
  with pytest.raises(ValueError, match=r"split 'test'.*\['s9'\].*splits.by_utterance=True"):
    tasks.make_targets(task, ["s0", "s9"], vocab, split="test")


def test_text_normalisation_and_character_round_trip():
  assert tasks.normalize_text("Hello, World!  It's  ÉTÉ.") == "hello world it's été"
  chars = tasks.text_to_chars("Ab  c.")
  assert chars == ["a", "b", "|", "c"]
  assert tasks.chars_to_text(chars + [tasks.BLANK]) == "ab c"
  assert tasks.chars_to_text(["|", "a", "|", "|", "b", "|"]) == "a b"


def test_unknown_task_lists_choices():
  with pytest.raises(ValueError, match=r"task='pr': unknown task; choose from \['asr', 'language'"):
    tasks.get("pr")


def test_read_tokens_from_records_and_metadata():
  src = tone_corpus.ToneSource(5)
  phones = tasks.read_tokens(tasks.get("phone"), src, chunk=2)
  assert phones == [r["phones"].split() for r in src.records]
  chars = tasks.read_tokens(tasks.get("asr"), src)
  assert tasks.chars_to_text(chars[0]) == src.records[0]["text"]
  assert tasks.read_tokens(tasks.get("language"), src) == [r["language"] for r in src.records]


def test_missing_phones_is_a_clear_error():
  with pytest.raises(ValueError, match=r"empty 'phones' field.*LibriSpeech has no phones"):
    tasks.read_tokens(tasks.get("phone"), tone_corpus.ToneSource(3, with_phones=False))


def test_holdout_split_keeps_every_speaker_in_every_part():
  rng = np.random.default_rng(0)
  speakers = np.repeat([f"spk{i}" for i in range(5)], 10)
  ids = np.array([f"{s}_{j}" for s, j in zip(speakers, np.tile(np.arange(10), 5))])
  parts = tasks.holdout_split(speakers, ids, dev_fraction=0.1, test_fraction=0.2, seed=3)
  assert [len(parts[k]) for k in ("train", "dev", "test")] == [35, 5, 10]
  assert sorted(np.concatenate(list(parts.values()))) == list(range(50))  # A partition.
  for k in ("train", "dev", "test"):
    assert set(speakers[parts[k]]) == set(speakers)
  # The split depends on the utterances, not their order.
  perm = rng.permutation(50)
  shuffled = tasks.holdout_split(speakers[perm], ids[perm], dev_fraction=0.1,
                                 test_fraction=0.2, seed=3)
  for k in parts:
    assert sorted(ids[perm][shuffled[k]]) == sorted(ids[parts[k]])
  other = tasks.holdout_split(speakers, ids, dev_fraction=0.1, test_fraction=0.2, seed=4)
  assert not np.array_equal(other["test"], parts["test"])


def test_holdout_split_errors_name_the_speaker_and_fields():
  with pytest.raises(ValueError, match="Speaker 'b' has 2 utterances"):
    tasks.holdout_split(["a"] * 9 + ["b"] * 2, [str(i) for i in range(11)], dev_fraction=0.1,
                        test_fraction=0.2)
  with pytest.raises(ValueError, match="splits.dev_fraction=0.5 and splits.test_fraction=0.6"):
    tasks.holdout_split(["a"], ["0"], dev_fraction=0.5, test_fraction=0.6)


def test_subset_source_renumbers_records_and_metadata():
  src = tone_corpus.ToneSource(6)
  sub = tasks.SubsetSource(src, [4, 1], name="x")
  assert len(sub) == 2 and sub[0]["id"] == src[4]["id"]
  assert [r["id"] for r in sub.__getitems__([1, 0])] == [src[1]["id"], src[4]["id"]]
  assert list(sub.metadata()["speaker"]) == [src[4]["speaker"], src[1]["speaker"]]
  with pytest.raises(ValueError, match="Split 'empty' is empty"):
    tasks.SubsetSource(src, [], name="empty")
