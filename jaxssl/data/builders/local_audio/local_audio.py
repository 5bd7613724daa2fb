"""TFDS builder for any local folder of audio files, or a TSV/JSON(L) manifest.

Two kinds of source:
  * a folder: every wav/flac/ogg/mp3/opus file below it, recursively. If the
    folder's top level has subfolders named like splits (train, dev, test,
    validation, valid, eval), each becomes a split; otherwise everything is
    "train". Ids are the paths relative to the folder, without extension.
  * a manifest file (.tsv with a header row, .jsonl, or .json holding a list):
    column `path` (relative to the manifest's folder, or absolute) and optional
    `id`, `text`, `phones` (space-separated or a JSON list), `phone_starts`,
    `phone_ends` (16 kHz samples), `speaker`, `language`, `split`
    (default "train").

Name each local corpus with `--config=NAME`: it becomes the dataset folder
`<data_dir>/local_audio/NAME/<version>`, so several corpora can coexist.
"""
import csv
import json
import os

from jaxssl.data.builders import base
from jaxssl.data.builders import skips as skips_lib

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")
SPLIT_DIRS = ("train", "dev", "test", "validation", "valid", "eval")
MANIFEST_EXTENSIONS = (".tsv", ".jsonl", ".json")


class LocalAudio(base.SpeechBuilder, skip_registration=True):
  """Audio files from a folder or a manifest; `config` names the corpus."""
  name = "local_audio"
  DESCRIPTION = "Local audio files (folder or manifest)."
  SOURCE_IS_FILE_OK = True
  ANY_CONFIG_OK = True  # Any name is a valid config: it only picks the output folder.

  def _list_entries(self, source, skips):
    if os.path.isfile(source):
      if not source.endswith(MANIFEST_EXTENSIONS):
        raise ValueError(f"local_audio: manifest {source!r} must end with one of "
                         f"{MANIFEST_EXTENSIONS}.")
      return read_manifest(source, skips)
    return list_folder(source)


def list_folder(root):
  """{split: [Entry]} for all audio files below `root` (sorted, recursive)."""
  subdirs = [d for d in SPLIT_DIRS if os.path.isdir(os.path.join(root, d))]
  split_roots = {d: os.path.join(root, d) for d in subdirs} or {"train": root}
  out = {}
  for split, split_root in split_roots.items():
    entries = []
    for dirpath, dirnames, filenames in os.walk(split_root, followlinks=True):
      dirnames.sort()  # os.walk order is filesystem order; sort for reproducibility.
      for fn in sorted(filenames):
        if fn.lower().endswith(AUDIO_EXTENSIONS):
          path = os.path.join(dirpath, fn)
          uid = os.path.splitext(os.path.relpath(path, split_root))[0].replace(os.sep, "/")
          entries.append(base.Entry(id=uid, path=path))
    out[split] = entries
  return out


def read_manifest(manifest, skips):
  """{split: [Entry]} from a TSV/JSON/JSONL manifest; bad rows go to `skips`."""
  root = os.path.dirname(os.path.abspath(manifest))
  out = {}
  for where, row in _rows(manifest, skips):
    try:
      if not row.get("path"):
        raise ValueError("missing 'path'")
      path = os.path.join(root, row["path"])
      phones = _list(row.get("phones"), str)
      entry = base.Entry(
          id=str(row.get("id") or os.path.splitext(row["path"])[0]),
          path=path,
          text=str(row.get("text") or ""),
          speaker=str(row.get("speaker") or ""),
          language=str(row.get("language") or ""),
          phones=phones,
          phone_starts=_list(row.get("phone_starts"), int),
          phone_ends=_list(row.get("phone_ends"), int))
    except (ValueError, TypeError) as e:
      skips.add(str(row.get("split") or "train"), skips_lib.BAD_LABEL, where,
                f"bad manifest row: {e}")
      continue
    out.setdefault(str(row.get("split") or "train"), []).append(entry)
  if not out:
    raise ValueError(f"local_audio: manifest {manifest!r} has no usable rows.")
  return out


def _rows(manifest, skips):
  """Yields (location, dict) per manifest row."""
  if manifest.endswith(".tsv"):
    with open(manifest, encoding="utf-8", newline="") as f:
      reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
      if not reader.fieldnames or "path" not in reader.fieldnames:
        raise ValueError(f"local_audio: {manifest!r} needs a header row with a 'path' column; "
                         f"got {reader.fieldnames}.")
      for lineno, row in enumerate(reader, 2):
        yield f"{manifest}:{lineno}", row
    return
  with open(manifest, encoding="utf-8") as f:
    text = f.read()
  if manifest.endswith(".json") and text.lstrip().startswith("["):
    try:
      rows = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"local_audio: {manifest!r} is not valid JSON: {e}") from None
    for i, row in enumerate(rows):
      yield f"{manifest}[{i}]", row if isinstance(row, dict) else {}
    return
  for lineno, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        skips.add("train", skips_lib.BAD_LABEL, f"{manifest}:{lineno}", f"bad JSON: {e}")
        continue
      yield f"{manifest}:{lineno}", row if isinstance(row, dict) else {}


def _list(value, kind):
  """None/""/list/JSON-list string/space-separated string -> tuple of `kind`."""
  if value is None or value == "":
    return ()
  if isinstance(value, str):
    value = json.loads(value) if value.lstrip().startswith("[") else value.split()
  return tuple(kind(v) for v in value)
