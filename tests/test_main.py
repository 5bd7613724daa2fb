"""The entry point: clear errors for mistyped or inconsistent configs, and --dry_run's JSON line."""
import json
import os
import subprocess
import sys

import pytest

from configs.wav2vec2 import demo
from jaxssl import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, timeout=300):
  # One CPU device (no forced 8), compiled as the rest of the suite is (conftest.py).
  flags = os.environ["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
  return subprocess.run([sys.executable, "-m", "jaxssl.main",
                         "--config=configs/wav2vec2/demo.py:runlocal", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_mistyped_override_names_the_field_and_its_closest_names():
  proc = _main("--config.optim.lrr=1e-3", "--dry_run")
  assert proc.returncode == 2
  assert "unknown config field 'optim.lrr'" in proc.stderr
  assert "Did you mean 'lr' or 'lr_groups'?" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_mistyped_section_is_reported_at_the_section():
  proc = _main("--config.maskin.prob=0.5", "--dry_run")
  assert proc.returncode == 2
  assert "unknown config field 'maskin'" in proc.stderr and "'masking'" in proc.stderr


def test_inconsistent_values_fail_before_compiling():
  proc = _main("--config.data.crop_samples=300", "--dry_run")
  assert proc.returncode == 2
  assert "data.crop_samples=300 is shorter than the model's receptive field" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("overrides,message", [
    (dict(batch_size=6),
     "data.batch_size=6: The global batch of 6 rows must be a multiple of mesh.data x mesh.fsdp"),
    (dict(crop_samples=2_000), "too few for masking.min_spans=2 spans"),
])
def test_validator_messages(overrides, message):
  c = demo.get_config("runlocal")
  with c.unlocked():
    c.data.update(overrides)
  with pytest.raises(validate.ConfigError, match=message):
    validate.validate(c, num_devices=4)


def test_mesh_shape_resolves_auto_axis_and_rejects_bad_sizes():
  c = demo.get_config()
  assert validate.mesh_shape(c.mesh, 8) == dict(data=8, fsdp=1, tensor=1)
  with c.unlocked():
    c.mesh.update(dict(data=-1, fsdp=2, tensor=2))
  assert validate.mesh_shape(c.mesh, 8) == dict(data=2, fsdp=2, tensor=2)
  with pytest.raises(validate.ConfigError, match="needs a multiple of 12 devices, got 8"):
    validate.mesh_shape(dict(data=3, fsdp=2, tensor=2), 8)


def test_dry_run_prints_params_and_flops():
  proc = _main("--dry_run")
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = json.loads(proc.stdout.strip().splitlines()[-1])
  assert line["num_params"] > 10_000
  assert line["flops_per_step"] > 0


def test_missing_dataset_is_one_clear_line(tmp_path):
  proc = _main(f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path / 'nowhere'}")
  assert proc.returncode == 1
  assert "does not exist. Build it with:" in proc.stderr
  assert "python -m jaxssl.data.build --dataset=demo_corpus" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_melhubert_dry_run_reports_its_macs_beside_hubert_base():
  from jaxssl import cli  # pylint: disable=g-import-not-at-top
  from jaxssl import objectives  # pylint: disable=g-import-not-at-top
  from jaxssl import feature_stats  # pylint: disable=g-import-not-at-top
  mel = cli.load_config_file(os.path.join(ROOT, "configs/hubert/melhubert.py"))
  # Without LibriSpeech here: placeholder statistics (the MACs do not depend on them).
  out = objectives.build(feature_stats.fill_config(mel, required=False)).dry_run_report()
  assert out["macs_per_second"] < out["hubert_base_macs_per_second"]
  assert out["macs_saving_vs_hubert_base"] == pytest.approx(
      1 - out["macs_per_second"] / out["hubert_base_macs_per_second"])
  assert objectives.build(demo.get_config()).dry_run_report() == {}


@pytest.mark.parametrize("outcome, code", [
    (dict(step=4, preempted=False), None), (dict(step=2, preempted=True), 75)])
def test_exit_status_tells_a_scheduler_whether_to_requeue(outcome, code, monkeypatch, tmp_path):
  """0: finished; 75 (EX_TEMPFAIL): SIGTERM saved a checkpoint, rerun to resume."""
  from jaxssl import main  # pylint: disable=g-import-not-at-top
  from jaxssl import pretrain  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(pretrain, "train_and_evaluate", lambda config, workdir: outcome)
  main.flags.FLAGS(["main", "--config=configs/wav2vec2/demo.py:runlocal",
                    f"--workdir={tmp_path}"])
  try:
    if code is None:
      main.main([])
    else:
      with pytest.raises(SystemExit) as e:
        main.main([])
      assert e.value.code == code == main.EXIT_PREEMPTED
  finally:
    main.flags.FLAGS.unparse_flags()
