"""Metric logging: TensorBoard event files, a `metrics.jsonl`, and a tqdm progress bar.

Only process 0 writes. `metrics.jsonl` holds one JSON object per logged step ({"step": s, name:
value, ...}), which is what tests and notebooks read; on resume the lines after the restored step
are dropped, so a run preempted after logging but before checkpointing leaves no duplicates.
TensorBoard goes through tensorboardX (no TensorFlow needed).
"""
import json
import os
import time

import tensorboardX
import tqdm


def read_jsonl(path):
  """The list of dicts in a `metrics.jsonl` file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
  """Writes scalars to TensorBoard and metrics.jsonl, and drives the progress bar.

  Args:
    workdir: the run directory (a local path).
    total_steps: the run's last step (for the bar and its ETA).
    start_step: the step the run starts at (> 0 when resuming).
    enabled: False on processes other than 0: every method is then a no-op.
    flops_per_step: FLOPs of the step program about to run, on all devices (0: unknown). The
      trainer sets it before each step (a curriculum or dynamic batching runs programs of
      several shapes); `step_done` adds it to `flops_total`, the run's cumulative training
      FLOPs, which a resumed run continues from its last logged row.
    accounting: optional `accounting.RunAccounting`; its cost scalars (MFU, FLOPs, device-hours,
      energy) join every write.
    progress: show the progress bar (off for the probes that pretraining evals train).
  """

  def __init__(self, workdir, *, total_steps, start_step=0, enabled=True, flops_per_step=0.0,
               accounting=None, progress=True):
    self.enabled = enabled
    self.flops_per_step = flops_per_step
    self.flops_total = 0.0
    self.accounting = accounting
    self._window = (time.perf_counter(), start_step, 0.0, 0.0)  # (time, step, audio s, FLOPs)
    self._audio_sec = 0.0
    self._unlogged_steps = start_step  # Resumed steps no logged row counts (filled at step 1).
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    kept = _truncate_after(self.jsonl_path, start_step)
    if kept:
      self.flops_total = float(kept[-1].get("perf/flops_total", 0.0))
      self._unlogged_steps = start_step - kept[-1]["step"] if self.flops_total else start_step
    self._window = self._window[:3] + (self.flops_total,)
    if accounting is not None and kept:
      accounting.resume(kept[-1])  # Device-hours and energy continue the resumed run's totals.
    self._jsonl = open(self.jsonl_path, "a")
    # purge_step drops events a preempted run logged after its last checkpoint.
    self._tb = tensorboardX.SummaryWriter(logdir=workdir,
                                          purge_step=start_step + 1 if start_step else None)
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                          smoothing=0.1, disable=not progress)

  def step_done(self, audio_seconds):
    """Per-step host bookkeeping (no device sync): advances the bar, counts audio seconds and
    the step's FLOPs."""
    self._audio_sec += audio_seconds
    # Steps of a resumed run after its last logged row are counted at the first program's size.
    self.flops_total += self.flops_per_step * (1 + self._unlogged_steps)
    if self._unlogged_steps:
      t0, step0, audio0, flops0 = self._window
      self._window = (t0, step0, audio0, flops0 + self.flops_per_step * self._unlogged_steps)
      self._unlogged_steps = 0
    if self.enabled:
      self._bar.update(1)

  def exclude_time(self, seconds):
    """Leaves `seconds` (e.g. a compile) out of the current throughput window."""
    t0, step0, audio0, flops0 = self._window
    self._window = (t0 + seconds, step0, audio0, flops0)

  def write(self, step, scalars):
    """Logs `scalars` (host floats) at `step`, adding throughput since the previous call.

    Returns:
      The dict written, with "perf/steps_per_sec", "perf/audio_hours_per_sec" and (when
      flops_per_step is known) "perf/tflops_per_sec" added.
    """
    now = time.perf_counter()
    t0, step0, audio0, flops0 = self._window
    elapsed = max(now - t0, 1e-9)
    scalars = dict(scalars)
    if step > step0:
      scalars["perf/steps_per_sec"] = (step - step0) / elapsed
      scalars["perf/audio_hours_per_sec"] = (self._audio_sec - audio0) / 3600.0 / elapsed
      if self.flops_per_step:
        scalars["perf/tflops_per_sec"] = (self.flops_total - flops0) / elapsed / 1e12
    if self.accounting is not None:
      scalars.update(self.accounting.scalars(
          flops_per_step=self.flops_per_step, flops_total=self.flops_total,
          window_flops=self.flops_total - flops0, window_sec=elapsed))
    self._window = (now, step, self._audio_sec, self.flops_total)
    if not self.enabled:
      return scalars
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    postfix = {"loss": scalars.get("train/loss")}
    if "perf/audio_hours_per_sec" in scalars:
      postfix["audio_h/s"] = scalars["perf/audio_hours_per_sec"]
    self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items() if v is not None},
                          refresh=False)
    return scalars

  def close(self):
    if not self.enabled:
      return
    self._bar.close()
    self._tb.close()
    self._jsonl.close()


def _truncate_after(path, step):
  """Drops lines of metrics.jsonl logged after `step` (a resumed run rewrites them); returns
  the rows kept."""
  if not os.path.exists(path):
    return []
  kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  return kept
