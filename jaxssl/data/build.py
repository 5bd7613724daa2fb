"""Builds a jaxssl speech dataset (array_record, TFDS layout) from a local corpus.

  python -m jaxssl.data.build --dataset=demo_corpus --source=/tmp/demo \
      --data_dir=$HOME/tensorflow_datasets
  python -m jaxssl.data.build --dataset=librispeech --source=/data/LibriSpeech \
      --data_dir=/data/tfds --splits=dev_clean,test_clean
  python -m jaxssl.data.build --dataset=local_audio --config=my_corpus \
      --source=/data/my_corpus/manifest.tsv --data_dir=/data/tfds
  python -m jaxssl.data.build --dataset=voxceleb1 --source=/data/VoxCeleb1 \
      --data_dir=/data/tfds --split_file=/data/iden_split.txt  # default: <source>/iden_split.txt

Runs without TensorFlow. Shows a progress bar per split (utterances/s, ETA,
hours of audio), then a summary of skipped files, also saved as
`<data_dir>/<dataset>/[<config>/]<version>/skipped.json`. Read the result with
`jaxssl.data.sources.open_source(dataset, data_dir=..., split=...)`.
"""
import inspect
import json
import os
import shutil
import sys
import tempfile

from absl import flags
import tensorflow_datasets as tfds

from jaxssl import cli
from jaxssl.data import builders
from jaxssl.data.builders import skips as skips_lib


def make_builder(dataset, *, data_dir, source=None, config=None, **kwargs):
  """Instantiates the builder for `dataset` writing array_record under `data_dir`."""
  cls = builders.get(dataset)
  if config is not None:
    kwargs["config"] = config
  return cls(data_dir=os.fspath(data_dir), file_format="array_record", source=source,
             **kwargs)


def build(dataset, *, source, data_dir, config=None, splits=None, num_workers=4,
          overwrite=False, show_progress=True, **builder_kwargs):
  """Builds one dataset; returns the skip summary (the content of skipped.json).

  Args:
    dataset: a name in `builders.REGISTRY`.
    source: the local corpus folder (or manifest file for local_audio).
    data_dir: TFDS data root to write into.
    config: builder config name, if the builder has configs.
    splits: optional list of split names to build.
    num_workers: audio decoding threads.
    overwrite: rebuild if the dataset folder already exists.
    show_progress: show tqdm bars.
    **builder_kwargs: more `SpeechBuilder` arguments (e.g. max_shard_bytes).

  Returns:
    dict with "num_skipped", "skipped" (reason -> count), "splits" (per split:
    num_candidates, num_written, skipped, examples) and "path" (the dataset folder).
  """
  source = os.fspath(source)
  if not os.path.exists(source):
    raise FileNotFoundError(f"--source {source!r} does not exist.")
  make = lambda: make_builder(dataset, data_dir=data_dir, source=source, config=config,
                              splits=splits, num_workers=num_workers,
                              show_progress=show_progress, **builder_kwargs)
  builder = make()
  path = os.fspath(builder.data_path)
  backup = None
  if os.path.exists(os.path.join(path, "dataset_info.json")):
    if not overwrite:
      summary = _read_summary(path)
      summary["already_built"] = True
      summary["path"] = path
      return summary
    # Keep the old build until the new one is complete. (A builder made over an
    # existing folder reads its info from there and cannot be re-prepared.)
    backup = f"{path}.old{os.getpid()}"
    os.replace(path, backup)
    builder = make()
  # Our own per-split bars carry the ETA; TFDS's would be drawn over them.
  tfds.disable_progress_bar()
  download_dir = tempfile.mkdtemp(prefix="jaxssl_build_")  # Nothing is downloaded.
  try:
    builder.download_and_prepare(
        file_format="array_record", download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(
            manual_dir=source if os.path.isdir(source) else None, try_download_gcs=False))
  except BaseException:
    if backup:
      shutil.rmtree(path, ignore_errors=True)
      os.replace(backup, path)
    raise
  finally:
    shutil.rmtree(download_dir, ignore_errors=True)
  if backup:
    shutil.rmtree(backup, ignore_errors=True)
  summary = dict(builder.skip_summary)
  summary["path"] = path
  return summary

def _read_summary(path):
  skipped = os.path.join(path, skips_lib.SKIPPED_FILE)
  if os.path.exists(skipped):
    with open(skipped) as f:
      return json.load(f)
  return {"num_skipped": 0, "skipped": {}, "splits": {}}


def _define_flags():
  # Defined only when run as a script: library users (tests, the trainer)
  # import this module next to others that own --config or --num_workers.
  flags.DEFINE_string("dataset", None, f"One of {builders.names()}.")
  flags.DEFINE_string("source", None, "Local corpus folder (or manifest file for local_audio).")
  flags.DEFINE_string("data_dir", None, "Output root; the dataset goes to data_dir/<dataset>/...")
  flags.DEFINE_string("config", None, "Builder config: language (mls, common_voice) or the "
                      "corpus name (local_audio).")
  flags.DEFINE_list("splits", None, "Build only these splits (default: all found).")
  flags.DEFINE_integer("num_workers", 4, "Audio decoding threads.")
  flags.DEFINE_bool("overwrite", False, "Rebuild even if the dataset already exists.")
  flags.DEFINE_string("split_file", None, "voxceleb1: the identification split file "
                      "(default: <source>/iden_split.txt).")


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  for name in ("dataset", "source", "data_dir"):
    if not getattr(FLAGS, name):
      sys.exit(f"error: --{name} is required (datasets: {builders.names()}).")
  options = {}
  if FLAGS.split_file:
    if FLAGS.dataset in builders.names() and "split_file" not in inspect.signature(
        builders.get(FLAGS.dataset)).parameters:  # An unknown --dataset gets build's error.
      sys.exit(f"error: --split_file is not an option of --dataset={FLAGS.dataset}.")
    options["split_file"] = FLAGS.split_file
  try:
    summary = build(FLAGS.dataset, source=FLAGS.source, data_dir=FLAGS.data_dir,
                    config=FLAGS.config, splits=FLAGS.splits,
                    num_workers=FLAGS.num_workers, overwrite=FLAGS.overwrite, **options)
  except (ValueError, FileNotFoundError, NotADirectoryError) as e:
    sys.exit(f"error: {e}")
  if summary.get("already_built"):
    print(f"{summary['path']} already exists; pass --overwrite to rebuild.")
  print(skips_lib.format_summary(summary))
  print(f"Dataset written to {summary['path']}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
