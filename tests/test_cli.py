"""Every command line: --help exits 0 listing its flags; config mistakes are one line, exit 2."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {  # module -> a flag its --help must list
    "jaxssl.main": "--config", "jaxssl.evaluate": "--workdir", "jaxssl.convert": "--to",
    "jaxssl.extract": "--checkpoint", "jaxssl.kmeans": "--num_clusters", "jaxssl.aot": "--config",
    "jaxssl.data.build": "--dataset", "jaxssl.data.demo_corpus": "--out",
    "jaxssl.training.plots": "--workdir", "jaxssl.distill.cache": "--config",
    "jaxssl.distill.extract_subnet": "--subnet",
}


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_exits_zero_and_lists_the_flags(module):
  proc = _run(module, "--help")
  assert proc.returncode == 0, proc.stderr[-1000:]
  text = proc.stdout + proc.stderr
  flag_lines = [ln for ln in text.splitlines() if ln.startswith("  --")]
  names = {ln.split(":", 1)[0].strip().replace("--[no]", "--") for ln in flag_lines}
  assert COMMANDS[module] in names, text[-2000:]
  # Every listed flag has a one-line description after its name.
  assert all(":" in ln and ln.split(":", 1)[1].strip() for ln in flag_lines), flag_lines


@pytest.mark.parametrize("config, message", [
    ("nope.py", "error: --config: no such config file 'nope.py'"),
    ("configs/wav2vec2/demo.py:bogus=1", "ValueError: Unknown config argument 'bogus'; valid: "
                                         "['conv', 'layers', 'runlocal', 'width']."),
    ("configs/wav2vec2/demo.py:layers=abc", "ValueError: invalid literal for int() with base "
                                            "10: 'abc'"),
])
def test_config_file_mistakes_are_one_line(config, message, tmp_path):
  proc = _run("jaxssl.main", f"--config={config}", f"--workdir={tmp_path}")
  assert proc.returncode == 2
  lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
  """The core install has no torch: reading a PyTorch file says which extra brings it."""
  from jaxssl import extras  # pylint: disable=g-import-not-at-top
  from jaxssl.interop import ConversionError  # pylint: disable=g-import-not-at-top
  from jaxssl.interop import files  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError.
  with pytest.raises(extras.MissingExtra) as e:
    extras.require("torch", "Reading a PyTorch file")
  assert str(e.value) == ("Reading a PyTorch file needs torch, from the 'interop' extra: pip "
                          "install -r requirements-interop.txt (or pip install -e .[interop]).")
  path = tmp_path / "pytorch_model.bin"
  path.write_bytes(b"\x80\x02}q\x00.")
  with pytest.raises(ConversionError, match=r"needs torch, from the 'interop' extra: pip install "
                     r"-r requirements-interop.txt") as e:
    files.read_torch(str(path))
  assert "\n" not in str(e.value)
  assert set(extras.EXTRA_OF.values()) == {"interop", "tpu"}
  for extra in extras.EXTRA_OF.values():  # Every extra named in a message exists as a file.
    assert os.path.exists(os.path.join(ROOT, f"requirements-{extra}.txt"))


def test_no_tpu_runtime_warnings_on_a_machine_without_tpu():
  """With libtpu installed (the test environment has the tpu extra) and JAX_PLATFORMS unset,
  jax alone prints libtpu's warnings here; after `import jaxssl` nothing TPU-related is said."""
  if not importlib.util.find_spec("libtpu"):
    pytest.skip("libtpu (the tpu extra) is not installed: nothing would warn.")
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  code = "import jaxssl, jax; print(jax.default_backend())"
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0 and proc.stdout.strip() in ("cpu", "gpu"), proc.stderr[-2000:]
  assert "TPU" not in proc.stderr and "tpu" not in proc.stderr, proc.stderr[-2000:]
