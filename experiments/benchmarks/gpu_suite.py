"""The core benchmarks on one accelerator in bf16, within a time budget; prints one table.

What `experiments/benchmarks/gpu.sh` runs. In order, each item only if the budget still allows
it (compiles on a GPU take tens of seconds, so the suite fits 8 minutes with room to spare):
  1. the device's peak bf16 matmul FLOP/s (jaxssl.training.accounting, cached per device kind);
  2. the wav2vec 2.0 BASE and HuBERT BASE (iteration 2) pretraining steps at a realistic batch
     (default 8 x 15.6 s crops, fairseq's BASE crop; params float32, compute bf16): step time,
     audio-seconds per second, MFU (target >= 45% on an H100), compile time, peak memory;
  3. BASE inference real-time factor, 1 x 10 s and 8 x 10 s;
  4. if PyTorch with CUDA is installed, HF `Wav2Vec2ForPreTraining` under bf16 autocast at the
     same batch, interleaved with jaxssl, and the time ratio.
`--device=cpu --tiny` runs the same code on CPU with the tiny variant and small batches: the dry
check used where no GPU is available.

  bash experiments/benchmarks/gpu.sh                          # GPU machine
  bash experiments/benchmarks/gpu.sh --device=cpu --tiny      # CPU dry check
"""
import time

from absl import app
from absl import flags
import jax

from experiments.benchmarks import harness
from experiments.benchmarks import peers
from jaxssl.training import accounting

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_enum("device", "gpu", ["gpu", "tpu", "cpu"], "The backend JAX must be using.")
  flags.DEFINE_bool("tiny", False, "Tiny variants and small batches (CPU dry check).")
  flags.DEFINE_string("dtype", "bfloat16", "Compute dtype of the steps.")
  flags.DEFINE_integer("batch_size", 8, "Training utterances per step (tiny: 2).")
  flags.DEFINE_float("seconds", 15.625, "Seconds per training utterance (tiny: 1).")
  flags.DEFINE_integer("reps", 10, "Timed steps / calls per item (tiny: 2).")
  flags.DEFINE_float("budget_sec", 420.0, "Skip items once this much time has passed.")
  flags.DEFINE_bool("peer", True, "HF PyTorch peer when torch with CUDA is installed.")
  flags.DEFINE_string("out", "experiments/benchmarks/results/gpu_suite", "Output stem; '' prints.")


TRAIN = ("configs/wav2vec2/base.py", None), ("configs/hubert/base.py", "iteration=2")
COLUMNS = ["item", "batch", "dtype", "compile_sec", "wall", "audio_sec_per_sec", "rtf", "mfu",
           "memory_gb", "peer_wall", "ratio"]


def check_backend(device):
  backend = jax.default_backend()
  if backend != device:
    raise SystemExit(f"--device={device} but JAX runs on {backend!r} ({jax.devices()}); on a GPU "
                     "machine install jax[cuda12] matching jax in requirements.txt, or pass "
                     "--device=cpu for the dry check.")


def run_suite(*, tiny, dtype, batch_size, seconds, reps, budget_sec, peer):
  """The suite's rows (dicts with COLUMNS); items past the budget are listed as skipped."""
  start = time.perf_counter()
  over = lambda: time.perf_counter() - start > budget_sec
  rows = []
  peak = accounting.peak_flops(dtype=dtype)
  rows.append(dict(item=f"peak matmul {peak / 1e12:.1f} TFLOP/s", dtype=dtype,
                   tflops=peak / 1e12))
  for path, arg in TRAIN:
    name = path.removeprefix("configs/").removesuffix(".py") + (f":{arg}" if arg else "")
    if over():
      rows.append(dict(item=f"train {name}", skipped="time budget"))
      continue
    c = harness.resized(harness.load_config(path, arg), batch_size=batch_size, seconds=seconds,
                        dtype=dtype)
    if tiny:
      with c.unlocked():
        c.model.variant = "tiny"
    ours = harness.JaxTrainStep(c)
    fns = {"jaxssl": ours.run}
    torch = peers.torch_cuda() if peer and path.endswith("wav2vec2/base.py") else None
    if torch is not None and not over():
      fns["pytorch"] = peers.TorchGpuStep(c, torch).run
    t = harness.interleaved(fns, reps)
    wall = harness.median(t["jaxssl"]["wall"])
    rows.append(dict(item=f"train {name}", batch=f"{batch_size} x {seconds:g} s", dtype=dtype,
                     compile_sec=ours.compile_sec, wall=wall,
                     audio_sec_per_sec=ours.audio_sec / wall, mfu=ours.flops / wall / peak,
                     memory_gb=ours.memory_bytes / 2**30,
                     loss=float(ours.metrics["train/loss"])))
    if "pytorch" in t:
      rows[-1]["peer_wall"] = harness.median(t["pytorch"]["wall"])
      rows[-1]["ratio"] = wall / rows[-1]["peer_wall"]
    jax.clear_caches()
  base = harness.load_config("configs/wav2vec2/base.py")
  with base.unlocked():
    base.model.dtype = dtype
  for b in (1, batch_size):
    if over():
      rows.append(dict(item=f"infer BASE {b} x 10 s", skipped="time budget"))
      continue
    c = harness.resized(base, batch_size=b, seconds=1.0 if tiny else 10.0)
    if tiny:
      with c.unlocked():
        c.model.variant = "tiny"
    fwd = harness.JaxForward(c)
    t = harness.interleaved({"f": fwd.run}, reps)["f"]
    wall = harness.median(t["wall"])
    rows.append(dict(item=f"infer wav2vec2/base {b} x {c.data.crop_samples / 16000:g} s",
                     batch=f"{b} x {c.data.crop_samples / 16000:g} s", dtype=dtype,
                     compile_sec=fwd.compile_sec, wall=wall,
                     audio_sec_per_sec=fwd.audio_sec / wall, rtf=wall / fwd.audio_sec,
                     mfu=fwd.flops / wall / peak))
    jax.clear_caches()
  return rows


def main(argv):
  del argv
  check_backend(FLAGS.device)
  tiny = FLAGS.tiny
  kwargs = dict(tiny=tiny, dtype=FLAGS.dtype, budget_sec=FLAGS.budget_sec, peer=FLAGS.peer,
                batch_size=2 if tiny else FLAGS.batch_size,
                seconds=1.0 if tiny else FLAGS.seconds, reps=2 if tiny else FLAGS.reps)
  meta = harness.machine()
  start = time.perf_counter()
  rows = run_suite(**kwargs)
  meta["suite_sec"] = time.perf_counter() - start
  md = (f"# Core benchmarks on {meta['device_kind']} ({meta['backend']})\n\n{meta['date']}, "
        f"jax {meta['jax']}, {'tiny dry check, ' if tiny else ''}suite took "
        f"{meta['suite_sec']:.0f} s. Seconds are medians per step / call; MFU against the "
        "measured peak in the first row.\n\n"
        + harness.markdown_table(COLUMNS + ["skipped"], rows))
  print(md, flush=True)
  suffix = "_tiny_" + FLAGS.device if tiny else ""
  harness.write_results(FLAGS.out + suffix if FLAGS.out else "",
                        dict(machine=meta, rows=rows, settings=kwargs), md)


if __name__ == "__main__":
  define_flags()
  app.run(main)
