"""TFDS builder for a local LibriSpeech download (https://www.openslr.org/12).

Source: the `LibriSpeech/` folder (or its parent) holding split folders such
as `train-clean-100/` and `dev-clean/`, each laid out as
`<spk>/<chap>/<spk>-<chap>-<utt>.flac` next to `<spk>-<chap>.trans.txt`
(lines "<utt-id> <TRANSCRIPT>"). Split names swap '-' for '_':
train_clean_100, train_clean_360, train_other_500, dev_clean, dev_other,
test_clean, test_other. Paper: Panayotov et al., ICASSP 2015.

Libri-light's limited-supervision sets (Kahn et al., ICASSP 2020, https://arxiv.org/abs/1912.07875;
`librispeech_finetuning.tgz`) become three more splits when a `librispeech_finetuning/` folder
sits inside the source, inside `LibriSpeech/`, or beside `LibriSpeech/`. Its layout (libri-light
data_preparation/README.md): `1h/{0..5}/{clean,other}/<spk>/<chap>/` (six folds of 10 min, each
2 clean + 2 other speakers) and `9h/{clean,other}/<spk>/<chap>/`, with LibriSpeech's file names
and `.trans.txt` transcripts. The splits (torchaudio's LibriLightLimited uses the same folders):

  train_10min  1h/0        the first 10-min fold (fairseq's base_10m.yaml names no fold);
  train_1h     1h/0 .. 5   all six folds;
  train_10h    1h/* + 9h   (10h = 1h + 9h).

They are splits of this builder, not a builder of their own, because a fine-tuning config reads
train, dev and test from one dataset (`data.name`): train_10min trains, dev_other selects and
test_clean / test_other score, as in fairseq's base_10m.yaml.
"""
import os
import re

from jaxssl.data.builders import base
from jaxssl.data.builders import skips as skips_lib

_SPLIT_DIR = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")
FINETUNING = "librispeech_finetuning"  # Libri-light's limited-supervision folder.
_NUM_FOLDS = 6  # 1h/0 .. 1h/5, 10 min each.


class Librispeech(base.SpeechBuilder, skip_registration=True):
  """LibriSpeech read English audiobooks: transcripts, speakers, no phones."""
  name = "librispeech"
  DESCRIPTION = "LibriSpeech ASR corpus (local copy)."
  HOMEPAGE = "https://www.openslr.org/12"

  def _list_entries(self, source, skips):
    finetuning = finetuning_dir(source)
    if os.path.isdir(os.path.join(source, "LibriSpeech")):
      source = os.path.join(source, "LibriSpeech")
    split_dirs = sorted(d for d in os.listdir(source)
                        if _SPLIT_DIR.match(d) and os.path.isdir(os.path.join(source, d)))
    if not split_dirs and finetuning is None:
      raise FileNotFoundError(
          f"librispeech: no split folders like 'train-clean-100' or 'dev-clean' in {source!r}.")
    out = {d.replace("-", "_"): list_split(os.path.join(source, d), d.replace("-", "_"), skips)
           for d in split_dirs}
    if finetuning is not None:
      out.update(list_finetuning(finetuning, skips))
    return out


def finetuning_dir(source):
  """The `librispeech_finetuning/` folder: `source` itself, or inside `source`, inside its
  `LibriSpeech/` or beside it; None if there is none."""
  source = os.path.abspath(source)
  if os.path.basename(source) == FINETUNING:
    return source
  librispeech = (source if os.path.basename(source) == "LibriSpeech"
                 else os.path.join(source, "LibriSpeech"))
  for d in (source, librispeech, os.path.dirname(librispeech)):
    if os.path.isdir(os.path.join(d, FINETUNING)):
      return os.path.join(d, FINETUNING)
  return None


def finetuning_folders(root):
  """{split: [folders]} of Libri-light's fine-tuning set at `root` (see the module docstring).

  Raises:
    FileNotFoundError: naming the missing fold, when `root` lacks part of the layout.
  """
  folds = [os.path.join(root, "1h", str(k)) for k in range(_NUM_FOLDS)]
  nine = os.path.join(root, "9h")
  for d in folds + [nine]:
    if not os.path.isdir(d):
      raise FileNotFoundError(
          f"librispeech: {root!r} lacks {os.path.relpath(d, root)!r}; Libri-light's "
          f"{FINETUNING} holds 1h/0 .. 1h/5 and 9h, each with clean/ and other/.")
  subsets = lambda ds: [os.path.join(d, q) for d in ds for q in ("clean", "other")
                        if os.path.isdir(os.path.join(d, q))]
  return {"train_10min": subsets(folds[:1]), "train_1h": subsets(folds),
          "train_10h": subsets(folds + [nine])}


def list_finetuning(root, skips):
  """{split: [Entry]} of the fine-tuning splits (each sorted by utterance id)."""
  out = {}
  for split, folders in finetuning_folders(root).items():
    entries = [e for d in folders for e in list_split(d, split, skips)]
    out[split] = sorted(entries, key=lambda e: e.id)
  return out


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
