"""Where a train step's time goes: a jax.profiler trace summed per model component.

Traces --steps calls of a config's compiled train step (the trainer's: harness.JaxTrainStep) with
`jax.profiler.trace(create_perfetto_trace=True)`, sums the duration of every executed XLA
instruction, and maps instructions back to the model through the `op_name` metadata of the
compiled HLO (`compiled.as_text()`): "feature_extractor/conv_1", "pos_conv", "self_attn", "ffn",
..., split into forward and backward ("transpose(" in the op name). This is how the costs in
NOTES.md were found (e.g. the positional conv's kernel gradient, 65% of the BASE step).
Durations are per-instruction wall times, so on a shared machine contention inflates them all
alike: use them to rank, and CPU time (train_step.py) for totals.

  python -m experiments.benchmarks.profile_step --config=configs/wav2vec2/base.py
  python -m experiments.benchmarks.profile_step --config=configs/hubert/base.py \
      --arg=iteration=2 --out=""
"""
import collections
import glob
import gzip
import json
import os
import re
import tempfile

from absl import app
from absl import flags
import jax

from experiments.benchmarks import harness

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_string("config", "configs/wav2vec2/base.py", "Config file.")
  flags.DEFINE_string("arg", "", "Config argument (as after ':' in --config=file.py:arg).")
  flags.DEFINE_integer("batch_size", 2, "Utterances per batch.")
  flags.DEFINE_float("seconds", 4.0, "Seconds per utterance.")
  flags.DEFINE_integer("steps", 2, "Traced steps.")
  flags.DEFINE_integer("top", 15, "Most expensive single instructions listed.")
  flags.DEFINE_string("out", "experiments/benchmarks/results/profile_step",
                      "Output stem; '' prints.")


# Model components, most specific first; the first that occurs in an op_name names it.
COMPONENTS = ("feature_extractor/conv_0", "feature_extractor/norm_0", "feature_extractor/conv_",
              "feature_extractor", "post_extract_proj", "pos_conv", "self_attn", "ffn",
              "layer_norm", "encoder", "quantizer", "project_q", "final_proj")


def op_names(hlo_text):
  """HLO instruction name -> op_name metadata (the jax source op it came from)."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
    if m:
      out[m.group(1)] = m.group(2)
  return out


def component(op_name):
  """A coarse label of an op_name: component + fwd/bwd, or "other: <primitive>"."""
  direction = " bwd" if "transpose(" in op_name else " fwd"
  for key in COMPONENTS:
    if key in op_name:
      if key == "feature_extractor/conv_":
        key = re.search(r"feature_extractor/conv_\d", op_name).group(0)
      return key + direction
  return "other: " + op_name.rsplit("/", 1)[-1][:40]


def instruction_times(trace_dir):
  """Summed microseconds per executed instruction name, from the perfetto trace."""
  path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*",
                                       "perfetto_trace.json.gz")))[-1]
  with gzip.open(path) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  skip = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction")
  out = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(skip):
      out[e["name"]] += e.get("dur", 0)
  return out


def profile(config, *, steps):
  """(component -> ms per step, [(instruction, op_name, ms per step)] most expensive first)."""
  step = harness.JaxTrainStep(config)
  names = op_names(step.compiled.as_text())
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        step.run()
    times = instruction_times(tmp)
  per_component = collections.Counter()
  for name, us in times.items():
    per_component[component(names.get(name, name))] += us / 1e3 / steps
  top = [(name, names.get(name, "?"), us / 1e3 / steps) for name, us in times.most_common()]
  return dict(per_component.most_common()), top


def main(argv):
  del argv
  config = harness.resized(harness.load_config(FLAGS.config, FLAGS.arg or None),
                           batch_size=FLAGS.batch_size, seconds=FLAGS.seconds)
  per_component, top = profile(config, steps=FLAGS.steps)
  total = sum(per_component.values())
  rows = [dict(component=k, ms_per_step=v, share=v / total) for k, v in per_component.items()]
  top_rows = [dict(instruction=n, op=o[-70:], ms_per_step=ms) for n, o, ms in top[:FLAGS.top]]
  meta = harness.machine()
  md = (f"# Train-step profile: {FLAGS.config}{':' + FLAGS.arg if FLAGS.arg else ''}, "
        f"{FLAGS.batch_size} x {FLAGS.seconds:g} s\n\n{meta['date']}, {meta['cpu']}, load "
        f"average {meta['load_average'][0]:.1f}; summed instruction times (ms per step, "
        "contention included).\n\n" + harness.markdown_table(["component", "ms_per_step", "share"],
                                                             rows)
        + "\n\nMost expensive instructions:\n\n"
        + harness.markdown_table(["instruction", "op", "ms_per_step"], top_rows))
  print(md)
  name = FLAGS.config.removeprefix("configs/").removesuffix(".py").replace("/", "_")
  harness.write_results(FLAGS.out and f"{FLAGS.out}_{name}",
                        dict(machine=meta, components=rows, top=top_rows), md)


if __name__ == "__main__":
  define_flags()
  app.run(main)
