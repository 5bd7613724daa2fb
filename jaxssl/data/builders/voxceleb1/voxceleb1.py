"""TFDS builder for a local VoxCeleb1 copy on its official identification split (SUPERB's SID).

Source: the VoxCeleb1 folder holding `wav/<speaker>/<video>/<nnnnn>.wav` (16 kHz mono;
vox1_dev_wav.zip and vox1_test_wav.zip both extract to `wav/`), or s3prl's layout
`<source>/{dev,test}/wav/...` (s3prl/dataio/corpus/voxceleb1sid.py globs `<root>/*/wav/<path>`,
s3prl/downstream/voxceleb1/dataset.py `*/wav/` + the listed path), or the `wav/` folder itself.

Split file: the official `iden_split.txt`
(https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/iden_split.txt, which s3prl's
downstream/voxceleb1/dataset.py reads line by line as `<code> <path>` and
dataio/corpus/voxceleb1sid.py maps with `["train", "valid", "test"][code - 1]`): one line per
utterance, `<1|2|3> <speaker>/<video>/<nnnnn>.wav`, 1 = train, 2 = dev, 3 = test, covering the
153,516 utterances of the 1,251 speakers. Default `<source>/iden_split.txt`; another path with
`split_file=` (`python -m jaxssl.data.build --dataset=voxceleb1 --split_file=...`). Nothing is
downloaded.

Records: id `<speaker>-<video>-<nnnnn>` (s3prl's `Path(uid.replace("/", "-")).stem`), speaker
the VoxCeleb id (s3prl's class is int(id[2:]) - 10001), language "" (VoxCeleb1 is mostly but not
only English and labels no language), no text or phones. Each split is sorted by id.

Errors: a missing source, `wav/` folder or split file, and a malformed split file (a line that
is not `<1|2|3> <speaker>/<video>/<file>.wav`, a path listed twice) stop the build with the file
and line. A listed wav that is not on disk is reported, as LibriSpeech's transcripts without
their flac: an "unreadable" (no such file) skip in the summary and skipped.json, and a split whose
every wav is missing fails. A wav at another rate is resampled to 16 kHz as every corpus is
(`audio.load_audio`); VoxCeleb1 ships 16 kHz. Paper: Nagrani et al., Interspeech 2017
(https://arxiv.org/abs/1706.08612).
"""
import os
import re

from jaxssl.data.builders import base

SPLIT_FILE = "iden_split.txt"
SPLITS = {"1": "train", "2": "dev", "3": "test"}
_SPEAKER_DIR = re.compile(r"^id\d+$")


class Voxceleb1(base.SpeechBuilder, skip_registration=True):
  """VoxCeleb1 celebrity interviews: speaker labels on the identification split, no text."""
  name = "voxceleb1"
  DESCRIPTION = "VoxCeleb1 (local copy) on its speaker identification split (iden_split.txt)."
  HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html"
  CITATION = ("Nagrani, Chung and Zisserman. VoxCeleb: a large-scale speaker identification "
              "dataset. Interspeech 2017.")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the VoxCeleb1 folder holding wav/ (and iden_split.txt, or give --split_file): "
      "`python -m jaxssl.data.build --dataset=voxceleb1 --source=DIR`.")

  def __init__(self, *, split_file=None, **kwargs):
    self._split_file = os.fspath(split_file) if split_file is not None else None
    super().__init__(**kwargs)

  def _list_entries(self, source, skips):
    del skips  # Missing wavs are skipped when loaded ("unreadable": no such file).
    split_file = self._split_file or os.path.join(source, SPLIT_FILE)
    if not os.path.isfile(split_file):
      how = ("" if self._split_file else
             f" (the default: {SPLIT_FILE} in the source; pass another with --split_file)")
      raise FileNotFoundError(
          f"voxceleb1: split file {split_file!r} does not exist{how}. It is the official "
          f"identification split, https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/"
          f"{SPLIT_FILE}.")
    roots = wav_roots(source)
    out = {split: [] for split in SPLITS.values()}
    for split, rel in read_split_file(split_file):
      speaker, video, name = rel.split("/")
      out[split].append(base.Entry(id=f"{speaker}-{video}-{os.path.splitext(name)[0]}",
                                   path=_find(roots, rel), speaker=speaker))
    return {split: sorted(entries, key=lambda e: e.id) for split, entries in out.items()}


def wav_roots(source):
  """The folders that hold `<speaker>/<video>/*.wav`: wav/, s3prl's */wav/, or the source."""
  roots = []
  if os.path.isdir(os.path.join(source, "wav")):
    roots.append(os.path.join(source, "wav"))
  roots += sorted(os.path.join(source, d, "wav") for d in os.listdir(source)
                  if os.path.isdir(os.path.join(source, d, "wav")))
  if not roots and any(_SPEAKER_DIR.match(d) for d in os.listdir(source)):
    roots.append(source)  # The wav/ folder itself.
  if not roots:
    raise FileNotFoundError(
        f"voxceleb1: no wav/ folder in {source!r} (VoxCeleb1's wav/<speaker>/<video>/*.wav, "
        "or s3prl's dev/wav and test/wav).")
  return roots


def _find(roots, rel):
  """The first root holding `rel`; else where it should be (its load then reports it missing)."""
  for root in roots:
    path = os.path.join(root, rel)
    if os.path.exists(path):
      return path
  return os.path.join(roots[0], rel)


def read_split_file(path):
  """Yields (split, "<speaker>/<video>/<file>.wav") per line of an iden_split.txt.

  Raises:
    ValueError: naming the file and line, for a line that is not `<1|2|3> <path>` with a
      three-part .wav path, a path listed twice, or a file without any line.
  """
  seen = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      where = f"{path}:{lineno}"
      if len(fields) != 2 or fields[0] not in SPLITS:
        raise ValueError(f"voxceleb1: {where}: expected '<1|2|3> <speaker>/<video>/<file>.wav' "
                         f"(1 train, 2 dev, 3 test), got {line.strip()!r}.")
      rel = fields[1]
      parts = rel.split("/")
      if len(parts) != 3 or not all(parts) or ".." in parts or not rel.endswith(".wav"):
        raise ValueError(f"voxceleb1: {where}: {rel!r} is not '<speaker>/<video>/<file>.wav'.")
      if rel in seen:
        raise ValueError(f"voxceleb1: {where}: {rel!r} is listed again (first at line "
                         f"{seen[rel]}).")
      seen[rel] = lineno
      yield SPLITS[fields[0]], rel
  if not seen:
    raise ValueError(f"voxceleb1: split file {path!r} lists no utterances.")
