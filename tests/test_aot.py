"""jaxssl.aot: the trainer's step compiled for TPU topologies by libtpu's compiler on this CPU.

Each TPU compile of even the tiny model takes ~20 s of CPU here, so the fast tests compile the
demo recipe at its `:runlocal` size (through the CLI, on a (1, 2, 2) mesh) and at two FSDP sizes,
and one that cannot fit; the demo model itself, BASE at three FSDP sizes and the pod recipes on
their real slices are `slow` (experiments/tpu_plan/ records the pod recipes' numbers).
"""
import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import pods
from configs.pods import best_rq_base
from configs.pods import data2vec2_base
from configs.pods import hubert_base
from configs.pods import wav2vec2_base
from configs.pods import wav2vec2_large
from configs.pods import xlsr_1b
from configs.pods import xlsr_2b
from configs.wav2vec2 import base
from configs.wav2vec2 import demo
from jaxssl import aot
from jaxssl import objectives
from jaxssl import validate
from jaxssl import pretrain
from jaxssl.models import variants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V5E = aot.CHIPS["TPU v5 lite"]


def _with(config, **fields):
  """A copy of a locked config with dotted fields replaced ({"mesh.fsdp": 2})."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for path, value in fields.items():
      node = config
      *parents, last = path.split(".")
      for p in parents:
        node = node[p]
      node[last] = value
  return config


def _num_params(config):
  step = pretrain.abstract_step(config)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(step["abstract_state"].params))


def test_topologies_resolve_to_chips():
  for name, chip, chips in [("v5e:2x2", "v5e", 4), ("v4:2x2x1", "v4", 4), ("v5p:2x2x1", "v5p", 4),
                            ("v6e:2x2", "v6e", 4), ("v5e:16x16", "v5e", 256)]:
    devices = aot.topology_devices(name)
    found, per_chip = aot._chip_of(devices)  # pylint: disable=protected-access
    assert found.name == chip
    assert len(devices) == chips * per_chip
    assert len({d.process_index for d in devices}) == chips // 4  # One process per 4-chip host.


def test_bad_topology_names_fail_clearly():
  with pytest.raises(ValueError, match=r"--topology='v5e-4': expected <generation>:<chip grid>"):
    aot.topology_devices("v5e-4")
  with pytest.raises(ValueError, match=r"--topology='v5e:3x5': libtpu could not describe it"):
    aot.topology_devices("v5e:3x5")


@pytest.mark.parametrize("arg,batch,crop", [
    ("runlocal", 8, 8_000),  # The demo recipe at its CPU smoke size (the tiny variant).
    pytest.param("", 8, 32_000, marks=pytest.mark.slow),  # The demo model itself: ~1 min CPU.
])
def test_demo_compiles_for_v5e_with_a_data_fsdp_tensor_mesh_via_the_cli(tmp_path, arg, batch,
                                                                          crop):
  out = tmp_path / "plan.json"
  env = dict(os.environ, XLA_FLAGS="")
  config_flag = "--config=configs/wav2vec2/demo.py" + (f":{arg}" if arg else "")
  proc = subprocess.run(
      [sys.executable, "-m", "jaxssl.aot", config_flag,
       "--topology=v5e:2x2", "--config.mesh.data=1", "--config.mesh.fsdp=2",
       "--config.mesh.tensor=2", "--mfu=0.5", f"--json_out={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  p = json.loads(out.read_text())
  config = demo.get_config(arg or None)
  assert p["chip"] == "v5e" and p["num_devices"] == 4
  assert p["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
  assert p["batch_shape"] == [batch, crop]
  assert p["num_params"] == _num_params(config)
  assert p["peak_bytes"] == (p["argument_bytes"] + p["output_bytes"] - p["alias_bytes"]
                             + p["temp_bytes"])
  # The state is sharded: each chip holds less than the whole f32 state (params + 2 moments).
  assert p["state_bytes"] < 3 * 4 * p["num_params"]
  assert p["alias_bytes"] > 0.9 * p["state_bytes"]  # The donated state is updated in place.
  assert p["flops_per_step"] == pytest.approx(4 * p["flops_per_step_per_device"])
  assert p["xla_flops_per_step"] > 0
  # Forward + backward of the encoder alone is >= 6 FLOPs per parameter and frame.
  frames = batch * ((crop - 400) // 320 + 1)
  assert p["flops_per_step"] > 6 * p["num_params"] * frames
  assert p["step_sec"] == pytest.approx(p["flops_per_step_per_device"] / (V5E.peak_flops * 0.5))
  assert p["audio_hours_per_hour"] == pytest.approx(batch * crop / 16_000 / p["step_sec"])
  assert f"mesh {p['mesh']}" in proc.stdout and "of 16.00 GiB HBM" in proc.stdout
  assert "predicted at MFU 0.50" in proc.stdout


def test_nocompile_plans_a_pod_recipe_in_seconds(tmp_path):
  # XLS-R 1B on its v5e-256 slice: exact sharded state and traced FLOPs, no XLA compile.
  out = tmp_path / "plan.json"
  proc = subprocess.run(
      [sys.executable, "-m", "jaxssl.aot", "--config=configs/pods/xlsr_1b.py", "--nocompile",
       f"--json_out={out}"], cwd=ROOT, env=dict(os.environ, XLA_FLAGS=""), capture_output=True,
      text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  p = json.loads(out.read_text())
  assert not p["compiled"] and p["temp_bytes"] is None and "not compiled" in proc.stdout
  assert p["topology"] == "v5e:16x16" and p["mesh"] == {"data": 32, "fsdp": 8, "tensor": 1}
  assert p["num_params"] == 965_514_752
  # f32 params + two Adam moments, sharded 8 ways (norms and biases are replicated: a few %).
  assert 12 * p["num_params"] / 8 <= p["state_bytes"] < 1.05 * 12 * p["num_params"] / 8
  frames = 512 * ((320_000 - 400) // 320 + 1)
  assert 6 * p["num_params"] * frames < p["flops_per_step"] < 12 * p["num_params"] * frames


def test_per_device_argument_memory_shrinks_as_fsdp_grows():
  # The `:runlocal` recipe with one tiny layer and 4 crops: each TPU compile is ~25% shorter.
  config = _with(demo.get_config("runlocal"), **{"data.batch_size": 4})
  with config.unlocked():
    del config.model["variant"]
    config.model.variant = dict(dataclasses.asdict(variants.get("tiny")), num_layers=1)
  args, states = [], []
  for fsdp in (1, 4):  # (1, 2, 4) for BASE in the slow test below.
    p = aot.plan(_with(config, **{"mesh.data": 4 // fsdp, "mesh.fsdp": fsdp}), "v5e:2x2")
    assert p["mesh"] == {"data": 4 // fsdp, "fsdp": fsdp, "tensor": 1}
    args.append(p["argument_bytes"])
    states.append(p["state_bytes"])
  assert args[0] > args[1], args  # XLA's per-device argument sizes.
  assert states[0] > states[1], states  # The same from the shardings.
  assert all(a >= s for a, s in zip(args, states))  # Arguments = state + this device's batch.


def test_state_that_cannot_fit_fails_before_compiling_naming_buffers_and_fixes():
  # XLS-R 2B unsharded on v5e: 2.16B params x 12 bytes (f32 + Adam moments) > 16 GiB per chip.
  config = _with(xlsr_2b.get_config(), **{"mesh.data": 4, "mesh.fsdp": 1, "mesh.tensor": 1,
                                          "data.batch_size": 8})
  with pytest.raises(aot.DoesNotFit) as info:
    aot.plan(config, "v5e:2x2")
  message = str(info.value)
  assert "The train state (params + optimizer moments) needs 24." in message
  assert "more than the 16.00 GiB of HBM of each device of v5e:2x2" in message
  assert "speech_encoder/encoder/layers/" in message  # The biggest leaves, by path.
  assert "raise mesh.fsdp (now 1" in message
  # The suggested fix: the same state over fsdp=4 is a quarter per device (embed dims shard).
  devices = aot.topology_devices("v5e:2x2")
  per_device = []
  for fsdp in (1, 4):
    step = pretrain.abstract_step(_with(config, **{"mesh.data": 4 // fsdp, "mesh.fsdp": fsdp}),
                                 devices=devices)
    per_device.append(sum(aot._leaf_bytes(x)  # pylint: disable=protected-access
                          for x in jax.tree.leaves(step["abstract_state"])))
  assert per_device[0] / per_device[1] == pytest.approx(4, rel=0.02)
  assert per_device[1] < V5E.hbm_bytes


def test_cli_reports_a_step_that_does_not_fit_without_a_traceback():
  # The tiny model with 4,096 crops of 250k samples: the compiler refuses the activations.
  env = dict(os.environ, XLA_FLAGS="")
  proc = subprocess.run(
      [sys.executable, "-m", "jaxssl.aot", "--config=configs/wav2vec2/demo.py:runlocal",
       "--topology=v5e:2x2", "--config.mesh.fsdp=4", "--config.data.batch_size=4096",
       "--config.data.crop_samples=250000"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "error: DoesNotFit: The compiled train step needs" in proc.stderr
  assert "exceeds available HBM" in proc.stderr  # The compiler's own line.
  assert "feature_extractor/conv_0" in proc.stderr  # The biggest activation, by module.
  assert "model.remat=True" in proc.stderr and "optim.grad_accum_steps=2" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_config_that_disagrees_with_the_topology_fails_before_compiling():
  config = _with(demo.get_config(), **{"mesh.data": 3})
  with pytest.raises(validate.ConfigError, match="needs a multiple|not divisible|needs 3"):
    aot.plan(config, "v5e:2x2")


def test_accelerator_types_of_topologies():
  assert pods.accelerator_type("v5e:4x8") == "v5litepod-32"
  assert pods.accelerator_type("v5e:16x16") == "v5litepod-256"
  assert pods.accelerator_type("v4:2x2x4") == "v4-32"  # v4 names count TensorCores.
  assert pods.accelerator_type("v5p:4x4x4") == "v5p-128"
  assert pods.accelerator_type("v6e:8x8") == "v6e-64"
  with pytest.raises(ValueError, match="Unknown TPU topology 'v9:2x2'"):
    pods.accelerator_type("v9:2x2")


@pytest.mark.parametrize("module", [wav2vec2_base, hubert_base, wav2vec2_large, xlsr_1b,
                                    xlsr_2b, best_rq_base, data2vec2_base])
def test_pod_recipes_agree_with_their_topology(module):
  c = module.get_config()
  devices = aot.topology_devices(c.tpu.topology)
  assert c.tpu.accelerator_type == pods.accelerator_type(c.tpu.topology)
  sizes = validate.validate(c, num_devices=len(devices),
                            num_processes=len({d.process_index for d in devices}))
  assert math.prod(sizes.values()) == len(devices)
  assert c.model.dtype == "bfloat16" and c.model.scan_layers
  assert c.distributed.coordinator == "auto"
  local = module.get_config("runlocal")  # Back to one CPU process (8 forced devices here).
  assert local.distributed.coordinator == "" and local.model.variant == "tiny"
  validate.validate(local, num_devices=8, num_processes=1)


# (pod, objective-state values, batch at the longest crop, frames through forward + backward).
@pytest.mark.parametrize("module,state_values,batch,frames", [
    # The frozen quantizer (projection 320 x 16, codebook 8192 x 16); 16 batches of 400 s at
    # 35 s crops, ceil((1 + 560,000 // 160) / 4) = 876 frames each.
    (best_rq_base, lambda p: (320 + 8192) * 16, (176, 560_000), 176 * 876),
    # The EMA teacher (a copy of the encoder); 8 x 62.5 s at 20 s crops, each masked 8 times,
    # the student keeping 999 - floor(0.4095 x 999 + 0.5) = 590 frames of every copy.
    (data2vec2_base, lambda p: sum(math.prod(x.shape) for x in jax.tree.leaves(p["encoder"])),
     (24, 320_000), 24 * 8 * 590),
])
def test_nocompile_plans_count_the_objective_state(module, state_values, batch, frames):
  """BEST-RQ's quantizer and data2vec 2.0's EMA teacher are train state: a pod plan traces their
  step and counts them, replicated, beside the f32 params and two Adam moments."""
  c = module.get_config()
  p = aot.plan(c, c.tpu.topology, compile_step=False)
  assert not p["compiled"] and p["mesh"] == {"data": p["num_devices"], "fsdp": 1, "tensor": 1}
  assert tuple(p["batch_shape"]) == batch
  params = jax.eval_shape(objectives.build(c).init, jax.random.key(0),
                          {"audio": np.zeros((1, 16_000), np.float32),
                           "valid": np.ones((1, 16_000), bool)})
  want = 4 * (3 * p["num_params"] + state_values(params))
  assert want <= p["state_bytes"] < want + 1024  # (+ step, rng and optimizer counters.)
  assert p["flops_per_step"] > 6 * p["num_params"] * frames


def test_xlsr_variants_match_hf_parameter_counts():
  """XLS-R 1B / 2B as HF's facebook/wav2vec2-xls-r-{1b,2b} configs: the pretraining model's
  parameters equal transformers' Wav2Vec2ForPreTraining built (on the meta device) with them."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  common = dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True,
                num_hidden_layers=48, num_attention_heads=16, codevector_dim=1024,
                proj_codevector_dim=1024)
  for module, dims in [(xlsr_1b, dict(hidden_size=1280, intermediate_size=5120)),
                       (xlsr_2b, dict(hidden_size=1920, intermediate_size=7680))]:
    with torch.device("meta"):
      hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**common, **dims))
    obj = objectives.build(module.get_config())
    batch = {"audio": np.zeros((1, 16_000), np.float32), "valid": np.ones((1, 16_000), bool)}
    params = jax.eval_shape(lambda o=obj, b=batch: o.init(jax.random.key(0), b))
    ours = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    assert ours == sum(p.numel() for p in hf.parameters())


@pytest.mark.slow
def test_base_compiles_for_v5e_and_its_arguments_shrink_with_fsdp():
  """BASE (fairseq recipe, f32, unscanned) on v5e:2x2 at fsdp 1, 2, 4: minutes per compile."""
  args = []
  for fsdp in (1, 2, 4):
    config = _with(base.get_config(), **{"mesh.data": 4 // fsdp, "mesh.fsdp": fsdp,
                                         "data.batch_size": 8})
    p = aot.plan(config, "v5e:2x2")
    assert p["num_params"] == 95_044_608  # README / docs/reference.md: fairseq's BASE count.
    assert p["state_bytes"] < 3 * 4 * 95_044_608 / fsdp * 1.05
    args.append(p["argument_bytes"])
  assert args[0] > args[1] > args[2], args


@pytest.mark.slow
@pytest.mark.parametrize("module", [wav2vec2_base, wav2vec2_large])
def test_pod_recipes_fit_their_slice(module):
  c = module.get_config()
  p = aot.plan(c, c.tpu.topology)
  assert p["peak_bytes"] < p["hbm_bytes"]
