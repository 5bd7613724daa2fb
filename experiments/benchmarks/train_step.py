"""Train-step speed of every pretraining config on the current device.

For each discovered config (harness.discover_configs: wav2vec 2.0, HuBERT, MelHuBERT, the mixer
sweeps, ...) at one fixed batch (default 2 x 4 s, the CPU comparison batch; gpu_suite.py uses
realistic GPU batches), on one device, in the config's compute dtype unless --dtype is given:
  - compile time of the jitted, donating train step (the trainer's, with AdamW);
  - median step time over --reps (wall and process CPU seconds), after one warm-up step;
  - throughput in audio-seconds per second (real audio in the batch / median wall time);
  - MFU = XLA cost-analysis FLOPs per step / median wall / measured peak of the device
    (jaxssl.training.accounting); mfu_cpu_time divides by CPU time / cores instead;
  - peak memory: the allocator's peak on GPU/TPU, XLA's estimate on CPU.
Configs run one after another (not interleaved: no two are the same model), so on a shared
machine the CPU-time columns are the comparable ones.

  python -m experiments.benchmarks.train_step                       # every config, 2 x 4 s
  python -m experiments.benchmarks.train_step --filter=wav2vec2/base,hubert/base --reps=3
  python -m experiments.benchmarks.train_step --batch_size=8 --seconds=15.6 --dtype=bfloat16
"""

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.benchmarks import harness

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_list("filter", [], "Keep configs whose name contains one of these.")
  flags.DEFINE_list("exclude", [], "Drop configs whose name contains one of these.")
  flags.DEFINE_integer("batch_size", 2, "Utterances per batch.")
  flags.DEFINE_float("seconds", 4.0, "Seconds per utterance.")
  flags.DEFINE_string("dtype", "", "Compute dtype override (e.g. bfloat16 on GPU); '' = config's.")
  flags.DEFINE_integer("reps", 3, "Timed steps per config.")
  flags.DEFINE_bool("tiny", False, "Tiny variants (smoke runs and tests).")
  flags.DEFINE_string("out", "experiments/benchmarks/results/train_step", "Output stem; '' prints.")


COLUMNS = ["config", "dtype", "batch", "params", "gflops_per_step", "compile_sec", "step_wall",
           "step_cpu", "audio_sec_per_sec", "mfu", "mfu_cpu_time", "memory_gb"]


def run(configs, **kwargs):
  """Rows for [(name, path, arg, config or Exception)]; a config that fails is reported."""
  rows = []
  for name, _, _, config in configs:
    if isinstance(config, Exception):
      rows.append(dict(config=name, error=f"{type(config).__name__}: {config}"[:200]))
      continue
    try:
      rows.append(harness.measure_train_step(name, config, **kwargs))
    except Exception as e:  # pylint: disable=broad-except
      rows.append(dict(config=name, error=f"{type(e).__name__}: {e}"[:300]))
    print(harness.markdown_table(COLUMNS, rows[-1:]) if "error" not in rows[-1]
          else rows[-1], flush=True)
    jax.clear_caches()
  return rows


def markdown(rows, meta, reps):
  text = (f"# Train-step speed per config\n\n{meta['date']}, {meta['cpu']} ({meta['cpu_cores']} "
          f"cores, load average at start {meta['load_average'][0]:.1f}), device "
          f"{meta['device_kind']} ({meta['backend']}), jax {meta['jax']}. Median of {reps} steps "
          "after a warm-up step, seconds; audio_sec_per_sec = real audio / wall; MFU = XLA FLOPs / "
          "wall / measured peak; mfu_cpu_time uses CPU time / cores (the cycles the step got on a "
          "shared machine); memory: XLA's estimate on CPU, the allocator's peak on GPU.\n\n"
          + harness.markdown_table(COLUMNS, [r for r in rows if "error" not in r]))
  errors = [f"- {r['config']}: {r['error']}" for r in rows if "error" in r]
  if errors:
    text += "\n\nConfigs that did not run:\n" + "\n".join(errors)
  return text


def plot(rows, path):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in rows if "error" not in r]
  fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.5), sharey=True)
  y = np.arange(len(rows))
  axes[0].barh(y, [r["audio_sec_per_sec"] for r in rows])
  axes[0].set_xlabel("training throughput (audio s / s)")
  axes[1].barh(y, [r["mfu_cpu_time"] for r in rows], label="by CPU time")
  axes[1].barh(y, [r["mfu"] for r in rows], alpha=0.6, label="by wall time")
  axes[1].set_xlabel("MFU")
  axes[1].legend()
  axes[0].set_yticks(y, [r["config"] for r in rows], fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  configs = [c for c in harness.discover_configs()
             if (not FLAGS.filter or any(f in c[0] for f in FLAGS.filter))
             and not any(f in c[0] for f in FLAGS.exclude)]
  meta = harness.machine()
  rows = run(configs, batch_size=FLAGS.batch_size, seconds=FLAGS.seconds, reps=FLAGS.reps,
             dtype=FLAGS.dtype, tiny=FLAGS.tiny)
  md = markdown(rows, meta, FLAGS.reps)
  print(md)
  harness.write_results(FLAGS.out, dict(machine=meta, rows=rows), md, lambda p: plot(rows, p))


if __name__ == "__main__":
  define_flags()
  app.run(main)
