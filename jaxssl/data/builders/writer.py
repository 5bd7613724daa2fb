"""Streaming array_record writer for TFDS splits: constant memory, no TensorFlow.

TFDS's own generator path (`split_builder` -> `writer.Writer`) collects every
serialized example of a split in a `Shuffler` before writing shards. Up to
1 GB it keeps them in RAM; past that it spills to bucket files through
`tf.io.gfile`, so any split over ~9 hours of 16 kHz int16 audio needs
TensorFlow. With `disable_shuffling` every key also lands in one bucket,
which is then read back whole and sorted, i.e. the split must fit in RAM.

This writer serializes each example exactly as TFDS does
(`features.encode_example` + `ExampleSerializer`) and appends it to the
current array_record shard, starting a new shard every `max_shard_bytes`.
Shards are written under temporary names and renamed to TFDS's
`<dataset>-<split>.array_record-0000i-of-0000n` once n is known, and the
returned `SplitInfo` goes into `dataset_info.json` as usual, so
`tfds.data_source` / `tfds.builder_from_directory` read the result unchanged.
Records keep generation order.
"""
import os

from array_record.python import array_record_module
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

# Same per-record grouping TFDS uses for array_record: one record per chunk,
# so a random read decompresses only the record it needs.
_OPTIONS = "group_size:1"
MAX_SHARD_BYTES = 1 << 30  # TFDS's default upper bound per shard.


def write_split(examples, *, split, features, filename_template,
                max_shard_bytes=MAX_SHARD_BYTES):
  """Writes (key, example) pairs of one split as array_record shards.

  Args:
    examples: iterable of (key, example dict); keys are ignored (order wins).
    split: the split name.
    features: the builder's `tfds.features.FeaturesDict`.
    filename_template: `tfds.core.ShardedFileTemplate` for this split.
    max_shard_bytes: start a new shard once the current one holds this much.

  Returns:
    `tfds.core.SplitInfo` with the shard lengths and total bytes.
  """
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  data_dir = os.fspath(filename_template.data_dir)
  tmp_paths, lengths, total_bytes = [], [], 0
  writer, shard_bytes = None, 0
  try:
    for _, example in examples:
      data = serializer.serialize_example(features.encode_example(example))
      if writer is None or (shard_bytes and shard_bytes + len(data) > max_shard_bytes):
        if writer is not None:
          writer.close()
        tmp_paths.append(os.path.join(data_dir, f".{split}-shard{len(tmp_paths):05d}.tmp"))
        writer = array_record_module.ArrayRecordWriter(tmp_paths[-1], _OPTIONS)
        lengths.append(0)
        shard_bytes = 0
      writer.write(data)
      lengths[-1] += 1
      shard_bytes += len(data)
      total_bytes += len(data)
  finally:
    if writer is not None:
      writer.close()
  if not lengths:
    raise ValueError(f"Split {split!r} has no examples; TFDS cannot hold an empty split.")
  for i, tmp in enumerate(tmp_paths):
    os.replace(tmp, os.fspath(filename_template.sharded_filepath(
        shard_index=i, num_shards=len(tmp_paths))))
  return tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=total_bytes,
                             filename_template=filename_template)
