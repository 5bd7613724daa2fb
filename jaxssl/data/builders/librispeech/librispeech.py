"""TFDS builder for a local LibriSpeech download (https://www.openslr.org/12).

Source: the `LibriSpeech/` folder (or its parent) holding split folders such
as `train-clean-100/` and `dev-clean/`, each laid out as
`<spk>/<chap>/<spk>-<chap>-<utt>.flac` next to `<spk>-<chap>.trans.txt`
(lines "<utt-id> <TRANSCRIPT>"). Split names swap '-' for '_':
train_clean_100, train_clean_360, train_other_500, dev_clean, dev_other,
test_clean, test_other. Paper: Panayotov et al., ICASSP 2015.
"""
import os
import re

from jaxssl.data.builders import base
from jaxssl.data.builders import skips as skips_lib

_SPLIT_DIR = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")


class Librispeech(base.SpeechBuilder, skip_registration=True):
  """LibriSpeech read English audiobooks: transcripts, speakers, no phones."""
  name = "librispeech"
  DESCRIPTION = "LibriSpeech ASR corpus (local copy)."
  HOMEPAGE = "https://www.openslr.org/12"

  def _list_entries(self, source, skips):
    if os.path.isdir(os.path.join(source, "LibriSpeech")):
      source = os.path.join(source, "LibriSpeech")
    split_dirs = sorted(d for d in os.listdir(source)
                        if _SPLIT_DIR.match(d) and os.path.isdir(os.path.join(source, d)))
    if not split_dirs:
      raise FileNotFoundError(
          f"librispeech: no split folders like 'train-clean-100' or 'dev-clean' in {source!r}.")
    return {d.replace("-", "_"): list_split(os.path.join(source, d), d.replace("-", "_"), skips)
            for d in split_dirs}


def list_split(split_dir, split, skips):
  """[Entry] for one LibriSpeech split folder (sorted by utterance id)."""
  entries = []
  for spk in sorted(os.listdir(split_dir)):
    spk_dir = os.path.join(split_dir, spk)
    if not os.path.isdir(spk_dir):
      continue
    for chap in sorted(os.listdir(spk_dir)):
      chap_dir = os.path.join(spk_dir, chap)
      if os.path.isdir(chap_dir):
        entries.extend(_list_chapter(chap_dir, spk, chap, split, skips))
  return entries


def _list_chapter(chap_dir, spk, chap, split, skips):
  trans_path = os.path.join(chap_dir, f"{spk}-{chap}.trans.txt")
  texts = {}
  if os.path.exists(trans_path):
    with open(trans_path, encoding="utf-8") as f:
      for line in f:
        uid, _, text = line.strip().partition(" ")
        if uid:
          texts[uid] = text.strip()
  flacs = {os.path.splitext(fn)[0] for fn in os.listdir(chap_dir) if fn.endswith(".flac")}
  for uid in sorted(flacs | set(texts)):
    path = os.path.join(chap_dir, f"{uid}.flac")
    if uid not in texts:
      skips.add(split, skips_lib.BAD_LABEL, path, f"no transcript in {trans_path}")
      continue
    # A transcript without its flac becomes "unreadable" (no such file) when loaded.
    yield base.Entry(id=uid, path=path, text=texts[uid], speaker=spk, language="en")
