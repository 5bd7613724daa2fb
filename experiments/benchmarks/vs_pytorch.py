"""jaxssl against HF transformers' PyTorch models: pretraining steps and inference, same run.

Peers (PyTorch, `transformers` as an optional benchmark dependency: `pip install torch==2.13.0
transformers==5.24.0`), built from the same jaxssl config (dimensions, masking, dropouts,
negatives; `peer_config`) so parameter counts match:
  - wav2vec 2.0: `Wav2Vec2ForPreTraining` with its own loss (contrastive + diversity): host-side
    `_compute_mask_indices` and `_sample_negative_indices`, forward, backward, AdamW step;
    jaxssl: configs/wav2vec2/base.py's compiled train step (masking, negatives, loss, AdamW).
  - HuBERT: `HubertModel` + a linear head + cross-entropy on masked frames (HF has no HuBERT
    pretraining head), AdamW; jaxssl: configs/hubert/base.py:iteration=2's train step.
  - inference: `Wav2Vec2Model` in eval mode under `torch.inference_mode()` against jaxssl's
    jitted encoder forward (`objective.represent`), 1 x 10 s by default.
Same batch (2 x 4 s of audio for training by default), float32, `torch.set_num_threads(cores)`,
all in one process, the implementations interleaved for --reps rounds; medians and ratios
(jaxssl / PyTorch: below 1 means jaxssl is faster) of wall and CPU time. MFU is the step's XLA
FLOPs over the median wall time and the measured peak (jaxssl.training.accounting).

  python -m experiments.benchmarks.vs_pytorch                      # the committed figures
  python -m experiments.benchmarks.vs_pytorch --models=w2v2 --reps=3 --out=""
"""
import os

from absl import app
from absl import flags
import numpy as np

from experiments.benchmarks import harness
from experiments.benchmarks import peers
from jaxssl import constants
from jaxssl.training import accounting

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_list("models", ["w2v2", "hubert", "infer"], "w2v2 / hubert steps, infer forward.")
  flags.DEFINE_integer("reps", 7, "Interleaved rounds.")
  flags.DEFINE_integer("batch_size", 2, "Utterances per training batch.")
  flags.DEFINE_float("seconds", 4.0, "Seconds per training utterance.")
  flags.DEFINE_float("infer_seconds", 10.0, "Seconds of the single inference utterance.")
  flags.DEFINE_bool("tiny", False, "Tiny variants of the same configs (smoke runs, tests).")
  flags.DEFINE_string("out", "experiments/benchmarks/results/vs_pytorch", "Output stem; '' prints.")


CONFIGS = {"w2v2": "configs/wav2vec2/base.py", "hubert": "configs/hubert/base.py",
           "infer": "configs/wav2vec2/base.py"}
ARGS = {"hubert": "iteration=2"}


def jax_config(model, *, batch_size, seconds, tiny=False):
  """The jaxssl config of `model` ("w2v2", "hubert", "infer") at the benchmark's batch."""
  c = harness.load_config(CONFIGS[model], ARGS.get(model))
  c = harness.resized(c, batch_size=batch_size, seconds=seconds)
  if tiny:
    with c.unlocked():
      c.model.variant = "tiny"
      if "num_negatives" in c.objective:
        c.objective.num_negatives = 10
  return c


def measure(model, *, reps, batch_size, seconds, infer_seconds, tiny=False, peer=True):
  """Interleaved jaxssl / PyTorch timings of one comparison. Returns a result row (dict)."""
  infer = model == "infer"
  c = jax_config(model, batch_size=1 if infer else batch_size,
                 seconds=infer_seconds if infer else seconds, tiny=tiny)
  ours = harness.JaxForward(c) if infer else harness.JaxTrainStep(c)
  fns = {"jaxssl": ours.run}
  theirs = None
  if peer:
    theirs = peers.TorchStep(c, kind=model)
    fns["pytorch"] = theirs.run
  times = harness.interleaved(fns, reps)
  peak = accounting.peak_flops()
  row = dict(model=model, config=CONFIGS[model] + (f":{ARGS[model]}" if model in ARGS else ""),
             batch=f"{c.data.batch_size} x {c.data.crop_samples / constants.SAMPLE_RATE:g} s",
             params=ours.num_params, flops=ours.flops, compile_sec=ours.compile_sec,
             peak_flops=peak, times=times)
  for name, t in times.items():
    row[f"{name}_wall"] = harness.median(t["wall"])
    row[f"{name}_cpu"] = harness.median(t["cpu"])
  row["mfu"] = ours.flops / row["jaxssl_wall"] / peak
  # Utilisation of the CPU time the step got (what MFU would be on an otherwise idle host).
  row["mfu_cpu_time"] = ours.flops / (row["jaxssl_cpu"] / (os.cpu_count() or 1)) / peak
  row["rtf"] = row["jaxssl_wall"] / ours.audio_sec
  if theirs is not None:
    row["peer_params"] = theirs.num_params
    row["ratio_wall"] = row["jaxssl_wall"] / row["pytorch_wall"]
    row["ratio_cpu"] = row["jaxssl_cpu"] / row["pytorch_cpu"]
    # The CPU-time ratio if jaxssl's step ran all its FLOPs at the measured matmul peak: the
    # floor no kernel tuning can go below without doing fewer FLOPs.
    row["ratio_cpu_at_peak"] = row["ratio_cpu"] * row["mfu_cpu_time"]
    row["pytorch_rtf"] = row["pytorch_wall"] / ours.audio_sec
  return row


COLUMNS = ["model", "batch", "params", "jaxssl_wall", "pytorch_wall", "ratio_wall", "jaxssl_cpu",
           "pytorch_cpu", "ratio_cpu", "mfu", "mfu_cpu_time", "ratio_cpu_at_peak"]


def markdown(rows, meta, reps):
  head = (f"# jaxssl vs HF transformers (PyTorch)\n\n{meta['date']}, {meta['cpu']} "
          f"({meta['cpu_cores']} cores, load average at start {meta['load_average'][0]:.1f}), "
          f"jax {meta['jax']} / torch {meta.get('torch', '-')} / transformers "
          f"{meta.get('transformers', '-')}; {reps} "
          "interleaved rounds, medians in seconds per call; ratio = jaxssl / PyTorch. "
          "mfu = XLA FLOPs / median wall / measured peak; mfu_cpu_time uses the CPU time "
          "divided by the cores instead (the utilisation of the cycles the step actually got "
          "on a shared machine). ratio_cpu_at_peak = ratio_cpu x mfu_cpu_time: the ratio jaxssl "
          "would reach with every FLOP at the measured peak (the floor without fewer FLOPs)."
          "\n\n")
  return head + harness.markdown_table(COLUMNS, rows)


def plot(rows, path):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  x = np.arange(len(rows))
  for ax, kind in zip(axes, ("wall", "cpu")):
    for i, name in enumerate(("jaxssl", "pytorch")):
      ax.bar(x + (i - 0.5) * 0.4, [r.get(f"{name}_{kind}", np.nan) for r in rows], 0.4,
             label=name)
    ax.set_xticks(x, [r["model"] for r in rows])
    ax.set_ylabel(f"{kind} seconds per call (median)")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  meta = harness.machine()
  rows = []
  for model in FLAGS.models:
    rows.append(measure(model, reps=FLAGS.reps, batch_size=FLAGS.batch_size,
                        seconds=FLAGS.seconds, infer_seconds=FLAGS.infer_seconds,
                        tiny=FLAGS.tiny))
    print(harness.markdown_table(COLUMNS, rows[-1:]), flush=True)
  md = markdown(rows, meta, FLAGS.reps)
  print(md)
  harness.write_results(FLAGS.out, dict(machine=meta, rows=rows), md, lambda p: plot(rows, p))


if __name__ == "__main__":
  define_flags()
  app.run(main)
