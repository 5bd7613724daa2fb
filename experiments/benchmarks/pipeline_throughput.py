"""Input-pipeline throughput: audio seconds produced per second, per CPU core.

Runs `pipeline.make_train_loader` for N batches and reports real-audio seconds
per wall-clock second and per second of process CPU time (= "x real time per
core"). The target is >= 500x real time per core, so one core feeds roughly a
BASE model step of 8 x 15.6 s crops every 0.25 s.

Sources measured, each with the same loader configurations:
  * "memory": `SyntheticSource` records generated once into memory beforehand
    (its tone generator costs more than the pipeline itself), i.e. the cost
    of the pipeline alone;
  * "array_record": the same synthetic utterances written as WAV files, built
    into a temporary TFDS array_record dataset with the `local_audio` builder
    and read back through `sources.open_source` (record decoding included;
    the files sit in the page cache, as a hot training corpus does);
  * with --tfds_dir: a real built dataset.

  python -m experiments.benchmarks.pipeline_throughput --num_batches=200
  python -m experiments.benchmarks.pipeline_throughput --tfds_dir=data/tfds \
      --name=demo_corpus --out=""   # real data; --out="" skips writing results
"""
import json
import os
import platform
import subprocess
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import soundfile as sf

from configs import common
from jaxssl import constants
from jaxssl.data import build
from jaxssl.data import pipeline
from jaxssl.data import sources

# (build.py defines --data_dir and --num_workers for itself, hence the names.)
flags.DEFINE_string("tfds_dir", "", "TFDS data_dir of a built dataset to measure too.")
flags.DEFINE_string("name", "demo_corpus", "Dataset name (with --tfds_dir).")
flags.DEFINE_string("split", "train", "Split (with --tfds_dir).")
flags.DEFINE_integer("num_records", 128, "Synthetic records (2-30 s each).")
flags.DEFINE_integer("num_batches", 200, "Timed batches per configuration.")
flags.DEFINE_integer("batch_size", 8, "Global batch size (utterances).")
flags.DEFINE_integer("crop_samples", 250_000, "Crop length (wav2vec 2.0 BASE: 250k = 15.6 s).")
flags.DEFINE_integer("loader_workers", 0, "grain worker processes (CPU time of workers is not "
                     "counted in process time, so keep 0 for the per-core figure).")
flags.DEFINE_string("out", "experiments/benchmarks/results/pipeline_throughput",
                    "Output path stem for .json and .md; empty: print only.")
FLAGS = flags.FLAGS

# name -> overrides of the `data` section; all share crop and batch size.
CONFIGS = {
    "fixed crop": {},
    "fixed crop + normalize": dict(normalize=True),
    "temperature a=0.5 + normalize": dict(normalize=True,
                                          sampling=dict(name="temperature", alpha=0.5)),
    "dynamic 125 s + normalize": dict(normalize=True, dynamic_batch_sec=125.0),
}


class MemorySource:
  """Any Source with all records read once into memory (benchmarks only)."""

  def __init__(self, source):
    self._records = [source[i] for i in range(len(source))]
    self._metadata = source.metadata()

  def __len__(self):
    return len(self._records)

  def __getitem__(self, i):
    return self._records[i]

  def metadata(self):
    return self._metadata


def measure(data_cfg, source, num_batches):
  """Times `num_batches` batches after 3 warm-up ones; returns a result dict."""
  loader = pipeline.make_train_loader(data_cfg, seed=0, source=source)
  for _ in range(3):
    next(loader)
  real = padded = 0
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    batch = next(loader)
    real += int(batch["valid"].sum())
    padded += batch["valid"].size
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  loader.close()
  audio_sec = real / constants.SAMPLE_RATE
  return {"batches": num_batches, "audio_sec": round(audio_sec, 1),
          "padded_fraction": round(1 - real / padded, 3), "wall_sec": round(wall, 3),
          "cpu_sec": round(cpu, 3), "x_realtime_wall": round(audio_sec / wall, 1),
          "x_realtime_per_core": round(audio_sec / cpu, 1)}


def machine():
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                 if line.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    model = platform.processor() or "unknown"
  # The machine is shared: load above the core count slows wall-clock figures
  # (not CPU-time ones).
  return {"cpu_model": model, "cpu_cores": os.cpu_count(), "python": platform.python_version(),
          "numpy": np.__version__, "load_avg_1min": round(os.getloadavg()[0], 2)}


def to_markdown(report):
  m, s = report["machine"], report["setup"]
  lines = [f"# Input pipeline throughput ({report['date']})", "",
           f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores; Python {m['python']}, "
           f"numpy {m['numpy']}; 1-min load average {m['load_avg_1min']} at start (wall-clock "
           "columns suffer from other jobs on a shared machine, CPU-time ones do not). "
           f"Global batch {s['batch_size']} x crop {s['crop_samples']} "
           f"samples, {s['num_batches']} timed batches per row, num_workers={s['num_workers']}. "
           "Audio counts real (valid) samples only. Target: >= 500x real time per core.", ""]
  for source_name, rows in report["results"].items():
    lines += [f"**{source_name}**", "",
              "| config | audio s | padded | wall s | CPU s | x real time (wall) "
              "| x real time per core |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
      lines.append(f"| {name} | {r['audio_sec']} | {r['padded_fraction']:.1%} | "
                   f"{r['wall_sec']} | {r['cpu_sec']} | {r['x_realtime_wall']} | "
                   f"{r['x_realtime_per_core']} |")
    lines.append("")
  return "\n".join(lines)


def synthetic_array_record(synthetic, tmp_dir):
  """Writes `synthetic` as WAVs and builds them into array_record; returns a Source."""
  wav_dir = os.path.join(tmp_dir, "wavs", "train")
  os.makedirs(wav_dir)
  for i in range(len(synthetic)):
    record = synthetic[i]
    sf.write(os.path.join(wav_dir, record["id"] + ".wav"), record["audio"],
             constants.SAMPLE_RATE, subtype="PCM_16")
  data_dir = os.path.join(tmp_dir, "tfds")
  build.build("local_audio", source=os.path.dirname(wav_dir), data_dir=data_dir,
              config="bench", num_workers=2, show_progress=False)
  return sources.open_source("local_audio/bench", data_dir=data_dir, split="train")


def main(argv):
  del argv
  # LibriSpeech-like lengths: 2-30 s, so some crops are padded.
  synthetic = sources.SyntheticSource(FLAGS.num_records, seed=0, min_samples=32_000,
                                      max_samples=480_000)
  desc = f"SyntheticSource({FLAGS.num_records} records, 2-30 s)"
  with tempfile.TemporaryDirectory() as tmp_dir:
    to_measure = {f"memory: {desc} read into RAM": MemorySource(synthetic),
                  f"array_record: {desc} as WAV -> local_audio build -> open_source":
                  synthetic_array_record(synthetic, tmp_dir)}
    if FLAGS.tfds_dir:
      to_measure[f"tfds_dir: {FLAGS.name}/{FLAGS.split} from {FLAGS.tfds_dir}"] = (
          sources.open_source(FLAGS.name, data_dir=FLAGS.tfds_dir, split=FLAGS.split))
    results = {}
    for source_name, source in to_measure.items():
      results[source_name] = {}
      for name, overrides in CONFIGS.items():
        cfg = common.data(FLAGS.name, crop_samples=FLAGS.crop_samples,
                          batch_size=FLAGS.batch_size)
        cfg.num_workers = FLAGS.loader_workers
        cfg.update(overrides)
        results[source_name][name] = r = measure(cfg, source, FLAGS.num_batches)
        print(f"{source_name[:12]:12s} {name:32s} {r}")
  report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "setup": {"batch_size": FLAGS.batch_size, "crop_samples": FLAGS.crop_samples,
                      "num_batches": FLAGS.num_batches, "num_workers": FLAGS.loader_workers},
            "results": results}
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
    with open(FLAGS.out + ".json", "w") as f:
      json.dump(report, f, indent=2)
    with open(FLAGS.out + ".md", "w") as f:
      f.write(to_markdown(report))
  print(to_markdown(report))


if __name__ == "__main__":
  app.run(main)
