"""TFDS builder for the synthetic demo corpus (`python -m jaxssl.data.demo_corpus --out=DIR`).

The demo corpus is espeak-ng speech with phone alignments, small enough to
pretrain and probe on a laptop. Its layout is one `<split>.jsonl` per split
(train/dev/test) with lines {"id", "path" (wav relative to DIR), "text",
"phones" [IPA strings], "phone_starts", "phone_ends", "speaker", "language",
"num_samples", "sample_rate"}; wavs are 16 kHz mono int16.
"""
import json
import os

from absl import logging

from jaxssl import constants
from jaxssl.data.builders import base
from jaxssl.data.builders import skips as skips_lib

SPLITS = ("train", "dev", "test")


class DemoCorpus(base.SpeechBuilder, skip_registration=True):
  """Demo corpus: reads DIR/<split>.jsonl and the wavs it points to."""
  name = "demo_corpus"
  DESCRIPTION = "Synthetic multilingual espeak-ng speech with phone alignments."

  def _list_entries(self, source, skips):
    out = {}
    for split in SPLITS:
      manifest = os.path.join(source, f"{split}.jsonl")
      if os.path.exists(manifest):
        out[split] = list(read_jsonl(manifest, source, split, skips))
    if out and not os.path.exists(os.path.join(source, "meta.json")):
      # demo_corpus writes meta.json last, as its "build complete" mark.
      logging.warning("demo_corpus: %s has no meta.json; the corpus build may be incomplete.",
                      source)
    if not out:
      raise FileNotFoundError(
          f"demo_corpus: no {'/'.join(s + '.jsonl' for s in SPLITS)} in {source!r}; "
          "create it with `python -m jaxssl.data.demo_corpus --out=DIR`.")
    return out


def read_jsonl(manifest, root, split, skips):
  """Yields Entries from a demo-corpus style JSONL manifest; bad lines go to `skips`."""
  with open(manifest, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{manifest}:{lineno}"
      try:
        row = json.loads(line)
        if not isinstance(row, dict) or "path" not in row:
          raise ValueError("expected an object with a 'path' field")
        path = os.path.join(root, row["path"])
        label_rate = int(row.get("sample_rate", constants.SAMPLE_RATE))
        if label_rate <= 0:
          raise ValueError(f"sample_rate must be positive, got {label_rate}")
        yield base.Entry(
            id=str(row.get("id") or os.path.splitext(row["path"])[0]),
            path=path,
            text=str(row.get("text", "")),
            speaker=str(row.get("speaker", "")),
            language=str(row.get("language", "")),
            phones=_phones(row.get("phones", ())),
            phone_starts=tuple(int(t) for t in row.get("phone_starts", ())),
            phone_ends=tuple(int(t) for t in row.get("phone_ends", ())),
            label_rate=label_rate)
      except (ValueError, TypeError) as e:
        skips.add(split, skips_lib.BAD_LABEL, where, f"bad manifest line: {e}")


def _phones(value):
  """A list of phones, or a space-separated string of them -> tuple of str."""
  if isinstance(value, str):
    return tuple(value.split())
  return tuple(str(p) for p in value)
