"""Probe tasks: what each one predicts, its vocabulary, its per-record targets and its splits.

Four SUPERB tasks (https://arxiv.org/abs/2105.01051, s3prl's downstream/ctc, voxceleb1 and
speech_commands experts):

  phone     frame-level CTC over phone tokens (the records' space-separated IPA), scored by PER;
  asr       frame-level CTC over characters (`|` marks word boundaries, as fairseq's letter
            targets), scored by WER and CER;
  speaker   utterance-level classification of the speaker, scored by accuracy;
  language  utterance-level classification of the language, scored by accuracy.

Targets are read once per split from the records (text, phones) or their metadata (speaker,
language) into a `Targets` table indexed by record, which the probe loop gathers with the eval
loader's per-row "index". Speaker identification needs the same speakers in training and test: on
corpora whose dev/test speakers are unseen (the demo corpus, LibriSpeech) `holdout_split` carves
dev and test utterances out of every training speaker instead (s3prl's SID uses VoxCeleb1's own
identification split, which is built the same way). `REGISTRY` holds them by name; a fork adds a
task with `tasks.register("name", Task(...))`.
"""
import dataclasses
import unicodedata

import numpy as np

from jaxssl import registry

BLANK = "<blank>"  # CTC blank, id 0 (fairseq / s3prl put it first too).
UNK = "<unk>"      # Tokens or classes never seen in training.
WORD_BOUNDARY = "|"


@dataclasses.dataclass(frozen=True)
class Task:
  """One probe task: `kind` is "ctc" (frame level) or "utterance"; `labels` what is predicted."""
  name: str
  kind: str
  labels: str
  metrics: tuple


REGISTRY = registry.Registry("task", "task", {
    "phone": Task("phone", "ctc", "phones", ("per",)),
    "asr": Task("asr", "ctc", "chars", ("wer", "cer")),
    "speaker": Task("speaker", "utterance", "speaker", ("accuracy",)),
    "language": Task("language", "utterance", "language", ("accuracy",)),
})
register, get = REGISTRY.register, REGISTRY.get


class Vocabulary:
  """Token <-> id. CTC vocabularies start with the blank and <unk>; class lists have no blank."""

  def __init__(self, tokens, *, ctc: bool):
    specials = [BLANK, UNK] if ctc else []
    self.tokens = specials + sorted(set(tokens) - set(specials))
    self.ctc = ctc
    self._ids = {t: i for i, t in enumerate(self.tokens)}

  def __len__(self):
    return len(self.tokens)

  def encode(self, tokens):
    """[tokens] -> int32 [N]; unknown tokens map to <unk> (CTC) or raise (classes)."""
    if self.ctc:
      return np.array([self._ids.get(t, 1) for t in tokens], np.int32)
    missing = sorted({t for t in tokens if t not in self._ids})
    if missing:
      raise ValueError(f"Classes {missing[:5]} are not among the {len(self)} training classes.")
    return np.array([self._ids[t] for t in tokens], np.int32)

  def decode(self, ids):
    return [self.tokens[int(i)] for i in ids]


def normalize_text(text):
  """Lower-cased words of letters, digits and apostrophes (NFC), single-spaced.

  Both the references and the character vocabulary go through this, so punctuation and case
  never count as errors.
  """
  text = unicodedata.normalize("NFC", text).lower()
  kept = "".join(c if (c.isalnum() or c == "'") else " " for c in text)
  return " ".join(kept.split())


def text_to_chars(text):
  """Normalised text -> character tokens with `|` between words ("ab c" -> a b | c)."""
  return [WORD_BOUNDARY if c == " " else c for c in normalize_text(text)]


def chars_to_text(tokens):
  """Inverse of `text_to_chars` (blank and <unk> dropped)."""
  text = "".join(t for t in tokens if t not in (BLANK, UNK))
  return " ".join(text.replace(WORD_BOUNDARY, " ").split())


def tokens_of(task, record):
  """The target token list (ctc) or class string (utterance) of one record dict."""
  if task.labels == "phones":
    return str(record.get("phones", "")).split()
  if task.labels == "chars":
    return text_to_chars(str(record.get("text", "")))
  return str(record[task.labels])


@dataclasses.dataclass
class Targets:
  """Per-record targets of one split.

  Attributes:
    tokens: N token lists (ctc) or N class strings (utterance), in record order.
    ids: N int32 arrays (ctc) or int32 [N] class ids (utterance), under `vocab`.
    languages: N language names (the records' metadata), for per-language scores; may be empty.
  """
  tokens: list
  ids: object
  languages: tuple = ()

  def max_length(self):
    """The longest target sequence (0 for utterance-level classes)."""
    if isinstance(self.ids, np.ndarray):
      return 0
    return max((len(x) for x in self.ids), default=0)


def read_tokens(task, source, *, chunk=256):
  """The `tokens_of` every record of `source`, in record order.

  Speaker and language come from the source's metadata; phones and text need the records (read
  in chunks with `__getitems__` where the source has it). Empty phone or text labels in every
  record are an error naming the field, e.g. LibriSpeech has no phones.
  """
  if task.kind == "utterance":
    return [str(x) for x in source.metadata()[task.labels]]
  n = len(source)
  get_many = getattr(source, "__getitems__", None)
  out = []
  for start in range(0, n, chunk):
    keys = list(range(start, min(n, start + chunk)))
    records = get_many(keys) if get_many else [source[k] for k in keys]
    out.extend(tokens_of(task, r) for r in records)
  if n and not any(out):
    field = "phones" if task.labels == "phones" else "text"
    raise ValueError(f"Task {task.name!r}: every record of {source!r} has an empty {field!r} "
                     f"field, so there is nothing to train on (e.g. LibriSpeech has no phones: "
                     f"set data.lexicon (configs/probes/phone.py:dataset=librispeech), use "
                     f"task=asr, or a local_audio manifest with phones).")
  return out


def build_vocab(task, train_tokens):
  """The task's vocabulary from the training split's tokens (or classes)."""
  if task.kind == "ctc":
    return Vocabulary({t for seq in train_tokens for t in seq}, ctc=True)
  return Vocabulary(set(train_tokens), ctc=False)


def languages_of(source):
  """The language name of every record of `source`, in record order."""
  return tuple(str(x) for x in source.metadata()["language"])


def make_targets(task, tokens, vocab, *, split, languages=()):
  """Encodes a split's tokens; an utterance class unseen in training names the split.
  `languages`: the records' language names (`languages_of`), for per-language scores."""
  if task.kind == "ctc":
    return Targets(tokens, [vocab.encode(t) for t in tokens], tuple(languages))
  try:
    return Targets(tokens, vocab.encode(tokens), tuple(languages))
  except ValueError as e:
    hint = (" Speaker ID needs the test speakers in training: set splits.by_utterance=True."
            if task.name == "speaker" else "")
    raise ValueError(f"Task {task.name!r}, split {split!r}: {e}{hint}") from None


def holdout_split(speakers, ids, *, dev_fraction, test_fraction, seed=0):
  """Per-speaker train / dev / test record indices of one split (speaker ID on seen speakers).

  Every speaker keeps round(n * fraction) (at least 1) of its n utterances for dev and for test,
  chosen by a permutation that depends only on (seed, speaker name) and the utterance ids, so
  the split does not change with the record order.

  Args:
    speakers: [N] speaker of each record.
    ids: [N] utterance ids (order within a speaker).
    dev_fraction, test_fraction: fractions of each speaker's utterances; dev may be 0.
    seed: the split's seed.

  Returns:
    {"train", "dev", "test"}: sorted int64 record indices (dev empty when dev_fraction is 0).

  Raises:
    ValueError: naming a speaker with too few utterances to leave one for training.
  """
  if not (0 <= dev_fraction < 1 and 0 < test_fraction < 1 and dev_fraction + test_fraction < 1):
    raise ValueError(f"splits.dev_fraction={dev_fraction} and splits.test_fraction="
                     f"{test_fraction} must be in [0, 1) and (0, 1) with a sum below 1.")
  speakers, ids = np.asarray(speakers).astype(str), np.asarray(ids).astype(str)
  parts = {"train": [], "dev": [], "test": []}
  for spk in sorted(set(speakers.tolist())):
    rows = np.flatnonzero(speakers == spk)
    rows = rows[np.argsort(ids[rows], kind="stable")]
    key = [seed] + list(spk.encode("utf-8"))
    rows = rows[np.random.default_rng(key).permutation(len(rows))]
    n_test = max(1, round(len(rows) * test_fraction))
    n_dev = max(1, round(len(rows) * dev_fraction)) if dev_fraction else 0
    if len(rows) - n_test - n_dev < 1:
      raise ValueError(f"Speaker {spk!r} has {len(rows)} utterances: too few for "
                       f"dev_fraction={dev_fraction} and test_fraction={test_fraction}.")
    parts["test"].extend(rows[:n_test])
    parts["dev"].extend(rows[n_test:n_test + n_dev])
    parts["train"].extend(rows[n_test + n_dev:])
  return {k: np.sort(np.asarray(v, np.int64)) for k, v in parts.items()}


class SubsetSource:
  """Records `indices` of a Source, renumbered 0..n-1 (same interface: len, [i], metadata)."""

  def __init__(self, source, indices, *, name):
    self._source = source
    self.indices = np.asarray(indices, np.int64)
    self.name = name
    if not len(self.indices):
      raise ValueError(f"Split {name!r} is empty.")

  def __len__(self):
    return len(self.indices)

  def __repr__(self):
    return f"SubsetSource({self.name!r}, {len(self)} of {self._source!r})"

  def __getitem__(self, i):
    return self._source[int(self.indices[i])]

  def __getitems__(self, keys):
    rows = [int(self.indices[k]) for k in keys]
    get_many = getattr(self._source, "__getitems__", None)
    return get_many(rows) if get_many else [self._source[r] for r in rows]

  def metadata(self):
    return {k: np.asarray(v)[self.indices] for k, v in self._source.metadata().items()}
