"""TFDS builder for local Multilingual LibriSpeech (MLS, https://www.openslr.org/94).

Source: one `mls_<language>/` folder, or a folder holding several. Each has
`<split>/transcripts.txt` (lines "<spk>_<book>_<utt>\t<text>") and
`<split>/audio/<spk>/<book>/<spk>_<book>_<utt>.flac` (`.opus` for the opus
release) for split in train/dev/test. The language comes from the folder name
and is stored as its ISO 639-1 code (german -> de), like Common Voice's.
Config: the language name ("german"), or "all" to merge every `mls_*` folder
found into one multilingual dataset (ids and speakers then get a "de_" prefix).
Paper: Pratap et al., Interspeech 2020.
"""
import os
import re

import tensorflow_datasets as tfds

from jaxssl.data.builders import base
from jaxssl.data.builders import skips as skips_lib

SPLITS = ("train", "dev", "test")
LANGUAGES = {"english": "en", "german": "de", "dutch": "nl", "french": "fr",
             "spanish": "es", "italian": "it", "portuguese": "pt", "polish": "pl"}
_LANG_DIR = re.compile(r"^mls_(?:opus_)?([a-z]+?)(?:_opus)?$")


class MultilingualLibrispeech(base.SpeechBuilder, skip_registration=True):
  """MLS read audiobooks in 8 languages; one config per language, plus "all"."""
  name = "multilingual_librispeech"
  DESCRIPTION = "Multilingual LibriSpeech (local copy)."
  HOMEPAGE = "https://www.openslr.org/94"
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=lang, description=f"MLS {lang}")
                     for lang in LANGUAGES] + [
                         tfds.core.BuilderConfig(name="all", description="All languages found.")]

  def __init__(self, *, config=None, source=None, **kwargs):
    if config is None and source is not None:
      config = _infer_language(os.fspath(source))
    if config is None:
      raise ValueError("multilingual_librispeech needs a config: one of "
                       f"{sorted(LANGUAGES) + ['all']} (e.g. --config=german).")
    super().__init__(config=config, source=source, **kwargs)

  def _list_entries(self, source, skips):
    lang_dirs = find_language_dirs(source)
    want = self.builder_config.name
    if want != "all":
      lang_dirs = {k: v for k, v in lang_dirs.items() if k == want}
    if not lang_dirs:
      raise FileNotFoundError(f"multilingual_librispeech: no mls_{want} folder at {source!r}.")
    out = {}
    for lang, lang_dir in sorted(lang_dirs.items()):
      for split in SPLITS:
        if os.path.isdir(os.path.join(lang_dir, split)):
          out.setdefault(split, []).extend(
              list_split(os.path.join(lang_dir, split), LANGUAGES.get(lang, lang), split, skips,
                         namespace=want == "all"))
    return out


def find_language_dirs(source):
  """{language name: folder}: `source` itself if it is `mls_<lang>`, else its children."""
  source = os.path.normpath(source)
  m = _LANG_DIR.match(os.path.basename(source))
  if m:
    return {m.group(1): source}
  out = {}
  for d in sorted(os.listdir(source)):
    m = _LANG_DIR.match(d)
    if m and os.path.isdir(os.path.join(source, d)):
      out[m.group(1)] = os.path.join(source, d)
  return out


def _infer_language(source):
  """The only language at `source`, or None (then a config must be given)."""
  if not os.path.isdir(source):
    return None
  langs = find_language_dirs(source)
  return next(iter(langs)) if len(langs) == 1 else None


def list_split(split_dir, language, split, skips, namespace=False):
  """[Entry] for one `mls_<lang>/<split>` folder, in transcripts.txt order.

  With `namespace`, ids and speakers get a "<language>_" prefix: MLS numbers
  speakers per language, so merged languages could otherwise collide.
  """
  prefix = f"{language}_" if namespace else ""
  trans_path = os.path.join(split_dir, "transcripts.txt")
  if not os.path.exists(trans_path):
    skips.add(split, skips_lib.BAD_LABEL, trans_path, "missing transcripts.txt")
    return []
  entries = []
  with open(trans_path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      uid, _, text = line.rstrip("\n").partition("\t")
      parts = uid.split("_")
      if len(parts) != 3 or not text:
        if line.strip():
          skips.add(split, skips_lib.BAD_LABEL, f"{trans_path}:{lineno}",
                    "expected '<spk>_<book>_<utt>\\t<text>'")
        continue
      stem = os.path.join(split_dir, "audio", parts[0], parts[1], uid)
      path = stem + ".flac"
      if not os.path.exists(path) and os.path.exists(stem + ".opus"):
        path = stem + ".opus"
      entries.append(base.Entry(id=prefix + uid, path=path, text=text.strip(),
                                speaker=prefix + parts[0], language=language))
  return entries
