"""The token-mixer benchmark scripts: MAC counting, exponent fits, targets and the demo table.

experiments/benchmarks/mixer_scaling.py and mixers_demo.py are run for hours on real data;
here their core functions run on tiny or synthetic inputs. Timings are never asserted.
"""
import json
import math
import os

import pytest

from experiments.benchmarks import mixer_scaling
from experiments.benchmarks import mixers_demo


def test_fit_exponent_recovers_power_laws_above_the_cutoff():
  secs = [1, 2, 5, 10, 20, 60, 120]
  # Quadratic from 10 s on, a constant overhead below: only the fitted range counts.
  cost = [5.0 if s < 10 else 0.01 * s**2 for s in secs]
  assert mixer_scaling.fit_exponent(secs, cost, 10.0) == pytest.approx(2.0, abs=1e-9)
  assert mixer_scaling.fit_exponent(secs, [3 * s for s in secs], 0.0) == pytest.approx(1.0)
  assert math.isnan(mixer_scaling.fit_exponent(secs, cost, 100.0))  # One point: no fit.


def test_macs_count_every_attention_block_past_the_chunk_size():
  """mha's query blocks (a lax.map past 1024 frames) would be counted once by XLA; the
  unrolled count grows ~4x per doubling where attention dominates, SummaryMixing's 2x."""
  macs = {(n, t): mixer_scaling.step_macs("mixer", n, t, remat=True)
          for n in ("mha", "summary_mixing") for t in (2_000, 4_000)}
  mha_ratio = macs[("mha", 4_000)] / macs[("mha", 2_000)]
  sm_ratio = macs[("summary_mixing", 4_000)] / macs[("summary_mixing", 2_000)]
  assert 3.0 < mha_ratio < 4.0, mha_ratio
  assert sm_ratio == pytest.approx(2.0, rel=0.02)
  # Attention at 4000 frames: 2 T^2 D forward alone, far above the projections' 4 T D^2.
  assert macs[("mha", 4_000)] > 2 * 4_000**2 * 768


def _fake_results():
  secs = [1.0, 10.0, 60.0, 120.0]

  def rows(per_second, power):
    return [dict(seconds=s, frames=int(50 * s), cpu_s=per_second * s**power,
                 wall_s=2 * per_second * s**power, macs=1e9 * s**power, peak_bytes=1e6 * s)
            for s in secs]

  return {"encoder": {"mha": rows(0.1, 2.0), "fnet": rows(0.1, 1.0),
                      "hyena": rows(1.0, 1.3),
                      mixer_scaling.PEER: [dict(seconds=s, frames=int(50 * s), cpu_s=0.2 * s,
                                                wall_s=0.2 * s) for s in secs]}}


def test_targets_and_markdown_report_met_and_missed():
  results = _fake_results()
  fits = mixer_scaling.summarize(results, 10.0)
  assert fits["encoder/mha"]["cpu_s"] == pytest.approx(2.0)
  targets = {t["mixer"]: t for t in mixer_scaling.check_targets(results, fits)}
  assert set(targets) == {"fnet", "hyena"}  # Not mha, not the peer.
  assert targets["fnet"]["speedup"] == pytest.approx(60.0)  # 0.1 * 60^2 / (0.1 * 60).
  assert targets["fnet"]["exponent_ok"] and targets["fnet"]["speedup_ok"]
  assert not targets["hyena"]["exponent_ok"]  # 1.3 > 1.15.
  assert targets["hyena"]["speedup"] == pytest.approx(360 / 60**1.3)
  assert not targets["hyena"]["speedup_ok"]
  meta = dict(date="d", cpu="c", cores=2, backend="cpu", versions="v", load_start=1.0,
              load_end=1.0, remat=True, fit_min_seconds=10.0)
  md = mixer_scaling.markdown(results, fits, meta)
  assert "| encoder | fnet | 1.00 | 1.00 | 60.00x | 60.00x | met | met |" in md
  assert "| encoder | hyena | 1.30 |" in md and "| missed | missed |" in md


def _write_run(workdir, losses):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 0, "eval/x": 1.0}) + "\n")  # Lines without the loss: skipped.
    for i, loss in enumerate(losses):
      f.write(json.dumps({"step": 25 * (i + 1), "train/loss_contrastive": loss,
                          "train/accuracy": 1.0 / loss, "train/code_perplexity": 10.0 * loss,
                          "perf/steps_per_sec": 1.0 + i}) + "\n")


def _write_probe(probe_dir, task, test, **extra):
  os.makedirs(probe_dir)
  with open(os.path.join(probe_dir, "results.json"), "w") as f:
    json.dump(dict(task=task, upstream="u", test=test, dev=test, best_step=100, seconds=1.0,
                   num_outputs=extra.get("num_outputs", 40),
                   chance_accuracy=extra.get("chance")), f)


def test_demo_table_comes_from_run_dirs_and_probe_results(tmp_path):
  _write_run(tmp_path / "hyena", [3.0, 2.5, 2.0, 1.0])
  row = mixers_demo.read_run(dict(mixer="hyena", num_params=1_234, flops_per_step=2e9,
                                  wall_s=10.0, cpu_s=5.0), str(tmp_path / "hyena"), tail=2)
  assert row["loss_contrastive"] == pytest.approx(1.5)  # Mean of the last two logged.
  assert row["first_loss_contrastive"] == 3.0 and row["steps"] == 100
  assert row["steps_per_sec"] == pytest.approx(3.0)  # Median without the first (compiling) one.
  _write_probe(tmp_path / "probe_phone_hyena", "phone", {"per": 0.4213})
  _write_probe(tmp_path / "probe_speaker_hyena", "speaker", {"accuracy": 0.875},
               num_outputs=20, chance=0.05)
  row["probes"] = {t: mixers_demo.read_probe(str(tmp_path / f"probe_{t}_hyena"))
                   for t in ("phone", "speaker")}
  meta = dict(date="d", cpu="c", cores=2, load_start=1.0, load_end=1.0, recipe="demo",
              total_steps=100, data_dir="x", tail=2, log_every_steps=25)
  md = mixers_demo.markdown([row, dict(row, mixer="fnet", probes={})], meta)
  assert "| PER (test) | speaker acc (test) |" in md
  assert "| hyena | 1,234 | 2.0 |" in md and "| 42.1% | 87.5% |" in md
  assert "| fnet |" in md and "| - | - |" in md  # A mixer without probes: dashes.
  assert "speaker: 20 classes, chance 5.0%" in md
  with pytest.raises(FileNotFoundError, match="probe_phone_mha"):
    mixers_demo.read_probe(str(tmp_path / "probe_phone_mha"))
  os.makedirs(tmp_path / "empty")
  open(tmp_path / "empty" / "metrics.jsonl", "w").close()
  with pytest.raises(ValueError, match="no train/loss_contrastive"):
    mixers_demo.read_run({}, str(tmp_path / "empty"), tail=2)
