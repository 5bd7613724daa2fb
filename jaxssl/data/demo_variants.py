"""The demo corpus's variants for data-efficiency experiments: dirty and imbalanced builds.

  python -m jaxssl.data.demo_corpus --out=/tmp/demo_dirty --dirty_fraction=0.25
  python -m jaxssl.data.demo_corpus --out=/tmp/demo_imb --language_hours=en:1.0,fr:0.1,de:0.05

A *dirty* build corrupts exactly floor(f * N + 0.5) of the N utterances of each split, picked
by a seeded permutation, with the kinds of `--corruptions` in turn (noise only, silence, heavy
clipping, low SNR, music, bad resampling: `corruptions.py`), as crawled audio is corrupted;
every manifest line gets "corruption" (the kind, "" when clean), so a scorer's precision /
recall can be measured. An *imbalanced* build (`--language_hours`) holds only the named
languages, each synthesized in its own rounds (one whole round at least, so every split has
every language) and stopped at the first utterance that reaches its hours: a language gets
max(its hours, one round ~30 s) plus less than one utterance. Utterance i is the same as in the
balanced build; meta.json records `language_hours`, `language_utterances` and
`language_seconds`. XLS-R (https://arxiv.org/abs/2111.09296) pretrains on such a spread (MLS,
VoxPopuli, BABEL: hundreds of times more English than the rarest languages).
"""
import json
import os
import wave

import numpy as np

from jaxssl.data import corruptions

# The options of a variant that make two builds differ (a rebuild skips only an equal one).
KEYS = ("language_hours", "dirty_fraction", "corruptions")


def parse_language_hours(text, languages):
  """"en:1.0,fr:0.1" -> {"en": 1.0, "fr": 0.1} (the --language_hours flag), checked against
  the corpus's `languages`."""
  out = {}
  for item in filter(None, (t.strip() for t in text.split(","))):
    lang, sep, value = item.partition(":")
    try:
      hours = float(value)
    except ValueError:
      hours = None
    if not sep or hours is None:
      raise ValueError(f"--language_hours: {item!r} is not 'lang:hours' (e.g. en:1.0,fr:0.1).")
    out[lang.strip()] = hours
  return check_language_hours(out, languages)


def check_language_hours(language_hours, languages):
  """`language_hours` checked against `languages`, in their order."""
  if not language_hours:
    raise ValueError("--language_hours is empty; give e.g. en:1.0,fr:0.1.")
  for lang, hours in language_hours.items():
    if lang not in languages:
      raise ValueError(f"--language_hours: unknown language {lang!r}; the demo corpus has "
                       f"{list(languages)}.")
    if not hours > 0:
      raise ValueError(f"--language_hours: {lang} needs positive hours, got {hours}.")
  # The corpus's order, so the flag's order does not change the build.
  return {lang: float(language_hours[lang]) for lang in languages if lang in language_hours}


def corrupt(out, seed, fraction, kinds, *, splits, write_wav):
  """The dirty-build pass: corrupts exactly floor(fraction * N + 0.5) utterances of each split
  (`corruptions.choose`) in place, writing audio with `write_wav(path, int16 samples)`, and adds
  "corruption" ("" when clean) to every manifest line.

  Returns:
    {split: {kind: count}}.
  """
  tallies = {}
  for split_no, split in enumerate(splits):
    manifest = out / f"{split}.jsonl"
    with open(manifest, encoding="utf-8") as f:
      records = [json.loads(line) for line in f if line.strip()]
    labels = corruptions.choose(len(records), fraction, kinds, seed, stream=split_no)
    tallies[split] = {k: labels.count(k) for k in kinds}
    with open(out / f"{split}.jsonl.tmp", "w", encoding="utf-8") as f:
      for i, (record, kind) in enumerate(zip(records, labels)):
        if kind:
          with wave.open(str(out / record["path"]), "rb") as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
          rng = np.random.default_rng([seed, 24, split_no, i])
          write_wav(out / record["path"], corruptions.apply(kind, audio, rng))
        f.write(json.dumps({**record, "corruption": kind}, ensure_ascii=False) + "\n")
    os.replace(out / f"{split}.jsonl.tmp", manifest)
  return tallies
