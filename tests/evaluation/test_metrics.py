"""PER / WER / CER / accuracy on hand-built examples, and greedy CTC decoding."""
import jiwer
import numpy as np
import pytest

from jaxssl.evaluation import metrics


@pytest.mark.parametrize("ref,hyp,expected", [
    ("kitten", "sitting", 3),   # 2 substitutions + 1 insertion.
    ("", "abc", 3), ("abc", "", 3), ("", "", 0),
    ("abc", "abc", 0), ("abcd", "acbd", 2), ("flaw", "lawn", 2),
])
def test_edit_distance_known_values(ref, hyp, expected):
  assert metrics.edit_distance(list(ref), list(hyp)) == expected


def test_edit_distance_counts_multi_character_phones_as_one_token():
  assert metrics.edit_distance(["aɪ", "t"], ["aɪ", "t"]) == 0
  assert metrics.edit_distance(["aɪ"], ["a", "ɪ"]) == 2  # A substitution and an insertion.
  assert metrics.edit_distance([3, 1, 2], [1, 2]) == 1  # Integer tokens too.


def test_per_is_corpus_level_not_mean_of_utterances():
  refs = [["p", "a", "t"], ["d"]]
  hyps = [["p", "x", "t", "s"], []]  # 1 substitution + 1 insertion; 1 deletion.
  assert metrics.token_error_rate(refs, hyps) == pytest.approx(3 / 4)
  # The per-utterance mean would be (2/3 + 1) / 2 = 0.83: long utterances weigh more.


def test_per_matches_jiwer_on_random_phone_strings():
  rng = np.random.default_rng(0)
  phones = ["a", "ɛ", "tʃ", "ŋ", "iː", "s"]
  refs = [list(rng.choice(phones, rng.integers(1, 12))) for _ in range(40)]
  hyps = [list(rng.choice(phones, rng.integers(0, 12))) for _ in range(40)]
  expected = jiwer.wer([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
  assert metrics.token_error_rate(refs, hyps) == pytest.approx(expected)


def test_wer_and_cer_known_values():
  assert metrics.word_error_rate(["the cat sat"], ["the cat sat down"]) == pytest.approx(1 / 3)
  assert metrics.word_error_rate(["a b", "c d e f"], ["a x", "c d e f"]) == pytest.approx(1 / 6)
  assert metrics.char_error_rate(["abc"], ["abd"]) == pytest.approx(1 / 3)
  assert metrics.char_error_rate(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # Space deleted.


def test_empty_references_are_dropped_and_all_empty_is_an_error():
  assert metrics.word_error_rate(["", "a b"], ["x y", "a b"]) == 0.0
  with pytest.raises(ValueError, match="every reference is empty"):
    metrics.word_error_rate(["", " "], ["a", "b"])
  with pytest.raises(ValueError, match="every reference is empty"):
    metrics.token_error_rate([[], []], [["a"], []])
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    metrics.token_error_rate([["a"], ["b"]], [["a"]])


def test_accuracy():
  assert metrics.accuracy([1, 2, 3], [1, 0, 3]) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="equal, non-empty shapes"):
    metrics.accuracy([1, 2], [1, 2, 3])


def test_ctc_greedy_decode_merges_repeats_then_drops_blanks():
  ids = np.array([[1, 1, 0, 1, 2, 2, 0, 0, 3, 3],
                  [0, 0, 4, 4, 4, 0, 4, 9, 9, 9]])
  valid = np.ones_like(ids, bool)
  valid[1, 7:] = False  # Padding frames (label 9) are ignored.
  assert metrics.ctc_greedy_decode(ids, valid) == [[1, 1, 2, 3], [4, 4]]
  assert metrics.ctc_greedy_decode(ids, valid, blank=4)[1] == [0, 0]  # 0 4 0 4 -> 0 0.
  with pytest.raises(ValueError, match=r"must both be \[B, T\]"):
    metrics.ctc_greedy_decode(ids[0], valid[0])
