"""The package's shape: layered imports (.importlinter), small files, a self-contained repo."""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_imports_follow_the_layers():
  lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
  proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                        check=False)
  assert proc.returncode == 0, proc.stdout[-3000:]
  assert "1 kept, 0 broken" in proc.stdout


def test_no_module_over_400_lines():
  long = []
  for folder, _, files in os.walk(os.path.join(ROOT, "jaxssl")):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(folder, name)) as f:
          n = sum(1 for _ in f)
        if n > 400:
          long.append(f"{os.path.relpath(os.path.join(folder, name), ROOT)}: {n}")
  assert not long


def test_no_function_level_imports_of_jaxssl():
  """Cycles are not dodged inside functions (optional heavy libraries may load lazily)."""
  found = []
  for folder, _, files in os.walk(os.path.join(ROOT, "jaxssl")):
    for name in files:
      if not name.endswith(".py"):
        continue
      with open(os.path.join(folder, name)) as f:
        tree = ast.parse(f.read())
      for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
          for node in ast.walk(func):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{name}:{node.lineno}" for m in modules if m.startswith("jaxssl")]
  assert not found
