"""Data efficiency, measured: what each selection, sampling, curriculum and batching switch buys.

  python experiments/2026-12-06-data-efficiency/run.py --workdir=workdir/data_eff  # seeds 0, 1
  python experiments/2026-12-06-data-efficiency/run.py --workdir=workdir/data_eff --seeds=2 \
      --parts=selection,temperature,curriculum --rows=dirty/all,clean/fixed,dirty/snr_75,\
  dirty/random_75,clean/curriculum,imbalanced/alpha1.0,imbalanced/alpha0.5,imbalanced/alpha0.3
  python experiments/2026-12-06-data-efficiency/run.py --workdir=workdir/data_eff --seeds=3,4 \
      --parts=selection --rows=dirty/snr_75,dirty/random_75   # the committed seeds 2-4

Every row trains MelHuBERT's demo recipe (recipe.py) for the same number of steps on one build
of the demo corpus and probes it on the clean corpus (phone PER at half and all of the run,
speaker and language ID at the end). Builds, each with its own fbank statistics and k-means
units (stage 1 of MelHuBERT, fitted on that build as a user would):
  clean       the demo corpus (data/tfds);
  dirty       the same utterances, 25% of them corrupted (`--dirty_fraction=0.25`: noise only,
              silence, clipping, 0 dB SNR, music-like tones, bad resampling; labelled);
  imbalanced  four languages at 10:1 hours (en 0.4, de 0.2, fr 0.04, pl 0.04).
Parts (rows):
  selection    dirty/all, clean/fixed, and dirty/<scorer>_<75|50> for every scorer of
               `python -m jaxssl.score` (the loss scorer reads dirty/all's checkpoint), plus the
               precision / recall of each scorer's removed utterances against the corrupted ones;
  temperature  imbalanced/alpha{1.0,0.5,0.3} (temperature sampling over languages);
  curriculum   clean/curriculum (crops growing from 0.5 s to 2 s over the first half),
               clean/length_50 (the longest half), against clean/fixed;
  batching     clean/dynamic (about 16 s of audio per batch from 4 bucketed lengths) against
               clean/fixed, with each one's padding share and audio per update from its loader.
Each stage is skipped when its output is complete, so re-running the command resumes; results
go to WORKDIR/results.json, and report.py writes results.md and curves.png from it.
"""
import json
import os
import signal
import sys

from absl import app
from absl import flags
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
# pylint: disable=g-import-not-at-top,wrong-import-position
import stages
from jaxssl import cli
from jaxssl import kmeans
from jaxssl.data import pipeline
from jaxssl.data import sampling
from jaxssl.data import sources

_WORKDIR = flags.DEFINE_string("workdir", "workdir/data_eff", "Where everything goes.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "The clean demo corpus's TFDS dir.")
_CORPUS = flags.DEFINE_string("corpus_dir", "data/demo_corpus", "Its source folder.")
_STEPS = flags.DEFINE_integer("steps", 1200, "Training steps of every row.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Training seeds.")
_ROWS = flags.DEFINE_list("rows", [], "Rows to run (default: every row of --parts).")
_PARTS = flags.DEFINE_list("parts", ["selection", "temperature", "curriculum", "batching"],
                           "Parts to run.")

RECIPE = os.path.join(HERE, "recipe.py")
SCORERS = ("snr", "activity", "clipping", "perplexity", "loss", "length", "random")
FRACTIONS = (0.75, 0.5)
VARIANTS = {"dirty": ["--dirty_fraction=0.25"],
            "imbalanced": ["--language_hours=en:0.4,de:0.2,fr:0.04,pl:0.04"]}
CURRICULUM_START = 8_000  # 0.5 s: crops of 0.5, 1, 1.5 and 2 s (the ramp's 4 lengths).


def rows_of(part):
  """{row: (build, recipe args, (scorer, keep fraction) or None)} of a part."""
  if part == "selection":
    rows = {"dirty/all": ("dirty", {}, None), "clean/fixed": ("clean", {}, None)}
    for scorer in SCORERS:
      for f in FRACTIONS:
        rows[f"dirty/{scorer}_{round(100 * f)}"] = ("dirty", {}, (scorer, f))
    return rows
  if part == "temperature":
    return {f"imbalanced/alpha{a}": ("imbalanced", {"alpha": a}, None) for a in (1.0, 0.5, 0.3)}
  if part == "curriculum":
    return {"clean/fixed": ("clean", {}, None),
            "clean/curriculum": ("clean", {"curriculum": CURRICULUM_START}, None),
            "clean/length_50": ("clean", {}, ("length", 0.5))}
  if part == "batching":
    return {"clean/fixed": ("clean", {}, None),
            "clean/dynamic": ("clean", {"batching": "dynamic"}, None)}
  raise app.UsageError(f"--parts: unknown part {part!r}.")


def log(msg):
  print(f"[data_eff] {msg}", flush=True)


def sh(*cmd, capture=False):
  return stages.sh(*cmd, capture=capture, prefix="data_eff")


def data_dir(build):
  return _DATA_DIR.value if build == "clean" else os.path.join(_WORKDIR.value, "tfds", build)


def ensure_build(build):
  """The build's TFDS dataset, fbank statistics and k-means units (fit on half of train);
  returns the label set's directory."""
  tfds_dir = data_dir(build)
  if not os.path.isdir(os.path.join(tfds_dir, "demo_corpus")):
    corpus = _CORPUS.value if build == "clean" else os.path.join(_WORKDIR.value, "corpora", build)
    if not os.path.exists(os.path.join(corpus, "meta.json")):
      sh(sys.executable, "-m", "jaxssl.data.demo_corpus", f"--out={corpus}",
         *VARIANTS.get(build, []))
    sh(sys.executable, "-m", "jaxssl.data.build", "--dataset=demo_corpus",
       f"--source={corpus}", f"--data_dir={tfds_dir}")
  train = sources.open_source("demo_corpus", data_dir=tfds_dir, split="train")
  if not os.path.exists(os.path.join(train.path, "stats", "fbank40.json")):
    sh(sys.executable, "-m", "jaxssl.feature_stats", "--dataset=demo_corpus",
       f"--data_dir={tfds_dir}", "--split=train", "--features=fbank", "--num_mels=40")
  meta = kmeans.run(dataset="demo_corpus", data_dir=tfds_dir, features="fbank", stats="fbank40",
                    num_clusters=100, fraction=0.5, splits=("train", "dev"),
                    keep_existing=True, log=log)
  return meta["directory"]


def score_file(build, scorer):
  """WORKDIR/scores/<build>/<scorer>.tsv from `python -m jaxssl.score`, made unless present."""
  path = os.path.join(_WORKDIR.value, "scores", build, f"{scorer}.tsv")
  if not os.path.exists(path):
    extra = []
    if scorer == "perplexity":
      extra = [f"--labels={ensure_build(build)}"]
    elif scorer == "loss":  # The model trained on everything scores what it was trained on.
      extra = [f"--checkpoint={train_row(f'{build}/all', 0)[1]}",
               f"--labels={ensure_build(build)}"]
    sh(sys.executable, "-m", "jaxssl.score", "--dataset=demo_corpus",
       f"--data_dir={data_dir(build)}", "--split=train", f"--scorer={scorer}",
       f"--output={path}", *extra)
  return path


def recipe_spec(args, seed):
  args = dict(args, steps=_STEPS.value, seed=seed, probe_data_dir=_DATA_DIR.value)
  return f"{RECIPE}:" + ",".join(f"{k}={v}" for k, v in args.items())


def train_row(row, seed):
  """Trains one row (resumable, skipped when done); returns (its eval curve, its workdir)."""
  build, args, selection = ALL_ROWS[row]
  workdir = os.path.join(_WORKDIR.value, "runs", f"{row.replace('/', '_')}_seed{seed}")
  extra = [f"--config.data.data_dir={data_dir(build)}",
           f"--config.data.labels={ensure_build(build)}"]
  if selection is not None:
    scorer, fraction = selection
    extra += [f"--config.data.selection.score_file={score_file(build, scorer)}",
              f"--config.data.selection.keep_fraction={fraction}"]
  stages.train_once(workdir, recipe_spec(args, seed), _STEPS.value, *extra, prefix="data_eff")
  return stages.read_evals(workdir), workdir


def corruption_recall(build="dirty"):
  """Per scorer and kept fraction: precision and recall of the removed utterances against the
  corrupted ones (the manifest's labels), and the kept share of each corruption kind."""
  with open(os.path.join(_WORKDIR.value, "corpora", build, "train.jsonl")) as f:
    kinds = {r["id"]: r["corruption"] for r in map(json.loads, f)}
  ids = list(sources.open_source("demo_corpus", data_dir=data_dir(build),
                                 split="train").metadata()["id"])
  bad = np.array([bool(kinds[i]) for i in ids])
  out = {}
  for scorer in SCORERS:
    for f in FRACTIONS:
      kept = np.zeros(len(ids), bool)
      kept[sampling.select_by_score(ids, score_file(build, scorer), f)] = True
      removed = ~kept
      hit = int((removed & bad).sum())
      out[f"{scorer}_{round(100 * f)}"] = dict(
          precision=hit / max(int(removed.sum()), 1), recall=hit / max(int(bad.sum()), 1),
          kept_by_kind={k: float(np.mean([kept[j] for j, i in enumerate(ids) if kinds[i] == k]))
                        for k in sorted(set(kinds.values()) - {""})})
  return out


def loader_stats(row, num_batches=300):
  """Padding share and audio per update of a row's training batches (its own loader)."""
  build, args, _ = ALL_ROWS[row]
  config = cli.load_config_file(recipe_spec(args, 0))
  with config.unlocked():
    config.data.data_dir = data_dir(build)
    config.data.labels = ""  # The batch shapes do not depend on the units.
  loader = pipeline.make_train_loader(config.data, seed=0, process_index=0, process_count=1)
  valid, total, shapes = 0, 0, set()
  for _ in range(num_batches):
    batch = next(loader)
    valid += int(np.sum(batch["valid"]))
    total += batch["valid"].size
    shapes.add(batch["valid"].shape)
  return dict(padding=1 - valid / total, audio_sec_per_update=valid / 16_000 / num_batches,
              shapes=sorted(shapes))


ALL_ROWS = {}


def main(argv):
  del argv
  signal.signal(signal.SIGTERM, lambda s, f: sys.exit(f"[data_eff] stopped by signal {s}"))
  os.makedirs(_WORKDIR.value, exist_ok=True)
  for part in _PARTS.value:
    ALL_ROWS.update(rows_of(part))
  rows = [r for r in ALL_ROWS if not _ROWS.value or r in _ROWS.value]
  unknown = sorted(set(_ROWS.value) - set(ALL_ROWS))
  if unknown:
    raise app.UsageError(f"--rows: unknown {unknown}; rows of --parts: {sorted(ALL_ROWS)}.")
  path = os.path.join(_WORKDIR.value, "results.json")
  results = json.load(open(path)) if os.path.exists(path) else {}
  results.setdefault("runs", {})
  results["steps"] = _STEPS.value
  results.setdefault("rows", {}).update({r: list(ALL_ROWS[r]) for r in ALL_ROWS})

  def save():
    with open(path, "w") as f:
      json.dump(results, f, indent=2)

  # dirty/all first: the loss scorer reads its checkpoint.
  for row in sorted(rows, key=lambda r: r != "dirty/all"):
    for seed in map(int, _SEEDS.value):
      results["runs"][f"{row}/seed{seed}"] = train_row(row, seed)[0]
      save()
  if "selection" in _PARTS.value:
    results["corruption_recall"] = corruption_recall()
  if "batching" in _PARTS.value:
    results["loaders"] = {r: loader_stats(r) for r in ("clean/fixed", "clean/dynamic")}
  save()
  log(f"wrote {path}; report: python {os.path.join(HERE, 'report.py')} --workdir="
      f"{_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)
