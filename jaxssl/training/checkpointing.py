"""Orbax checkpoints of the train state and the data iterator, and where a run starts from.

A run's initial state comes from, in this order (decided once, in `restore_or_init`):
  1. resume:    the latest checkpoint in `workdir/ckpt` (the same run, restarted or preempted);
                the train state and the data loader state are restored exactly.
  2. init_from: `config.ckpt.init_from`, another run's checkpoint: params only, partially
                (params present in both with equal shapes are taken, the rest keep their init),
                e.g. a pretrained encoder into a fine-tuning model. Optimizer and step start fresh.
  3. scratch:   a fresh init from `config.seed`.

Each step directory holds two items: "state" (`ocp.args.StandardSave` of the TrainState, global
sharded arrays written by every process) and "data" (the loader's JSON state).
"""
import logging
import os

from etils import epath
from flax import traverse_util
import jax
import orbax.checkpoint as ocp

ITEMS = ("state", "data")


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager(workdir/"ckpt")` with the two items above."""

  def __init__(self, workdir, ckpt_cfg):
    if ckpt_cfg.every_steps <= 0 or ckpt_cfg.keep <= 0:
      raise ValueError(f"ckpt.every_steps ({ckpt_cfg.every_steps}) and ckpt.keep "
                       f"({ckpt_cfg.keep}) must be > 0.")
    self.directory = _absolute(workdir) / "ckpt"  # orbax refuses relative paths.
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=ckpt_cfg.keep, save_interval_steps=ckpt_cfg.every_steps,
            enable_async_checkpointing=ckpt_cfg.get("async_save", True)))

  def latest_step(self):
    """The newest finished checkpoint's step, or None."""
    return self.manager.latest_step()

  def save(self, step, state, data_state, *, force=False):
    """Saves at `step` if it is on the `every_steps` grid (or `force`); returns whether it did.

    With async checkpointing this returns once the arrays are copied off the device, so the
    caller may donate `state` to the next step straight away.
    """
    return self.manager.save(
        step, force=force,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(data_state)))

  def restore(self, abstract_state, step=None):
    """Restores (state, data_state) at `step` (default: latest) into `abstract_state`.

    Args:
      abstract_state: the unboxed TrainState of ShapeDtypeStructs with shardings
        (`train_state.with_shardings`): arrays are read straight into their shards.
      step: which checkpoint; default the latest.
    """
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def wait(self):
    """Blocks until pending async saves are committed."""
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def restore_or_init(checkpointer, ckpt_cfg, abstract_state, init_fn):
  """Resume > init_from > scratch (see the module docstring).

  Args:
    checkpointer: this run's `Checkpointer`.
    ckpt_cfg: the `ckpt` config section (reads `init_from`).
    abstract_state: unboxed TrainState of sharded ShapeDtypeStructs.
    init_fn: `() -> TrainState`, the sharded fresh init.

  Returns:
    (state, data_state or None, origin) with origin in {"resume", "init_from", "scratch"}.
  """
  step = checkpointer.latest_step()
  if step is not None:
    logging.info("Resuming from %s/%d.", checkpointer.directory, step)
    state, data_state = checkpointer.restore(abstract_state, step)
    return state, data_state, "resume"
  state = init_fn()
  if ckpt_cfg.get("init_from", ""):
    params, _ = load_params(ckpt_cfg.init_from, state.params)
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


def load_params(path, params):
  """Partially restores params from another run's checkpoint into `params`.

  A parameter is taken when the same '/'-path exists in the checkpoint with the same shape;
  the others keep their values in `params`.

  Args:
    path: a workdir, its ckpt/ dir, or one step directory.
    params: the freshly initialised (sharded) params, a nested dict; their shardings place the
      restored arrays.

  Returns:
    (params, report): params with the matching leaves replaced, and a dict of '/'-path lists
    "taken", "shape_mismatch" and "missing" (in `params` but not in the checkpoint).
  """
  step_dir = _resolve(_absolute(path))
  item = step_dir / "state"
  meta = ocp.PyTreeCheckpointer().metadata(item)
  meta = getattr(meta, "item_metadata", meta)  # StepMetadata -> tree metadata.
  meta = getattr(meta, "tree", meta)
  if "params" not in meta:
    raise ValueError(f"ckpt.init_from: {str(item)!r} has no 'params' (keys: {sorted(meta)}).")
  saved = traverse_util.flatten_dict(meta["params"], sep="/")
  ours = traverse_util.flatten_dict(params, sep="/")
  report = dict(taken=[], shape_mismatch=[], missing=[])
  wanted = {}
  for name, x in ours.items():
    if name not in saved:
      report["missing"].append(name)
    elif tuple(saved[name].shape) != tuple(x.shape):
      report["shape_mismatch"].append(f"{name}: {tuple(saved[name].shape)} vs {tuple(x.shape)}")
    else:
      report["taken"].append(name)
      wanted[name] = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
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
  ours.update(traverse_util.flatten_dict(restored["params"], sep="/"))
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
