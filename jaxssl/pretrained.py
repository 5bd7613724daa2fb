"""Pretrained models on disk: config files, training workdirs, checkpoints and conversions.

One place reads them for every consumer (probe upstreams, distillation teachers, k-means
features, LightHuBERT subnet extraction):

  load_config(arch)       a pretraining config from "file.py[:arg]" (its `get_config(arg)`) or
                          from a checkpoint directory's config.json;
  load_checkpoint(path)   (config, params) of a training workdir, one of its ckpt/<step>
                          directories, or a directory written by `python -m jaxssl.convert`;
  init_params(config)     the same architecture freshly initialised (random_init).

config.json names the objective (`objective.name`), which builds the architecture; an objective
registered outside `jaxssl.objectives` (distill) must have been imported first.
"""
import json
import os

import flax
import flax.linen as nn
import jax
import ml_collections as mlc

from jaxssl import cli
from jaxssl import objectives
from jaxssl.data import batching
from jaxssl.training import checkpointing




def init_params(config, seed):
  """Fresh (unboxed) params of the config's objective, from a 1 s dummy batch."""
  objective = objectives.build(config)
  return nn.unbox(jax.jit(objective.init)(jax.random.PRNGKey(seed), batching.dummy_batch()))


def abstract_params(config):
  """The objective's params as ShapeDtypeStructs placed on the first device (nothing runs)."""
  objective = objectives.build(config)
  shapes = nn.unbox(jax.eval_shape(objective.init, jax.random.PRNGKey(0), batching.dummy_batch()))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)


def config_json(path):
  """config.json of a run dir / converted checkpoint, or two levels up from a ckpt/<step>."""
  path = os.path.abspath(os.fspath(path))
  for candidate in (path, os.path.dirname(os.path.dirname(path))):
    f = os.path.join(candidate, "config.json")
    if os.path.isfile(f):
      with open(f) as fh:
        try:
          return _with_new_fields(mlc.ConfigDict(json.load(fh)))
        except json.JSONDecodeError as e:
          raise ValueError(f"upstream={path!r}: {f} is not valid JSON ({e}).") from None
  raise FileNotFoundError(
      f"upstream={path!r}: no config.json there (or two levels up), so it is not a jaxssl "
      f"checkpoint; expected a training workdir, a ckpt/<step> directory or a directory "
      f"written by `python -m jaxssl.convert`. Probes also take the baselines mfcc / fbank "
      "and 'random_init'.")


def _with_new_fields(config):
  """`config` with the `model` fields added since it may have been written, each set to what such
  a checkpoint was trained with (before 2026-12: MelHuBERT's zero masking and no feature
  LayerNorm were implied by its objective)."""
  m = config.get("model")
  if m is not None and "frontend" in m:
    mel = config.get("objective", {}).get("name") == "melhubert"
    if "feature_layer_norm" not in m:
      m.feature_layer_norm = not mel
    if "mask_token" not in m:
      m.mask_token = "zeros" if mel else "learned"
  return config


def load_config(arch):
  """A pretraining config from a config file ("file.py[:arg]") or a checkpoint directory."""
  if str(arch).partition(":")[0].endswith(".py"):
    try:
      return cli.load_config_file(arch)
    except FileNotFoundError:
      raise FileNotFoundError(f"upstream_arch={arch!r}: no such config file.") from None
  return config_json(arch)


def load_checkpoint(path):
  """(config, params) of a jaxssl or converted checkpoint, with every encoder weight restored.

  Raises:
    ValueError: naming the encoder parameters the checkpoint lacks or has in another shape
      (pretraining heads, which no probe uses, may be missing).
  """
  config = config_json(path)
  # Abstract targets: load_params reads only their shape, dtype and sharding, so nothing is
  # initialised; leaves the checkpoint lacks (pretraining heads) stay abstract and are dropped.
  params, report = checkpointing.load_params(path, abstract_params(config))
  encoder = "speech_encoder/" if "speech_encoder" in params else ""
  # Top-level params only pretraining reads (data2vec 2.0's decoder: a fine-tuned model/ lacks it).
  heads = tuple(f"{h}/" for h in getattr(objectives.get(config.objective.name),
                                         "pretraining_heads", ()))
  bad = [p for p in report["missing"] + report["shape_mismatch"]
         if p.startswith(encoder) and not p.startswith(heads)]
  if bad or not report["taken"]:
    raise ValueError(f"upstream={os.fspath(path)!r}: the checkpoint does not match its "
                     f"config.json: {len(bad)} encoder parameters missing or misshapen, e.g. "
                     f"{bad[:3]}.")
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  restored = {k: v for k, v in flat.items() if isinstance(v, jax.Array)}
  return config, flax.traverse_util.unflatten_dict(restored, sep="/")
