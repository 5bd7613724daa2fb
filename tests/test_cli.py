"""Every command line: --help exits 0 listing its flags; config mistakes are one line, exit 2."""
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
    "jaxssl.distill.extract": "--subnet",
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
