"""Orbax checkpoints of the train state and the data iterator, and where a run starts from.

A run's initial state comes from, in this order (decided once, in `restore_or_init`):
  1. resume:    the latest checkpoint in `workdir/ckpt` (the same run, restarted or preempted);
                the train state and the data loader state are restored exactly.
  2. init_from: `config.ckpt.init_from`, another run's checkpoint: params only, partially
                (params present in both with equal shapes are taken, the rest keep their init),
                e.g. a pretrained encoder into a fine-tuning model. Optimizer and step start fresh.
                `ckpt.init_from_rename` ((prefix here, prefix in the checkpoint) pairs, the first
                matching one applies) reads params stored under other names (data2vec 2.0's
                local_encoder/ + encoder/ as a fine-tuning model's speech_encoder/).
  3. scratch:   a fresh init from `config.seed`.

Each step directory holds three items: "state" (`ocp.args.StandardSave` of the TrainState, global
sharded arrays written by every process), "data" (the loader's JSON state) and "integrity"
(checksums and layout of every array, `integrity.py`). A resume restores the newest checkpoint
that reads back and matches its checksums; a damaged one is renamed aside (`ckpt/damaged-<step>`,
never deleted) with one warning line, and the one before it is tried.
"""
import dataclasses
import json
import logging
import os

from etils import epath
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from jaxssl.training import integrity

ITEMS = ("state", "data", "integrity")
_DAMAGED_PREFIX = "damaged-"


class CheckpointError(RuntimeError):
  """No checkpoint can be resumed from (the message is one line naming what was found)."""


class CheckpointDamaged(Exception):
  """One checkpoint failed to restore or to verify; the message says how."""


class Checkpointer:
  """`ocp.CheckpointManager(workdir/"ckpt")` with the items above and verified restores.

  "integrity" is `integrity.manifest(...)`: written in the same commit as the state, so a
  checkpoint is listed (orbax's atomic rename of its temporary directory) only with its checksums.
  """

  def __init__(self, workdir, ckpt_cfg):
    if ckpt_cfg.every_steps <= 0 or ckpt_cfg.keep < 2:
      raise ValueError(f"ckpt.every_steps ({ckpt_cfg.every_steps}) must be > 0 and ckpt.keep "
                       f"({ckpt_cfg.keep}) >= 2, so that a damaged newest checkpoint leaves an "
                       "intact one to resume from.")
    self.directory = _absolute(workdir) / "ckpt"  # orbax refuses relative paths.
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=ckpt_cfg.keep, save_interval_steps=ckpt_cfg.every_steps,
            enable_async_checkpointing=ckpt_cfg.get("async_save", True)))
    self.restored_step = None  # The step this run resumed from, if it did.
    self._pending_step = None  # The last step handed to an (async) save.

  def latest_step(self):
    """The newest finished checkpoint's step, or None."""
    return self.manager.latest_step()

  def steps(self):
    """Finished checkpoints' steps, newest first."""
    return sorted(self.manager.all_steps(), reverse=True)

  def save(self, step, state, data_state, *, force=False):
    """Saves at `step` if it is on the `every_steps` grid (or `force`); returns whether it did.

    With async checkpointing this returns once the arrays are copied off the device, so the
    caller may donate `state` to the next step straight away.
    """
    if not force and not self.manager.should_save(step):
      return False
    self._pending_step = step
    try:
      return self.manager.save(
          step, force=force,
          args=ocp.args.Composite(state=ocp.args.StandardSave(_with_arrays(state)),
                                  data=ocp.args.JsonSave(data_state),
                                  integrity=ocp.args.JsonSave(
                                      integrity.manifest(state, data_state))))
    except Exception as e:  # pylint: disable=broad-except  # A full disk, a lost bucket, ...
      raise self._save_failed(step, e) from e

  def _save_failed(self, step, error):
    intact = [s for s in self.steps() if s != step]
    return CheckpointError(
        f"Saving the checkpoint of step {step} failed ({_first_line(error)}); the run stopped. "
        + (f"ckpt/{intact[0]} is intact: free the space and rerun to resume from it."
           if intact else "No earlier checkpoint exists."))

  def restore(self, abstract_state, step=None):
    """Restores and verifies (state, data_state) at `step` (default: latest).

    Args:
      abstract_state: the unboxed TrainState of ShapeDtypeStructs with shardings
        (`train_state.with_shardings`): arrays are read straight into their shards.
      step: which checkpoint; default the latest.

    Raises:
      CheckpointError: the checkpoint was written by a different config (its arrays differ).
      CheckpointDamaged: it cannot be read, or what was read does not match its checksums.
    """
    step = self.latest_step() if step is None else step
    path = self.directory / str(step)
    handlers = _committed_items(path)
    saved = None
    if "integrity" in handlers:
      try:
        saved = self.manager.restore(
            step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore())).integrity
      except Exception as e:  # pylint: disable=broad-except  # Any failure: unreadable.
        raise CheckpointDamaged(f"its checksums cannot be read ({_first_line(e)})") from None
      if not isinstance(saved, dict) or "layout" not in saved:
        raise CheckpointDamaged("its checksum file is not a manifest")
      different = integrity.layout_difference(saved["layout"], integrity.layout(abstract_state))
      if different:
        raise CheckpointError(
            f"{path} was written by a different config ({different}); resume with the config it "
            "was written with, or start this config in a new workdir.")
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
              _with_arrays(abstract_state)),
                                        data=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  # orbax / TensorStore read errors.
      raise CheckpointDamaged(f"it cannot be read ({_first_line(e)})") from None
    state = abstract_state.replace(**restored.state)
    if saved is None:
      logging.warning("Checkpoint %s has no checksums (written before they existed): restored "
                      "unverified.", path)
    else:
      problem = integrity.problems(saved, state, restored.data)
      if problem:
        raise CheckpointDamaged(problem)
    return state, restored.data

  def restore_newest_intact(self, abstract_state):
    """(state, data_state, step) of the newest checkpoint that restores and verifies, or None
    when there is none at all. Damaged ones are renamed aside (`damaged-<step>`), each with one
    warning line; if every one is damaged, CheckpointError lists them."""
    found = []
    for step in self.steps():
      try:
        state, data_state = self.restore(abstract_state, step)
      except CheckpointDamaged as e:
        aside = self._set_aside(step)
        found.append(f"step {step}: {e}")
        logging.warning("Checkpoint step %d is damaged: %s. Kept as %s; trying the one before.",
                        step, e, aside)
        continue
      self.restored_step = step
      return state, data_state, step
    if found:
      raise CheckpointError(f"No intact checkpoint in {self.directory}: " + "; ".join(found))
    return None

  def _set_aside(self, step):
    """Renames ckpt/<step> to ckpt/damaged-<step> (process 0; every process then re-reads)."""
    aside = self.directory / f"{_DAMAGED_PREFIX}{step}"
    if jax.process_index() == 0:
      n = 1
      while aside.exists():
        aside, n = self.directory / f"{_DAMAGED_PREFIX}{step}-{n}", n + 1
      (self.directory / str(step)).rename(aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"jaxssl_set_aside_{step}")
    self.manager.reload()
    return aside

  def wait(self):
    """Blocks until pending async saves are committed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # The background write failed.
      raise self._save_failed(self._pending_step, e) from e

  def close(self):
    self.manager.close()


def _with_arrays(state):
  """The fields of a TrainState (or the items of a dict) that hold arrays, as a dict: what a
  checkpoint stores. A field without any (the state of an objective that keeps none) is left
  out, so checkpoints written before TrainState had that field restore unchanged."""
  items = (state.items() if isinstance(state, dict)
           else ((f.name, getattr(state, f.name)) for f in dataclasses.fields(state)))
  return {name: value for name, value in items if jax.tree.leaves(value)}


def _committed_items(path):
  """The items a finished save wrote to `path` (from its _CHECKPOINT_METADATA, which orbax
  completes when the save commits); raises CheckpointDamaged when that record is unreadable,
  uncommitted, or names an item that is missing."""
  try:
    meta = json.loads((path / "_CHECKPOINT_METADATA").read_text())
  except (OSError, ValueError) as e:
    raise CheckpointDamaged(f"its _CHECKPOINT_METADATA is unreadable ({_first_line(e)})") from None
  if not isinstance(meta, dict) or not meta.get("commit_timestamp_nsecs"):
    raise CheckpointDamaged("its _CHECKPOINT_METADATA records no completed save")
  handlers = meta.get("item_handlers") or {}
  missing = sorted(name for name in handlers if not (path / name).exists())
  if missing:
    raise CheckpointDamaged(f"its items {missing} are missing")
  return handlers


def _first_line(error):
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def restore_or_init(checkpointer, ckpt_cfg, abstract_state, init_fn):
  """Resume > init_from > scratch (see the module docstring).

  Args:
    checkpointer: this run's `Checkpointer`.
    ckpt_cfg: the `ckpt` config section (reads `init_from`).
    abstract_state: unboxed TrainState of sharded ShapeDtypeStructs.
    init_fn: `() -> TrainState`, the sharded fresh init.

  Returns:
    (state, data_state or None, origin) with origin in {"resume", "init_from", "scratch"}.

  Raises:
    CheckpointError: checkpoints exist but none is intact, or they belong to another config.
  """
  resumed = checkpointer.restore_newest_intact(abstract_state)
  if resumed is not None:
    state, data_state, step = resumed
    logging.info("Resuming from %s/%d.", checkpointer.directory, step)
    return state, data_state, "resume"
  state = init_fn()
  if ckpt_cfg.get("init_from", ""):
    params, _ = load_params(ckpt_cfg.init_from, state.params,
                            rename=ckpt_cfg.get("init_from_rename", ()))
    return state.replace(params=params), None, "init_from"
  return state, None, "scratch"


def _resolve(path):
  """(step directory, step) of a run dir, its ckpt/ dir, or one step dir of another run."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"ckpt.init_from={str(path)!r} does not exist.")
  if (path / "state").exists():  # Already one step's directory.
    return path
  root = path / "ckpt" if (path / "ckpt").exists() else path
  manager = ocp.CheckpointManager(root, item_names=ITEMS,
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  manager.close()
  if step is None:
    raise FileNotFoundError(f"ckpt.init_from={str(path)!r} holds no finished checkpoint.")
  return root / str(step)


def compare_params(path, params, *, rename=()):
  """Which of `params` a checkpoint holds, from its metadata only (nothing is read).

  Args:
    path: a workdir, its ckpt/ dir, or one step directory.
    params: a nested dict of arrays or ShapeDtypeStructs.
    rename: (prefix in `params`, prefix in the checkpoint) pairs: a path of `params` starting
      with the first is looked up with it replaced by the second (the first matching pair).

  Returns:
    A dict of '/'-path lists (paths of `params`): "taken" (same path, after `rename`, and shape
    in the checkpoint), "shape_mismatch" and "missing" (in `params` but not in the checkpoint).
  """
  return _compare(_resolve(_absolute(path)) / "state", params, rename)[0]


def _saved_name(name, rename):
  """`name`'s path in the checkpoint under the `rename` pairs (see `compare_params`)."""
  for ours, theirs in rename:
    if name.startswith(ours):
      return theirs + name[len(ours):]
  return name


def rename_params(params, rename):
  """`params` with each path renamed by the `rename` pairs (see `compare_params`): the layout of
  the checkpoint those pairs read, e.g. a fine-tuned data2vec 2.0 model written as its upstream."""
  if not rename:
    return params
  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict({_saved_name(k, rename): v for k, v in flat.items()},
                                      sep="/")


def _compare(item, params, rename=()):
  meta = ocp.PyTreeCheckpointer().metadata(item)
  meta = getattr(meta, "item_metadata", meta)  # StepMetadata -> tree metadata.
  meta = getattr(meta, "tree", meta)
  if "params" not in meta:
    raise ValueError(f"ckpt.init_from: {str(item)!r} has no 'params' (keys: {sorted(meta)}).")
  saved = traverse_util.flatten_dict(meta["params"], sep="/")
  ours = traverse_util.flatten_dict(params, sep="/")
  report = dict(taken=[], shape_mismatch=[], missing=[])
  for name, x in ours.items():
    source = _saved_name(name, rename)
    if source not in saved:
      report["missing"].append(name)
    elif tuple(saved[source].shape) != tuple(x.shape):
      report["shape_mismatch"].append(f"{name}: {tuple(saved[source].shape)} vs "
                                      f"{tuple(x.shape)}")
    else:
      report["taken"].append(name)
  return report, ours


def load_params(path, params, *, rename=()):
  """Partially restores params from another run's checkpoint into `params`.

  A parameter is taken when the same '/'-path (after `rename`) exists in the checkpoint with the
  same shape; the others keep their values in `params`.

  Args:
    path: a workdir, its ckpt/ dir, or one step directory.
    params: the freshly initialised (sharded) params, a nested dict; their shardings place the
      restored arrays.
    rename: (prefix in `params`, prefix in the checkpoint) pairs (see `compare_params`).

  Returns:
    (params, report): params with the matching leaves replaced, and the report of
    `compare_params`.
  """
  step_dir = _resolve(_absolute(path))
  item = step_dir / "state"
  report, ours = _compare(item, params, rename)
  sources = {name: _saved_name(name, rename) for name in report["taken"]}
  wanted = {sources[name]: jax.ShapeDtypeStruct(ours[name].shape, ours[name].dtype,
                                                sharding=ours[name].sharding)
            for name in report["taken"]}
  logging.info("init_from %s: took %d of %d params; kept the init of missing %s and "
               "shape-mismatched %s.", step_dir, len(wanted), len(ours), report["missing"],
               report["shape_mismatch"])
  if not wanted:
    return params, report
  target = {"params": traverse_util.unflatten_dict(wanted, sep="/")}
  # partial_restore reads only the arrays named in `target`; the rest of the item is skipped.
  restored = ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  restored = traverse_util.flatten_dict(restored["params"], sep="/")
  ours.update({name: restored[source] for name, source in sources.items()})
  return traverse_util.unflatten_dict(ours, sep="/"), report


def _absolute(path) -> epath.Path:
  """Local paths made absolute (orbax requires it); gs:// and other URLs pass through."""
  path = os.fspath(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


def save_config(config, workdir):
  """Writes the resolved config to workdir/config.json (process 0 only) for reproducibility."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / "config.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
