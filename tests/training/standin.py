"""A tiny stand-in objective and config for the training tests (fast to compile on CPU).

The model frames the audio (8 samples a frame), runs a conv and a 2-layer MLP with dropout and
logically named params, and regresses the next frame. `nan_steps` makes the loss NaN at those
steps, to test skipped updates.
"""
import dataclasses
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import orbax.checkpoint as ocp

from configs import common
from jaxssl.data import sources
from jaxssl.training import objective as objective_lib
from jaxssl.training import checkpointing
from jaxssl.training import metrics as metrics_lib

FRAME = 8


def _init(names, init=nn.initializers.lecun_normal()):
  return nn.with_logical_partitioning(init, names)


class TinyNet(nn.Module):
  """[B, S] audio -> [B, S/8, 8] next-frame predictions."""
  hidden: int = 16
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, audio, *, train):
    x = audio.reshape(audio.shape[0], -1, FRAME)
    x = nn.Conv(self.hidden, (3,), padding="SAME", name="conv",
                kernel_init=_init(("conv_kernel", "conv_in", "conv_out")),
                bias_init=_init(("conv_out",), nn.initializers.zeros))(x)
    x = nn.Dropout(self.dropout_rate)(nn.gelu(x), deterministic=not train)
    x = nn.Dense(2 * self.hidden, name="fc1", kernel_init=_init(("embed", "mlp")),
                 bias_init=_init(("mlp",), nn.initializers.zeros))(x)
    x = nn.with_logical_constraint(nn.gelu(x), ("act_batch", "act_time", "act_mlp"))
    return nn.Dense(FRAME, name="fc2", kernel_init=_init(("mlp", "embed")),
                    bias_init=_init(("norm",), nn.initializers.zeros))(x)


@dataclasses.dataclass(frozen=True)
class StandInObjective(objective_lib.Objective):
  """`init(rng, batch)` / `loss(params, batch, rng, *, step, train)` like the real objectives."""
  dropout_rate: float = 0.1
  nan_steps: tuple = ()
  hidden: int = 16

  @property
  def model(self):
    return TinyNet(hidden=self.hidden, dropout_rate=self.dropout_rate)

  def init(self, rng, batch):
    return self.model.init({"params": rng}, batch["audio"], train=False)["params"]

  def loss(self, params, batch, rng, *, step, train=True, state=None):
    dropout_rng, _ = jax.random.split(rng)
    pred = self.model.apply({"params": params}, batch["audio"], train=train,
                            rngs={"dropout": dropout_rng})
    frames = batch["audio"].reshape(pred.shape)
    valid = batch["valid"].reshape(pred.shape).all(-1)[:, 1:]
    err = jnp.mean((pred[:, :-1] - frames[:, 1:]) ** 2, axis=-1)
    loss = jnp.sum(err * valid) / jnp.maximum(jnp.sum(valid), 1)
    if self.nan_steps:
      loss = jnp.where(jnp.isin(step, jnp.asarray(self.nan_steps)), jnp.nan, loss)
    return loss, {"valid_frac": jnp.mean(valid)}


def source(num_records=64):
  return sources.SyntheticSource(num_records, seed=0, min_samples=400, max_samples=1200)


def config(total_steps=4, *, batch_size=8, crop_samples=512, mesh=(-1, 1, 1)):
  """A small pretraining config in the real layout (configs/common.py sections)."""
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = total_steps
  c.log_every_steps = 1
  c.max_consecutive_nonfinite = 3
  c.data = common.data("synthetic", crop_samples=crop_samples, batch_size=batch_size)
  c.data.min_samples = 400
  c.objective = dict(name="standin")
  c.optim = common.adamw(lr=1e-2, weight_decay=0.01, clip_norm=1.0)
  c.schedule = dict(name="warmup_poly", warmup_steps=1, power=1.0, end_lr=0.0)
  c.mesh = common.mesh(*mesh)
  c.ckpt = common.ckpt(every_steps=2, keep=3)
  return c


def setup(kind):
  """(config, objective, source) for 3 steps on a (2, 2, 2) mesh: the stand-in, or the real
  wav2vec 2.0 objective at the tiny `:runlocal` size."""
  if kind == "standin":
    return config(total_steps=3, mesh=(2, 2, 2)), StandInObjective(), source()
  from configs.wav2vec2 import demo  # pylint: disable=g-import-not-at-top
  from jaxssl import objectives  # pylint: disable=g-import-not-at-top
  c = demo.get_config("runlocal")
  with c.unlocked():
    c.total_steps, c.log_every_steps, c.data.name = 3, 1, "synthetic"
    c.mesh = common.mesh(2, 2, 2)
  src = sources.SyntheticSource(32, seed=0, min_samples=6_000, max_samples=12_000)
  return c, objectives.build(c), src


def saved_item(workdir, step, name):
  """One field of the TrainState saved at ckpt/<step> ("params", "objective_state", ...), as
  numpy on one device."""
  item = os.path.join(workdir, "ckpt", str(step), "state")
  meta = ocp.PyTreeCheckpointer().metadata(item).item_metadata.tree[name]
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {name: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                              sharding=device), meta)}
  return jax.device_get(ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))[name])


def latest_params(workdir):
  """(step, params as numpy) of the newest checkpoint in `workdir`, whatever topology wrote it."""
  ckpt = checkpointing.Checkpointer(workdir, common.ckpt())
  step = ckpt.latest_step()
  ckpt.close()
  item = ckpt.directory / str(step) / "state"
  meta = ocp.PyTreeCheckpointer().metadata(item).item_metadata.tree["params"]
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {"params": jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)}
  restored = ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return step, jax.device_get(restored["params"])


def sigterm_after_logging(monkeypatch, at_step):
  """Makes the trainer receive SIGTERM right after it logs `at_step` (a preemption mid-run);
  `monkeypatch.undo()` lets the next run go through."""
  write = metrics_lib.MetricsWriter.write

  def write_then_preempt(self, step, scalars):
    out = write(self, step, scalars)
    if step == at_step:
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  monkeypatch.setattr(metrics_lib.MetricsWriter, "write", write_then_preempt)
