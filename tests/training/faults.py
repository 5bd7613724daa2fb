"""Ways a checkpoint gets damaged, applied to one step directory (`ckpt/<step>`) of a workdir.

Each damage is `fn(step_dir, rng)`; `DAMAGES` names them for the fault-injection tests and the
randomized slow run. They are what preemptions, full disks and bad storage leave behind. The
data-file damages hit every data file by default (`every=False`: one at random, which may hold
nothing that a restore reads: then the checkpoint is still intact and verifies).
"""
import os
import pathlib
import shutil


def data_files(step_dir):
  """The state item's OCDBT data files: the merged tree's (small arrays live inline there) and
  each process's chunks."""
  return sorted(p for p in pathlib.Path(step_dir, "state").rglob("*")
                if p.is_file() and p.parent.name == "d")


def _targets(step_dir, rng, every):
  """Every data file, or one drawn at random (which may hold nothing a restore reads)."""
  files = data_files(step_dir)
  return files if every else [files[rng.integers(len(files))]]


def truncate_data_file(step_dir, rng, every=True):
  for path in _targets(step_dir, rng, every):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def delete_state_metadata(step_dir, rng):
  del rng
  os.remove(pathlib.Path(step_dir, "state", "_METADATA"))


def delete_data_file(step_dir, rng, every=True):
  for path in _targets(step_dir, rng, every):
    os.remove(path)


def flip_bytes(step_dir, rng, count=400, every=True):
  """Inverts `count` consecutive bytes inside data files (silent storage rot)."""
  for path in _targets(step_dir, rng, every):
    data = bytearray(path.read_bytes())
    start = int(rng.integers(len(data) // 4, len(data) // 2 + 1))
    for i in range(start, min(start + count, len(data))):
      data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def empty_checkpoint_metadata(step_dir, rng):
  del rng
  pathlib.Path(step_dir, "_CHECKPOINT_METADATA").write_text("")


def delete_checksums(step_dir, rng):
  del rng
  shutil.rmtree(pathlib.Path(step_dir, "integrity"))


def uncommitted(step_dir, rng):
  """What a save killed before its commit leaves: orbax's temporary directory, not listed."""
  del rng
  step_dir = pathlib.Path(step_dir)
  step_dir.rename(step_dir.with_name(f"{step_dir.name}.orbax-checkpoint-tmp-1796537923"))


def swap_state(step_dir, rng):
  """Another checkpoint's arrays under this one's name: every file reads, nothing matches."""
  del rng
  step_dir = pathlib.Path(step_dir)
  other = next(p for p in sorted(step_dir.parent.iterdir())
               if p.name.isdigit() and p.name != step_dir.name)
  shutil.rmtree(step_dir / "state")
  shutil.copytree(other / "state", step_dir / "state")


DAMAGES = {
    "data files truncated": truncate_data_file,
    "state/_METADATA deleted": delete_state_metadata,
    "data files deleted": delete_data_file,
    "400 bytes flipped": flip_bytes,
    "_CHECKPOINT_METADATA emptied": empty_checkpoint_metadata,
    "checksums deleted": delete_checksums,
    "save killed before commit": uncommitted,
    "arrays of another checkpoint": swap_state,
}
