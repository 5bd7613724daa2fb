"""Inference real-time factor of every pretraining config's encoder, with HF peers where they exist.

Real-time factor (RTF) = seconds to encode / seconds of audio, for one utterance of --seconds
(default 10 s) through the jitted encoder forward (`objective.represent`: all hidden states, no
dropout), batch 1, on the current device. Configs are discovered (harness.discover_configs), so
BASE, LARGE, the demo-size models, MelHuBERT and the mixer variants all appear. Configs that HF
transformers can express (a CNN front end and the attention mixer: wav2vec 2.0 / HuBERT
encoders) also run `Wav2Vec2Model` in PyTorch under `torch.inference_mode()`, interleaved with
jaxssl in the same process, and report the time ratio (jaxssl / PyTorch; below 1 = faster).

  python -m experiments.benchmarks.inference_rtf                 # every config, 1 x 10 s
  python -m experiments.benchmarks.inference_rtf --filter=wav2vec2/base --reps=9
"""
import os

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.benchmarks import harness
from experiments.benchmarks import peers

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_list("filter", [], "Keep configs whose name contains one of these.")
  flags.DEFINE_list("exclude", [], "Drop configs whose name contains one of these.")
  flags.DEFINE_float("seconds", 10.0, "Seconds of the utterance.")
  flags.DEFINE_integer("reps", 5, "Interleaved rounds.")
  flags.DEFINE_bool("peer", True, "Run the HF PyTorch peer where one exists.")
  flags.DEFINE_bool("tiny", False, "Tiny variants (smoke runs and tests).")
  flags.DEFINE_string("out", "experiments/benchmarks/results/inference_rtf",
                      "Output stem; '' prints.")


COLUMNS = ["config", "params", "gmacs", "compile_sec", "jaxssl_wall", "rtf", "rtf_cpu",
           "pytorch_wall", "pytorch_rtf", "ratio_wall", "ratio_cpu"]


def has_peer(config):
  """True if HF's Wav2Vec2Model computes the same encoder (CNN front end, attention mixer)."""
  m = config.model
  return (m.get("frontend", {}).get("name", "") == "cnn"
          and m.get("mixer", {}).get("name", "mha") == "mha")


def measure(name, config, *, seconds, reps, peer=True, tiny=False):
  """One row: jaxssl (and the peer's) encoder time on 1 x `seconds`."""
  c = harness.resized(config, batch_size=1, seconds=seconds)
  if tiny:
    with c.unlocked():
      c.model.variant = "tiny"
  ours = harness.JaxForward(c)
  fns = {"jaxssl": ours.run}
  if peer and has_peer(c):
    fns["pytorch"] = peers.TorchStep(c, kind="infer").run
  times = harness.interleaved(fns, reps)
  row = dict(config=name, params=ours.num_params, gmacs=ours.flops / 2e9,
             compile_sec=ours.compile_sec, times=times)
  for impl, t in times.items():
    row[f"{impl}_wall"] = harness.median(t["wall"])
    row[f"{impl}_cpu"] = harness.median(t["cpu"])
  row["rtf"] = row["jaxssl_wall"] / seconds
  # CPU-time RTF per core: what one core of an idle host would take, per audio second.
  row["rtf_cpu"] = row["jaxssl_cpu"] / (os.cpu_count() or 1) / seconds
  if "pytorch" in times:
    row["pytorch_rtf"] = row["pytorch_wall"] / seconds
    row["ratio_wall"] = row["jaxssl_wall"] / row["pytorch_wall"]
    row["ratio_cpu"] = row["jaxssl_cpu"] / row["pytorch_cpu"]
  return row


def run(configs, **kwargs):
  rows = []
  for name, _, _, config in configs:
    if isinstance(config, Exception):
      rows.append(dict(config=name, error=f"{type(config).__name__}: {config}"[:200]))
      continue
    try:
      rows.append(measure(name, config, **kwargs))
    except Exception as e:  # pylint: disable=broad-except
      rows.append(dict(config=name, error=f"{type(e).__name__}: {e}"[:300]))
    print(rows[-1] if "error" in rows[-1] else harness.markdown_table(COLUMNS, rows[-1:]),
          flush=True)
    jax.clear_caches()
  return rows


def markdown(rows, meta, seconds, reps):
  text = (f"# Inference real-time factor, 1 x {seconds:g} s\n\n{meta['date']}, {meta['cpu']} "
          f"({meta['cpu_cores']} cores, load average at start {meta['load_average'][0]:.1f}), "
          f"device {meta['device_kind']}, jax {meta['jax']}, torch {meta.get('torch', '-')}. "
          f"Median of {reps} interleaved rounds; rtf = wall / audio seconds (< 1: faster than "
          "real time); rtf_cpu = CPU seconds per core per audio second; ratio = jaxssl / HF "
          "PyTorch Wav2Vec2Model (where the encoder is one HF has).\n\n"
          + harness.markdown_table(COLUMNS, [r for r in rows if "error" not in r]))
  errors = [f"- {r['config']}: {r['error']}" for r in rows if "error" in r]
  if errors:
    text += "\n\nConfigs that did not run:\n" + "\n".join(errors)
  return text


def plot(rows, path):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in rows if "error" not in r]
  fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
  y = np.arange(len(rows))
  ax.barh(y - 0.2, [r["rtf"] for r in rows], 0.4, label="jaxssl")
  ax.barh(y + 0.2, [r.get("pytorch_rtf", np.nan) for r in rows], 0.4, label="HF PyTorch")
  ax.set_yticks(y, [r["config"] for r in rows], fontsize=7)
  ax.set_xscale("log")
  ax.set_xlabel("real-time factor (log; < 1 is faster than real time)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  configs = [c for c in harness.discover_configs()
             if (not FLAGS.filter or any(f in c[0] for f in FLAGS.filter))
             and not any(f in c[0] for f in FLAGS.exclude)]
  meta = harness.machine()
  rows = run(configs, seconds=FLAGS.seconds, reps=FLAGS.reps, peer=FLAGS.peer, tiny=FLAGS.tiny)
  md = markdown(rows, meta, FLAGS.seconds, FLAGS.reps)
  print(md)
  harness.write_results(FLAGS.out, dict(machine=meta, rows=rows), md, lambda p: plot(rows, p))


if __name__ == "__main__":
  define_flags()
  app.run(main)
