"""Fits a k-means codebook on a dataset's features and writes per-utterance labels for HuBERT.

  python -m jaxssl.kmeans --dataset=demo_corpus --data_dir=data/tfds --features=mfcc \
      --num_clusters=100 --name=km100_mfcc --splits=train,dev
  python -m jaxssl.kmeans --dataset=demo_corpus --data_dir=data/tfds --features=layer \
      --checkpoint=workdir/hubert_it1 --layer=2 --num_clusters=100 --name=km100_it1
  python -m jaxssl.kmeans --dataset=librispeech --features=fbank --stats=fbank40 ...  # MelHuBERT

HuBERT's offline target step (https://arxiv.org/abs/2106.07447; fairseq simple_kmeans): features
of a random `--fraction` of the `--fit_split` utterances (10% by default, as fairseq's --percent)
fit one codebook (jaxssl/clustering/minibatch.py), which then labels every utterance of every split
in `--splits`, so train and dev share the clusters (fairseq #4312: separate codebooks give
mismatched labels). The set goes beside the dataset, `<data_dir>/<dataset>/<version>/labels/
<name>/` (or `--out`), in the layout of jaxssl/data/labels.py; configs name it in data.labels.
Where the split has phone alignments (the demo corpus), phone purity, cluster purity and PNMI
(jaxssl/clustering/metrics.py) are printed and stored in meta.json, which is written last.
"""
import json
import os
import time

from absl import flags
from absl import logging
import numpy as np

from jaxssl import cli
from jaxssl import feature_stats
from jaxssl.clustering import features as features_lib
from jaxssl.clustering import minibatch as kmeans_lib
from jaxssl.clustering import metrics
from jaxssl.data import labels as labels_lib
from jaxssl.data import sources

_STREAM_FIT = 11
_GROUP = 256  # Utterances read and featurised at a time.


def fit_indices(num_records, fraction, seed):
  """Sorted record indices of the fit subset: round(fraction * N) of N, at least 1."""
  if not 0 < fraction <= 1:
    raise ValueError(f"--fraction={fraction} must be in (0, 1].")
  n = max(1, int(round(fraction * num_records)))
  return np.sort(np.random.default_rng([_STREAM_FIT, seed]).choice(num_records, n, replace=False))


def _featurize(source, indices, extractor):
  """Yields (record index, record, features [T, D]) for `indices`, a group at a time."""
  for start in range(0, len(indices), _GROUP):
    group = [int(i) for i in indices[start:start + _GROUP]]
    records = source.__getitems__(group) if hasattr(source, "__getitems__") else [
        source[i] for i in group]
    feats = extractor([r["audio"] for r in records])
    yield from zip(group, records, feats)


def label_split(source, extractor, centroids, *, framing, mesh=None, batch_size=10_000):
  """Labels every utterance of a split and scores them against its phone alignments.

  Returns:
    (ids, labels: list of int32 [T_i], quality dict or None when the split has no phones).
  """
  ids, out, phones, clusters = [], [], [], []
  group = []

  def flush():
    # One predict call per group of utterances: fixed-size pieces, one compiled shape.
    labels, _ = kmeans_lib.predict(np.concatenate([f for _, f in group]), centroids, mesh=mesh,
                                   batch_size=batch_size)
    bounds = np.cumsum([len(f) for _, f in group])[:-1]
    for (record, _), lab in zip(group, np.split(labels, bounds)):
      ids.append(record["id"])
      out.append(lab)
      if record.get("phones"):
        phones.extend(metrics.frame_phones(
            record["phones"], record["phone_starts"], record["phone_ends"], len(lab),
            hop=framing.hop, offset=framing.center_offset))
        clusters.append(lab)
    group.clear()

  for _, record, feats in _featurize(source, np.arange(len(source)), extractor):
    group.append((record, feats))
    if len(group) == _GROUP:
      flush()
  if group:
    flush()
  quality = None
  if clusters:
    quality = metrics.quality(phones, np.concatenate(clusters), num_clusters=len(centroids))
  return ids, out, quality


def run(*, dataset, data_dir, features="mfcc", checkpoint="", layer=0, stats="",
        num_clusters=100, fit_split="train", splits=("train", "dev"), fraction=0.1, name="",
        out="", seed=0, batch_size=10_000, max_epochs=100, num_init=20, max_no_improvement=100,
        refine_steps=0, overwrite=False, keep_existing=False, log=print):
  """The CLI's work, callable from scripts (experiments/hubert_demo/run.py). Returns meta.

  A complete label set (one with its meta.json) already at the destination is an error, unless
  `overwrite` (fit again) or `keep_existing` (return its meta untouched: a pipeline such as
  scripts/quickstart.sh re-runs without refitting).
  """
  fit_source = sources.open_source(dataset, data_dir=data_dir, split=fit_split)
  directory = out or labels_lib.resolve(name or _default_name(features, num_clusters, layer),
                                        fit_source.path)
  if os.path.exists(os.path.join(directory, labels_lib.META)) and not overwrite:
    if keep_existing:
      log(f"kept the existing label set {directory}")
      with open(os.path.join(directory, labels_lib.META)) as f:
        return dict(json.load(f), directory=directory)
    raise FileExistsError(f"Label set {directory!r} exists (meta.json); pass --overwrite to "
                          "replace it.")
  norm = None
  if stats:  # The dataset's per-band statistics (jaxssl.feature_stats), as the model reads.
    norm = feature_stats.load(feature_stats.resolve(stats, fit_source.path),
                              features=features, num_mels=40)
  extractor = features_lib.Extractor(features, checkpoint=checkpoint, layer=layer, stats=norm)
  framing = extractor.framing
  mesh = kmeans_lib.make_mesh()

  start = time.perf_counter()
  indices = fit_indices(len(fit_source), fraction, seed)
  points = np.concatenate([f for _, _, f in _featurize(fit_source, indices, extractor)])
  log(f"features: {features} ({framing.label_rate} Hz), {points.shape[0]:,} frames x "
      f"{points.shape[1]} dims from {len(indices)} of {len(fit_source)} {fit_split} utterances "
      f"in {time.perf_counter() - start:.1f}s")
  start = time.perf_counter()
  result = kmeans_lib.fit(points, num_clusters, seed=seed, batch_size=batch_size,
                          max_epochs=max_epochs, num_init=num_init,
                          max_no_improvement=max_no_improvement, refine_steps=refine_steps,
                          mesh=mesh, log_fn=log)
  fit_sec = time.perf_counter() - start
  log(f"k-means: K={num_clusters}, inertia/frame {result.inertia / len(points):.4g}, "
      f"{result.num_steps} steps, {fit_sec:.1f}s on {mesh.size} device(s)")
  os.makedirs(directory, exist_ok=True)
  meta_path = os.path.join(directory, labels_lib.META)
  if os.path.exists(meta_path):
    os.remove(meta_path)  # --overwrite: the set is incomplete until the new meta is written.
  np.save(os.path.join(directory, "codebook.npy"), result.centroids)

  quality = {}
  # "a+b" (e.g. LibriSpeech 960 h) is labelled split by split, the files a reader joins.
  splits = list(dict.fromkeys(p.split("[", 1)[0] for s in splits for p in s.split("+")))
  for split in splits:
    source = fit_source if split == fit_split else sources.open_source(
        dataset, data_dir=data_dir, split=split)
    ids, labels, q = label_split(source, extractor, result.centroids, framing=framing,
                                 mesh=mesh, batch_size=batch_size)
    labels_lib.write_split(directory, split, ids, labels)
    if q is not None:
      quality[split] = q
      log(f"{split}: {len(ids)} utterances, {q['num_frames']:,} frames; phone purity "
          f"{q['phone_purity']:.3f}, cluster purity {q['cluster_purity']:.3f}, "
          f"PNMI {q['pnmi']:.3f}, {q['used_clusters']} clusters used")
    else:
      log(f"{split}: {len(ids)} utterances labelled (no phone alignments to score)")
  meta = dict(
      label_rate=framing.label_rate, num_clusters=num_clusters, features=features,
      checkpoint=os.path.abspath(checkpoint) if checkpoint else "", layer=layer, stats=stats,
      center_offset_samples=framing.center_offset, dataset=dataset, fit_split=fit_split,
      fraction=fraction, seed=seed, splits=list(splits),
      fit=dict(num_points=int(len(points)), inertia=result.inertia,
               init_inertia=result.init_inertia, num_steps=result.num_steps,
               stopped_early=result.stopped_early, seconds=fit_sec, devices=mesh.size,
               batch_size=batch_size, num_init=num_init, refine_steps=refine_steps),
      quality=quality)
  labels_lib.write_meta(directory, **meta)
  log(f"wrote {directory}")
  return dict(meta, directory=directory)


def _default_name(features, num_clusters, layer):
  return f"km{num_clusters}_{features}" + (f"_l{layer}" if features == "layer" else "")


def main(argv):
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  meta = run(dataset=f.dataset, data_dir=f.data_dir, features=f.features,
             checkpoint=f.checkpoint, layer=f.layer, stats=f.stats, num_clusters=f.num_clusters,
             fit_split=f.fit_split, splits=[s for s in f.splits.split(",") if s],
             fraction=f.fraction, name=f.name, out=f.out, seed=f.seed, batch_size=f.batch_size,
             max_epochs=f.max_epochs, num_init=f.num_init,
             max_no_improvement=f.max_no_improvement, refine_steps=f.refine_steps,
             overwrite=f.overwrite, keep_existing=f.keep_existing)
  print(json.dumps(dict(directory=meta["directory"], quality=meta["quality"])))


if __name__ == "__main__":
  flags.DEFINE_string("dataset", None, "Built dataset name (demo_corpus, librispeech, ...).",
                      required=True)
  flags.DEFINE_string("data_dir", "data/tfds", "TFDS data_dir the dataset was built into.")
  flags.DEFINE_enum("features", "mfcc", list(features_lib.KINDS), "What to cluster.")
  flags.DEFINE_string("checkpoint", "", "--features=layer: workdir of a trained run.")
  flags.DEFINE_integer("layer", 0, "--features=layer: 1-based Transformer layer.")
  flags.DEFINE_string("stats", "", "--features=fbank: normalise by these statistics "
                      "(jaxssl.feature_stats name or path), as MelHuBERT's model reads them.")
  flags.DEFINE_integer("num_clusters", 100, "K.")
  flags.DEFINE_string("fit_split", "train", "Split whose utterances fit the codebook.")
  flags.DEFINE_string("splits", "train,dev", "Comma-separated splits to label.")
  flags.DEFINE_float("fraction", 0.1, "Fraction of fit_split utterances to fit on.")
  flags.DEFINE_string("name", "", "Label set name (default km<K>_<features>[_l<layer>]).")
  flags.DEFINE_string("out", "", "Label set directory (default: beside the dataset).")
  flags.DEFINE_integer("seed", 0, "Seed of every random choice.")
  flags.DEFINE_integer("batch_size", 10_000, "Mini-batch size (points).")
  flags.DEFINE_integer("max_epochs", 100, "Mini-batch passes over the fit points, at most.")
  flags.DEFINE_integer("num_init", 20, "k-means++ starts.")
  flags.DEFINE_integer("max_no_improvement", 100, "Early stop patience (steps; 0 = off).")
  flags.DEFINE_integer("refine_steps", 0, "Full Lloyd passes after the mini-batch steps.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing label set.")
  flags.DEFINE_bool("keep_existing", False, "An existing label set is kept, not an error.")
  cli.run(main)
