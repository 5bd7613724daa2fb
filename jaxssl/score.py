"""Scores every utterance of a built split and writes the score file `data.selection` reads.

  python -m jaxssl.score --dataset=demo_corpus --data_dir=data/tfds --split=train \
      --scorer=snr --output=scores/snr.tsv
  python -m jaxssl.score ... --scorer=loss --checkpoint=workdir/w2v_demo
  python -m jaxssl.score ... --scorer=perplexity --labels=km100_mfcc
  python -m jaxssl.score ... --scorer=contrastive --labels=km100_mfcc --target_split=dev
  python -m jaxssl.score ... --scorer=random --seed=0

then train on the best fraction:

  python -m jaxssl.main --config=configs/wav2vec2/demo.py \
      --config.data.selection.score_file=scores/snr.tsv --config.data.selection.keep_fraction=0.5

Scorers, their methods and sources: `jaxssl/data/scorers.py` (snr, activity, clipping: signal
quality; loss, perplexity, contrastive: model based; length; random). The file holds '#' header
lines naming the scorer, what its value is and its direction, then `id<TAB>score` lines with
score = +value or -value so that the highest scores are the ones to keep
(`sampling.select_by_score` keeps exactly max(1, round(keep_fraction * N)), ties by record
order).

The loss scorer runs the checkpoint's own objective (`objective.loss`, train=False: no dropout,
a fixed mask and negatives draw from --seed) on each whole utterance, one at a time, padded to
a multiple of --pad_multiple samples (the padding is marked invalid, so only the compiled
shapes are shared); audio is normalised when the checkpoint's config.data.normalize says so.
HuBERT-style objectives read the utterance's k-means labels (--labels, or the checkpoint's
data.labels found beside the dataset).
"""
import os
import sys
import time

from absl import flags
from absl import logging
import flax
import jax
import numpy as np

from jaxssl import cli
from jaxssl import objectives
from jaxssl import pretrained
from jaxssl.data import audio as audio_lib
from jaxssl.data import labels as labels_lib
from jaxssl.data import scorers
from jaxssl.data import sources

_GROUP = 64  # Records read at a time.
# The main term of each objective's loss, first one present in the metrics wins.
LOSS_METRICS = ("loss_contrastive", "loss_prediction")


def _define_flags():
  flags.DEFINE_string("dataset", None, "Built dataset name (e.g. demo_corpus, librispeech), "
                      "'name/config' for a builder config (e.g. multilingual_librispeech/fr).")
  flags.DEFINE_string("data_dir", None, "The --data_dir it was built into.")
  flags.DEFINE_string("split", "train", "Split to score.")
  flags.DEFINE_enum("scorer", None, sorted(scorers.SCORERS), "What to score.")
  flags.DEFINE_string("output", None, "Score file to write (TSV).")
  flags.DEFINE_integer("seed", 0, "random: the draw's seed; loss: the mask / negatives key.")
  flags.DEFINE_string("checkpoint", "", "loss: a jaxssl checkpoint (training workdir, "
                      "ckpt/<step> or a `python -m jaxssl.convert` output).")
  flags.DEFINE_string("labels", "", "perplexity / contrastive (and HuBERT loss): a label set "
                      "name beside the dataset or its directory (`python -m jaxssl.kmeans`).")
  flags.DEFINE_string("target_split", "", "contrastive: the target-domain split of --labels.")
  flags.DEFINE_float("ngram_k", 1.0, "perplexity / contrastive: add-k smoothing of the bigram.")
  flags.DEFINE_bool("collapse_repeats", True, "perplexity / contrastive: collapse repeated units.")
  flags.DEFINE_float("top_db", scorers.ACTIVITY_TOP_DB, "activity: librosa.effects.split top_db.")
  flags.DEFINE_float("clip_level", scorers.CLIP_LEVEL, "clipping: |x| level, fraction of full "
                     "scale.")
  flags.DEFINE_integer("pad_multiple", 8000, "loss: pad each utterance to a multiple of this "
                       "many samples (fewer compiled shapes).")
  flags.DEFINE_string("loss_metric", "", f"loss: the metric to score (default: the first of "
                      f"{list(LOSS_METRICS)} the objective reports, else 'loss').")


def _records(source, indices=None):
  """Yields (index, record) over the split, a group at a time."""
  indices = range(len(source)) if indices is None else indices
  indices = [int(i) for i in indices]
  for start in range(0, len(indices), _GROUP):
    group = indices[start:start + _GROUP]
    records = (source.__getitems__(group) if hasattr(source, "__getitems__")
               else [source[i] for i in group])
    yield from zip(group, records)


def _ids(source, meta):
  if "id" in meta:
    return [str(i) for i in meta["id"]]
  return [str(r["id"]) for _, r in _records(source)]


def signal_scores(source, fn):
  """fn(int16 audio) of every record, in record order."""
  return [fn(np.asarray(r["audio"])) for _, r in _records(source)]


def _label_set(labels, source, split, dataset_hint):
  """The LabelSet of `split`, or an error naming the path and the command that makes it."""
  if not labels:
    raise ValueError(f"--labels is required: a label set made by\n  python -m jaxssl.kmeans "
                     f"{dataset_hint} --features=mfcc --num_clusters=100 --name=km100_mfcc "
                     f"--splits={split}")
  directory = labels_lib.resolve(labels, getattr(source, "path", None))
  try:
    return labels_lib.LabelSet(directory, split)
  except labels_lib.LabelError as e:
    raise ValueError(f"{str(e).splitlines()[0].removesuffix(' Make one with:')}\nMake it "
                     f"with:\n  python -m jaxssl.kmeans {dataset_hint} "
                     f"--features=mfcc --num_clusters=100 --name={os.path.basename(directory)} "
                     f"--splits={split}") from None


def _unit_sequences(label_set, ids):
  """The label rows of `ids` (by id, so any record order works)."""
  position = {str(u): i for i, u in enumerate(label_set.ids)}
  missing = [u for u in ids if u not in position]
  if missing:
    raise ValueError(f"Label set {label_set.directory!r} ({label_set.split}) has no labels for "
                     f"{len(missing)} of {len(ids)} utterances (first: {missing[0]!r}); was it "
                     "made for another build?")
  return [label_set[position[u]] for u in ids]


class LossScorer:
  """Per-utterance loss of a pretrained checkpoint (see the module docstring)."""

  def __init__(self, checkpoint, *, seed=0, pad_multiple=8000, metric="", label_set=None):
    if not checkpoint:
      raise ValueError("--scorer=loss needs --checkpoint: a jaxssl training workdir (e.g. from "
                       "`python -m jaxssl.main --config=configs/wav2vec2/demo.py "
                       "--workdir=workdir/w2v_demo`) or a `python -m jaxssl.convert` output.")
    if not os.path.exists(checkpoint):
      raise ValueError(f"--checkpoint={checkpoint!r} does not exist; train one with "
                       "`python -m jaxssl.main --config=configs/wav2vec2/demo.py "
                       f"--workdir={checkpoint}`.")
    if pad_multiple < 1:
      raise ValueError(f"--pad_multiple must be >= 1, got {pad_multiple}.")
    self.config, self.params = pretrained.load_checkpoint(checkpoint)
    self.objective = objectives.build(self.config)
    if getattr(self.objective, "has_constants", False):
      raise ValueError(f"--checkpoint={checkpoint!r}: objective "
                       f"{self.config.objective.name!r} needs constants (a teacher); the loss "
                       "scorer runs self-contained objectives (wav2vec2, hubert, melhubert).")
    self._check_params(checkpoint)
    self.needs_labels = bool(self.config.data.get("labels", ""))
    if self.needs_labels and label_set is None:
      raise ValueError(f"--checkpoint={checkpoint!r} trains on k-means labels "
                       f"(data.labels={self.config.data.labels!r}); pass --labels.")
    self.label_set = label_set
    self.label_rate = self.config.data.get("label_rate", 0)
    self.normalize = bool(self.config.data.get("normalize", False))
    self.pad_multiple = int(pad_multiple)
    self.metric = metric
    self.key = jax.random.PRNGKey(seed)

    def loss(params, batch, key):
      return self.objective.loss(params, batch, key, step=0, train=False)
    self._loss = jax.jit(loss)

  def _check_params(self, checkpoint):
    want = set(flax.traverse_util.flatten_dict(pretrained.abstract_params(self.config),
                                               sep="/"))
    have = set(flax.traverse_util.flatten_dict(self.params, sep="/"))
    missing = sorted(want - have)
    if missing:
      raise ValueError(f"--checkpoint={checkpoint!r} lacks {len(missing)} parameters of its "
                       f"objective's loss (e.g. {missing[:3]}): the loss scorer needs the "
                       "pretraining heads, which converted encoders do not have.")

  def __call__(self, audio, utt_id=None):
    x = np.asarray(audio)
    n = len(x)
    padded = max(self.pad_multiple, -(-n // self.pad_multiple) * self.pad_multiple)
    y = audio_lib.normalize(x) if self.normalize else audio_lib.to_float(x)
    batch = {"audio": np.zeros((1, padded), np.float32), "valid": np.zeros((1, padded), bool)}
    batch["audio"][0, :n] = y
    batch["valid"][0, :n] = True
    if self.needs_labels:
      rows = _unit_sequences(self.label_set, [utt_id])
      batch["labels"], batch["labels_valid"] = labels_lib.crop(rows, [0], padded,
                                                               self.label_rate)
    total, metrics = self._loss(self.params, batch, self.key)
    name = self.metric or next((m for m in LOSS_METRICS if m in metrics), "")
    if name and name not in metrics:
      raise ValueError(f"--loss_metric={name!r}: the objective reports {sorted(metrics)}.")
    self.metric = name
    return float(metrics[name] if name else total)


def score_split(scorer, source, *, seed=0, checkpoint="", labels="", target_split="",
                ngram_k=1.0, collapse_repeats=True, top_db=scorers.ACTIVITY_TOP_DB,
                clip_level=scorers.CLIP_LEVEL, pad_multiple=8000, loss_metric="",
                dataset_hint="--dataset=... --data_dir=...", split="train"):
  """(ids, values, header info) of every record of `source` under `scorer`."""
  meta = source.metadata()
  ids = _ids(source, meta)
  info = []
  if scorer == "length":
    values = [scorers.length_seconds(n) for n in meta["num_samples"]]
  elif scorer == "random":
    values = [scorers.random_score(i, seed) for i in ids]
    info.append(f"seed={seed}")
  elif scorer == "snr":
    values = signal_scores(source, scorers.snr_db)
  elif scorer == "activity":
    values = signal_scores(source, lambda a: scorers.activity_ratio(a, top_db=top_db))
    info.append(f"top_db={top_db}")
  elif scorer == "clipping":
    values = signal_scores(source, lambda a: scorers.clipping_ratio(a, level=clip_level))
    info.append(f"clip_level={clip_level}")
  elif scorer in ("perplexity", "contrastive"):
    label_set = _label_set(labels, source, split, dataset_hint)
    sequences = _unit_sequences(label_set, ids)
    k = label_set.num_clusters
    info += [f"labels={label_set.directory}", f"num_units={k}", f"ngram=bigram add-k k={ngram_k}",
             f"collapse_repeats={collapse_repeats}"]
    if scorer == "perplexity":
      values = scorers.unit_perplexities(sequences, k, k=ngram_k, dedup=collapse_repeats)
    else:
      if not target_split:
        raise ValueError("--scorer=contrastive needs --target_split (a split of --labels: the "
                         "target domain).")
      target = labels_lib.LabelSet(label_set.directory, target_split)
      target_seqs = [target[i] for i in range(len(target))]
      values = scorers.contrastive_unit_scores(sequences, target_seqs, k, k=ngram_k,
                                               dedup=collapse_repeats)
      info.append(f"target_split={target_split}")
  elif scorer == "loss":
    label_set = None
    if checkpoint and os.path.exists(checkpoint):
      name = labels or pretrained.config_json(checkpoint).data.get("labels", "")
      label_set = _label_set(name, source, split, dataset_hint) if name else None
    fn = LossScorer(checkpoint, seed=seed, pad_multiple=pad_multiple, metric=loss_metric,
                    label_set=label_set)
    values = [fn(r["audio"], str(r["id"])) for _, r in _records(source)]
    info += [f"checkpoint={os.path.abspath(checkpoint)}", f"metric={fn.metric or 'loss'}",
             f"seed={seed}", f"pad_multiple={pad_multiple}"]
  else:
    raise ValueError(f"Unknown --scorer={scorer!r}; choose from {sorted(scorers.SCORERS)}.")
  return ids, values, info


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  for name in ("dataset", "data_dir", "scorer", "output"):
    if not getattr(FLAGS, name):
      sys.exit(f"error: --{name} is required.")
  hint = f"--dataset={FLAGS.dataset} --data_dir={FLAGS.data_dir}"
  t0 = time.time()
  try:
    source = sources.open_source(FLAGS.dataset, data_dir=FLAGS.data_dir, split=FLAGS.split)
    ids, values, info = score_split(
        FLAGS.scorer, source, seed=FLAGS.seed, checkpoint=FLAGS.checkpoint, labels=FLAGS.labels,
        target_split=FLAGS.target_split, ngram_k=FLAGS.ngram_k,
        collapse_repeats=FLAGS.collapse_repeats, top_db=FLAGS.top_db,
        clip_level=FLAGS.clip_level, pad_multiple=FLAGS.pad_multiple,
        loss_metric=FLAGS.loss_metric, dataset_hint=hint, split=FLAGS.split)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  info = [f"dataset={FLAGS.dataset}",
          f"split={FLAGS.split}", f"records={len(ids)}"] + info
  scorers.write_score_file(FLAGS.output, ids, values, FLAGS.scorer, info=info)
  v = np.asarray(values, np.float64)
  logging.info("%s: %d scores in %.1f s", FLAGS.output, len(v), time.time() - t0)
  print(f"{FLAGS.output}: {FLAGS.scorer} of {len(v)} utterances of {FLAGS.dataset}/"
        f"{FLAGS.split}: min {np.nanmin(v):.4g}, median {np.nanmedian(v):.4g}, "
        f"max {np.nanmax(v):.4g}.")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
