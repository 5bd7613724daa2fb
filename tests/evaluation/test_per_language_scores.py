"""Probe and fine-tuning scores per language, keyed by the languages in the data (XLS-R)."""
import numpy as np

from jaxssl.evaluation import results
from jaxssl.evaluation import tasks


def test_scores_split_by_the_records_languages():
  task = tasks.get("phone")
  refs = [["a", "b"], ["a", "c", "b"], ["b"], ["c", "c"]]
  vocab = tasks.build_vocab(task, refs)
  targets = tasks.make_targets(task, refs, vocab, split="test",
                               languages=("sw", "de", "sw", "de"))
  hyps = {0: vocab.encode(["a", "b"]), 1: vocab.encode(["a", "b"]), 2: vocab.encode(["c"]),
          3: vocab.encode(["c", "c"])}
  out = results.score(task, vocab, targets, hyps)
  assert sorted(out["per_language"]) == ["de", "sw"]
  # de: 1 error in 5 reference tokens; sw: 1 in 3; overall 2 in 8.
  np.testing.assert_allclose(out["per_language"]["de"]["per"], 1 / 5)
  np.testing.assert_allclose(out["per_language"]["sw"]["per"], 1 / 3)
  np.testing.assert_allclose(out["per"], 2 / 8)
  # One language (or none recorded): no breakdown.
  mono = tasks.make_targets(task, refs, vocab, split="test", languages=("en",) * 4)
  assert "per_language" not in results.score(task, vocab, mono, hyps)
  assert "per_language" not in results.score(
      task, vocab, tasks.make_targets(task, refs, vocab, split="test"), hyps)


def test_utterance_tasks_split_accuracy_by_language():
  task = tasks.get("speaker")
  classes = ["s1", "s2", "s1", "s2"]
  vocab = tasks.build_vocab(task, classes)
  targets = tasks.make_targets(task, classes, vocab, split="test",
                               languages=("fr", "fr", "en", "en"))
  pred = {0: vocab.encode(["s1"])[0], 1: vocab.encode(["s1"])[0], 2: vocab.encode(["s1"])[0],
          3: vocab.encode(["s2"])[0]}
  out = results.score(task, vocab, targets, pred)
  assert out["per_language"] == {"en": {"accuracy": 1.0}, "fr": {"accuracy": 0.5}}
  assert out["accuracy"] == 0.75
