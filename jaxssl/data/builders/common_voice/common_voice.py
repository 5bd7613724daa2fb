"""TFDS builder for a local Common Voice download (https://commonvoice.mozilla.org).

Source: a language folder `<lang>/` (as extracted from a Common Voice release,
e.g. `cv-corpus-17.0-2024-03-15/fr/`) or its parent. The folder holds
`train.tsv`, `dev.tsv`, `test.tsv` (tab-separated, header row with at least
`client_id`, `path`, `sentence`) and `clips/*.mp3`. MP3 decodes through
libsndfile (>= 1.1). Speaker = client_id; language = the `locale` column, or
the folder name. Config: the language code (e.g. "fr"), inferred when the
source is a single language folder. Paper: Ardila et al., LREC 2020.
"""
import csv
import os

from jaxssl.data.builders import base
from jaxssl.data.builders import skips as skips_lib

SPLITS = ("train", "dev", "test")
_REQUIRED = ("client_id", "path", "sentence")

# Common Voice sentences can be long; csv's default 128 KiB field cap is fine,
# but quoting must be off: sentences contain bare '"' characters.
_TSV = dict(delimiter="\t", quoting=csv.QUOTE_NONE)


class CommonVoice(base.SpeechBuilder, skip_registration=True):
  """Common Voice read sentences, many languages; one config per language."""
  name = "common_voice"
  DESCRIPTION = "Mozilla Common Voice (local copy)."
  HOMEPAGE = "https://commonvoice.mozilla.org"
  ANY_CONFIG_OK = True  # Config = language code; Common Voice keeps adding languages.

  def __init__(self, *, config=None, source=None, **kwargs):
    if config is None and source is not None:
      config = _infer_language(os.fspath(source))
    if config is None:
      raise ValueError("common_voice needs --config=<language code> (e.g. fr) unless the "
                       "source is a single language folder holding train.tsv.")
    super().__init__(config=config, source=source, **kwargs)

  def _list_entries(self, source, skips):
    lang = self.builder_config.name
    lang_dir = source if _is_language_dir(source) else os.path.join(source, lang)
    if not _is_language_dir(lang_dir):
      raise FileNotFoundError(f"common_voice: no {lang}/train.tsv, dev.tsv or test.tsv "
                              f"under {source!r}.")
    return {split: read_tsv(os.path.join(lang_dir, f"{split}.tsv"), lang, split, skips)
            for split in SPLITS if os.path.exists(os.path.join(lang_dir, f"{split}.tsv"))}


def _is_language_dir(path):
  return any(os.path.exists(os.path.join(path, f"{s}.tsv")) for s in SPLITS)


def _infer_language(source):
  if _is_language_dir(source):
    return os.path.basename(os.path.normpath(source))
  if os.path.isdir(source):
    langs = [d for d in os.listdir(source) if _is_language_dir(os.path.join(source, d))]
    if len(langs) == 1:
      return langs[0]
  return None


def read_tsv(tsv_path, language, split, skips):
  """[Entry] from one Common Voice split TSV; clips are in `clips/` beside it."""
  clips = os.path.join(os.path.dirname(tsv_path), "clips")
  entries = []
  with open(tsv_path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, **_TSV)
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(f"common_voice: {tsv_path!r} lacks column(s) {missing}; "
                       f"header is {reader.fieldnames}.")
    for lineno, row in enumerate(reader, 2):
      if not row.get("path"):
        skips.add(split, skips_lib.BAD_LABEL, f"{tsv_path}:{lineno}", "empty 'path'")
        continue
      entries.append(base.Entry(
          id=os.path.splitext(row["path"])[0],
          path=os.path.join(clips, row["path"]),
          text=(row.get("sentence") or "").strip(),
          speaker=row.get("client_id") or "",
          language=row.get("locale") or language))
  return entries
