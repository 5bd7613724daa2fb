"""One multilingual corpus from several local ones: a `local_audio` manifest listing them all.

XLS-R pretrains on MLS, Common Voice, VoxPopuli, BABEL and VoxLingua107 together (Babu et al.
2021, https://arxiv.org/abs/2111.09296). Each corpus here is listed by its own builder (its
layout, transcripts, speakers and language codes), and the rows go to one TSV manifest that
`local_audio` builds into a single dataset, where temperature sampling (`data.sampling`) then
balances the languages:

  python -m jaxssl.data.mix --out=$DATA/xlsr_mix.tsv \
      --corpus=multilingual_librispeech:all:$MLS --corpus=common_voice:fr:$CV/fr \
      --corpus=common_voice:sw:$CV/sw
  python -m jaxssl.data.build --dataset=local_audio --config=xlsr_mix --source=$DATA/xlsr_mix.tsv
  python -m jaxssl.main --config=configs/wav2vec2/xlsr.py:dataset=local_audio/xlsr_mix ...

Ids and speakers get the corpus name as a prefix (`common_voice/...`), so two corpora never
collide; paths are absolute. Files a builder would skip (unreadable, bad labels) are checked
when `local_audio` builds the manifest, which reports them in its skipped.json.
"""
import csv
import os
import tempfile

from absl import app
from absl import flags

from jaxssl.data import build
from jaxssl.data.builders import skips as skips_lib

COLUMNS = ("path", "id", "text", "speaker", "language", "split")


def parse_corpus(spec):
  """"name:config:source" (config may be empty) -> (name, config or None, source)."""
  parts = spec.split(":", 2)
  if len(parts) != 3 or not parts[0] or not parts[2]:
    raise ValueError(f"--corpus={spec!r}: expected NAME:CONFIG:SOURCE (CONFIG may be empty), "
                     "e.g. common_voice:fr:/data/cv/fr.")
  return parts[0], parts[1] or None, parts[2]


def rows(name, config, source):
  """The manifest rows of one corpus, listed by its builder."""
  if not os.path.exists(source):
    raise FileNotFoundError(f"--corpus {name}: no such folder {source!r}.")
  with tempfile.TemporaryDirectory() as tmp:  # Listing writes nothing; the builder wants a dir.
    builder = build.make_builder(name, data_dir=tmp, source=source, config=config)
    entries = builder._list_entries(source, skips_lib.SkipLog())  # pylint: disable=protected-access
  out = []
  for split, split_entries in sorted(entries.items()):
    for e in split_entries:
      if e.phones:
        raise ValueError(f"--corpus {name}: phone alignments do not go through a mix manifest.")
      out.append(dict(path=os.path.abspath(e.path), id=f"{name}/{e.id}", text=e.text,
                      speaker=f"{name}/{e.speaker}" if e.speaker else "",
                      language=e.language, split=split))
  if not out:
    raise ValueError(f"--corpus {name}: no utterances found in {source!r}.")
  return out


def write_manifest(path, corpora):
  """Writes the TSV manifest of `corpora` [(name, config, source)]; returns its row count per
  (corpus, language)."""
  all_rows, counts = [], {}
  for name, config, source in corpora:
    for row in rows(name, config, source):
      if "\t" in row["text"] or "\n" in row["text"]:
        row["text"] = " ".join(row["text"].split())
      all_rows.append(row)
      counts[(name, row["language"])] = counts.get((name, row["language"]), 0) + 1
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    # As local_audio reads it: tabs, no quoting (tabs and newlines in texts were made spaces).
    writer = csv.DictWriter(f, COLUMNS, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None,
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(all_rows)
  return counts


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.corpus:
    raise app.UsageError("Give at least one --corpus=NAME:CONFIG:SOURCE.")
  counts = write_manifest(f.out, [parse_corpus(c) for c in f.corpus])
  for (name, lang), n in sorted(counts.items()):
    print(f"{name:28s} {lang or '-':6s} {n:8,d} utterances")
  print(f"wrote {f.out}")


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "The manifest to write (.tsv).", required=True)
  flags.DEFINE_multi_string("corpus", [], "NAME:CONFIG:SOURCE, e.g. common_voice:fr:$CV/fr.")
  app.run(main)
