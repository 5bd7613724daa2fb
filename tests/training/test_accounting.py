"""Run cost accounting: settings, the peak-FLOP/s cache, MFU and energy arithmetic, the writer hook.

Values are checked against closed forms (energy = s * W * PUE, MFU = FLOPs / s / peak) with a
controlled clock; the only real measurement is a small matmul peak, checked for structure only.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from jaxssl.training import accounting
from jaxssl.training import metrics as metrics_lib
from jaxssl.training import partitioning
from jaxssl import pretrain
from tests.training import standin


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
  for var in accounting._ENV.values():
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("JAXSSL_CACHE_DIR", str(tmp_path / "cache"))


class _Clock:
  """A settable time.perf_counter for the accounting and metrics modules."""

  def __init__(self, monkeypatch, t=100.0):
    self.t = t
    monkeypatch.setattr(accounting.time, "perf_counter", lambda: self.t)
    monkeypatch.setattr(metrics_lib.time, "perf_counter", lambda: self.t)


def test_settings_precedence_and_clear_errors(monkeypatch):
  assert accounting.settings() == accounting.DEFAULTS
  monkeypatch.setenv("JAXSSL_PUE", "1.5")
  monkeypatch.setenv("JAXSSL_DEVICE_WATTS", "250")
  config = mlc.ConfigDict(dict(accounting=dict(pue=1.2, grid_gco2_per_kwh=50.0)))
  got = accounting.settings(config)
  assert got["pue"] == 1.2 and got["grid_gco2_per_kwh"] == 50.0  # Config beats environment.
  assert got["device_watts"] == 250.0  # Environment beats defaults.
  with pytest.raises(ValueError, match=r"Unknown accounting\.watts.*device_watts"):
    accounting.settings(mlc.ConfigDict(dict(accounting=dict(watts=1.0))))
  with pytest.raises(ValueError, match=r"accounting\.pue=-1\.0 must be"):
    accounting.settings(mlc.ConfigDict(dict(accounting=dict(pue=-1.0))))
  monkeypatch.setenv("JAXSSL_GRID_GCO2_PER_KWH", "lots")
  with pytest.raises(ValueError, match="JAXSSL_GRID_GCO2_PER_KWH='lots' is not a number"):
    accounting.settings()


def test_device_power_table():
  assert accounting.device_watts("NVIDIA H100 80GB HBM3") == 700.0
  assert accounting.device_watts("NVIDIA H100 PCIe") == 350.0
  assert accounting.device_watts("NVIDIA A100-SXM4-40GB") == 400.0
  assert accounting.device_watts("TPU v4") == 192.0
  assert accounting.device_watts("cpu") == 20.0
  assert accounting.device_watts("Some Future Chip") == accounting.FALLBACK_WATTS


def test_energy_closed_form():
  kwh, co2 = accounting.energy(3600.0 * 10, 700.0, pue=1.1, grid_gco2_per_kwh=475.0)
  assert kwh == pytest.approx(10 * 0.7 * 1.1)  # 10 device-hours at 0.7 kW, PUE 1.1.
  assert co2 == pytest.approx(kwh * 0.475)


def test_measured_peak_is_a_matmul_rate():
  """Structure only (timings are not asserted): a positive, finite rate."""
  flops = accounting.measure_peak_flops(size=128, repeats=2, matmuls=2)
  assert np.isfinite(flops) and flops > 0


def test_peak_cache_measures_once_per_device_kind(monkeypatch, tmp_path):
  calls = []

  def fake_measure(device, dtype):
    calls.append((device.platform, jnp.dtype(dtype).name))
    return 1.5e11 * len(calls)

  monkeypatch.setattr(accounting, "measure_peak_flops", fake_measure)
  path = str(tmp_path / "peak.json")
  assert accounting.peak_flops(path=path) == 1.5e11
  assert accounting.peak_flops(path=path) == 1.5e11  # Cached: no second measurement.
  assert calls == [("cpu", "float32")]
  key = accounting.device_key(jax.devices()[0], jnp.float32)
  assert key.startswith("cpu|") and key.endswith(f"|float32|{os.cpu_count()}cpus")
  assert json.load(open(path))[key]["flops"] == 1.5e11
  # Another dtype is another entry; refresh measures again; a corrupt file is re-measured.
  assert accounting.peak_flops(dtype=jnp.bfloat16, path=path) == 3e11
  assert accounting.peak_flops(path=path, refresh=True) == 4.5e11
  with open(path, "w") as f:
    f.write("{not json")
  assert accounting.peak_flops(path=path) == 6e11
  assert set(json.load(open(path))) == {key}
  # The default location follows JAXSSL_CACHE_DIR.
  assert accounting.cache_path() == str(tmp_path / "cache" / "peak_flops.json")


def test_run_accounting_mfu_device_time_and_energy(monkeypatch):
  clock = _Clock(monkeypatch)
  acc = accounting.RunAccounting(num_devices=4, peak_flops_per_device=1e12, watts=500.0,
                                 pue=1.2, grid_gco2_per_kwh=400.0)
  clock.t += 20.0
  out = acc.scalars(flops_per_step=2e12, flops_total=2e13, window_flops=2e13, window_sec=16.0)
  assert out["perf/mfu"] == pytest.approx(2e12 * 10 / 16.0 / 4e12)
  assert out["perf/flops_total"] == 2e13 and out["perf/flops_per_step"] == 2e12
  # Device time is wall time (compiles included) x devices; energy follows from it.
  assert out["perf/device_hours"] == pytest.approx(80.0 / 3600)
  assert out["perf/energy_kwh"] == pytest.approx(80.0 * 500.0 * 1.2 / 3.6e6)
  assert out["perf/co2e_kg"] == pytest.approx(out["perf/energy_kwh"] * 0.4)
  clock.t += 10.0
  out = acc.scalars(flops_per_step=2e12, flops_total=3e13, window_flops=1e13, window_sec=10.0)
  assert out["perf/device_hours"] == pytest.approx(120.0 / 3600)  # Cumulative.
  assert out["perf/flops_total"] == 3e13
  # Unknown FLOPs: no FLOP figures, but time and energy still count.
  assert set(acc.scalars(flops_per_step=0.0, flops_total=0.0, window_flops=0.0,
                         window_sec=1.0)) == {
      "perf/device_hours", "perf/energy_kwh", "perf/co2e_kg"}


def test_writer_logs_costs_and_a_resumed_run_continues_them(monkeypatch, tmp_path):
  clock = _Clock(monkeypatch)
  make = lambda: accounting.RunAccounting(num_devices=2, peak_flops_per_device=1e12,
                                          watts=100.0)
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=10, flops_per_step=1e12,
                                     accounting=make())
  for step in (1, 2, 3):
    clock.t += 4.0
    writer.step_done(1.0)
    writer.write(step, {"train/loss": 1.0})
  writer.close()
  rows = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["perf/mfu"] for r in rows] == pytest.approx([0.125] * 3)  # 1e12 / 4 s / 2e12.
  assert rows[2]["perf/device_hours"] == pytest.approx(24.0 / 3600)
  # Resumed from step 2: the totals continue from the step-2 row, not from zero.
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=10, start_step=2,
                                     flops_per_step=1e12, accounting=make())
  clock.t += 4.0
  writer.step_done(1.0)
  row = writer.write(3, {"train/loss": 1.0})
  writer.close()
  assert row["perf/device_hours"] == pytest.approx((16.0 + 8.0) / 3600)
  assert row["perf/flops_total"] == 3e12


def test_cumulative_flops_count_each_steps_own_program(tmp_path):
  """A curriculum or dynamic batching runs programs of several sizes: each step adds its own."""
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=10)
  for step, flops in ((1, 1e12), (2, 1e12), (3, 4e12), (4, 2e12)):
    writer.flops_per_step = flops  # As the trainer sets it before each step.
    writer.step_done(1.0)
    if step % 2 == 0:
      row = writer.write(step, {"train/loss": 1.0})
  writer.close()
  # Steps 3 and 4 ran 6e12 FLOPs in the window: 3 TFLOPs per step, whatever the latest size.
  assert row["perf/tflops_per_sec"] == pytest.approx(3 * row["perf/steps_per_sec"], rel=1e-6)
  assert writer.flops_total == 8e12
  # Resumed at step 5 whose last logged row is step 4: the total goes on from that row; the
  # step between (5, saved unlogged by a SIGTERM) is counted at the first program's size.
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 4, "perf/flops_total": 8e12}) + "\n")
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=10, start_step=5)
  writer.flops_per_step = 3e12
  writer.step_done(1.0)
  writer.close()
  assert writer.flops_total == 8e12 + 2 * 3e12


def test_a_curriculum_runs_cumulative_flops_are_the_sum_of_its_steps(tmp_path):
  config = standin.config(total_steps=6)
  with config.unlocked():
    config.data.curriculum = dict(name="crop_length", start_samples=0, ramp_steps=4)
    config.log_every_steps = 1
  pretrain.train_and_evaluate(config, str(tmp_path), source=standin.source(),
                             objective=standin.StandInObjective())
  rows = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  per_step = [r["perf/flops_per_step"] for r in rows]
  assert len(set(per_step)) >= 3  # Crops of 1/4, 2/4, 3/4 (and 4/4) of the final length.
  np.testing.assert_allclose([r["perf/flops_total"] for r in rows], np.cumsum(per_step))


def test_for_run_counts_a_cpu_host_once_and_takes_overrides(monkeypatch):
  monkeypatch.setattr(accounting, "measure_peak_flops", lambda *a, **k: pytest.fail("measured"))
  config = mlc.ConfigDict(dict(accounting=dict(peak_flops=3e11, pue=1.0)))
  mesh = partitioning.make_mesh(mlc.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  assert mesh.devices.size == 8  # tests/conftest.py's forced CPU devices: one host.
  acc = accounting.for_run(config, mesh)
  assert acc.num_devices == 1 and acc.peak_flops == 3e11 and acc.watts == 20.0


def test_training_run_logs_costs_beside_losses(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXSSL_PEAK_FLOPS", "1e11")
  config = standin.config(total_steps=4)
  pretrain.train_and_evaluate(config, str(tmp_path), source=standin.source(),
                             objective=standin.StandInObjective())
  rows = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for r in rows:
    assert np.isfinite(r["train/loss"]) and 0 < r["perf/mfu"] < 1
    # MFU and TFLOP/s are the same rate over two denominators (one host, peak 1e11).
    assert r["perf/mfu"] == pytest.approx(r["perf/tflops_per_sec"] * 1e12 / 1e11, rel=1e-6)
    assert r["perf/flops_total"] == pytest.approx(r["step"] * r["perf/flops_per_step"])
  hours = [r["perf/device_hours"] for r in rows]
  assert all(b > a for a, b in zip(hours, hours[1:]))
  assert rows[-1]["perf/energy_kwh"] == pytest.approx(hours[-1] * 20.0 * 1.1 / 1000)
