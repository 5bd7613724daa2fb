"""Scoring for the SUPERB-style probes: PER, WER / CER, accuracy and greedy CTC decoding.

Error rates are corpus-level, as SUPERB reports them: the edit distance (substitutions + deletions
+ insertions) summed over all utterances, divided by the total reference length, so long
utterances weigh more than short ones (not the mean of per-utterance rates). PER is that rate over
phone tokens (rapidfuzz's Levenshtein distance over token sequences); WER and CER come from jiwer
on the decoded strings. Greedy CTC decoding takes the arg-max label of every frame, merges repeats and
drops blanks (Graves et al. 2006, https://www.cs.toronto.edu/~graves/icml_2006.pdf).
SUPERB: https://arxiv.org/abs/2105.01051
"""
from typing import Sequence

import jiwer
import numpy as np
from rapidfuzz.distance import Levenshtein as levenshtein


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
  """Levenshtein distance between two token sequences (unit costs).

  Args:
    ref: reference tokens (any hashable items: phone strings, ints).
    hyp: hypothesis tokens.

  Returns:
    The minimum number of substitutions, deletions and insertions turning `ref` into `hyp`.
  """
  # rapidfuzz compares sequences of hashables element-wise (C++, bit-parallel); lists keep
  # multi-character phones ("aɪ") one token each.
  return int(levenshtein.distance(list(ref), list(hyp)))


def token_error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
  """Corpus error rate over token sequences: sum of edit distances / sum of reference lengths.

  This is PER when the tokens are phones (and WER when they are words).

  Args:
    refs: N reference token sequences.
    hyps: N hypothesis token sequences, in the same order.

  Returns:
    The error rate as a fraction (0.25 = 25%); can exceed 1 with many insertions.

  Raises:
    ValueError: when the counts differ or every reference is empty.
  """
  if len(refs) != len(hyps):
    raise ValueError(f"token_error_rate: {len(refs)} references but {len(hyps)} hypotheses.")
  total = sum(len(r) for r in refs)
  if total == 0:
    raise ValueError("token_error_rate: every reference is empty; the rate is undefined.")
  return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / total


def _check_text(refs, hyps, name):
  if len(refs) != len(hyps):
    raise ValueError(f"{name}: {len(refs)} references but {len(hyps)} hypotheses.")
  if not any(r.strip() for r in refs):
    raise ValueError(f"{name}: every reference is empty; the rate is undefined.")


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
  """Corpus WER of decoded strings (jiwer; words split on whitespace).

  Empty references are dropped with their hypotheses (jiwer rejects them); their insertions would
  have no denominator anyway.
  """
  _check_text(refs, hyps, "word_error_rate")
  pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
  return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
  """Corpus CER of decoded strings (jiwer: characters, spaces included)."""
  _check_text(refs, hyps, "char_error_rate")
  pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
  return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))


def accuracy(predictions, targets) -> float:
  """Fraction of `predictions` equal to `targets` (both [N] ints)."""
  predictions, targets = np.asarray(predictions), np.asarray(targets)
  if predictions.shape != targets.shape or not targets.size:
    raise ValueError(f"accuracy: need equal, non-empty shapes; got {predictions.shape} and "
                     f"{targets.shape}.")
  return float(np.mean(predictions == targets))


def ctc_greedy_decode(ids, valid, blank: int = 0):
  """Best-path CTC decoding of per-frame arg-max labels.

  Args:
    ids: [B, T] int frame labels (the arg-max of the CTC logits).
    valid: [B, T] bool, True on real frames (padding is ignored).
    blank: the blank label.

  Returns:
    A list of B lists of label ids: repeats merged, then blanks removed, so "a a _ a" gives
    [a, a] and "a a a" gives [a].
  """
  ids, valid = np.asarray(ids), np.asarray(valid, bool)
  if ids.shape != valid.shape or ids.ndim != 2:
    raise ValueError(f"ctc_greedy_decode: ids {ids.shape} and valid {valid.shape} must both be "
                     "[B, T].")
  out = []
  for row, ok in zip(ids, valid):
    row = row[ok]
    keep = np.ones(len(row), bool)
    keep[1:] = row[1:] != row[:-1]
    out.append([int(x) for x in row[keep] if x != blank])
  return out
