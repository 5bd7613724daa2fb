"""Benchmarks: the speed changes keep numerics, and the scripts' core functions run at tiny sizes.

Model-code optimisations recorded in experiments/benchmarks/NOTES.md are checked here against the
XLA reference they replace (values and gradients). The benchmark scripts' functions are run on
tiny configs and their outputs checked for structure and sanity; timings are never asserted.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import constants
from jaxssl.models import encoder


@pytest.mark.parametrize("batch,time,dim,kernel,groups", [
    (2, 37, 32, 8, 4), (3, 20, 24, 7, 3), (1, 50, 16, 16, 16), (2, 9, 12, 16, 2)])
def test_grouped_conv_gradients_match_xla(batch, time, dim, kernel, groups):
  """The positional conv's custom kernel gradient equals autodiff of lax's grouped conv."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, time, dim)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, dim // groups, dim)), jnp.float32)
  t_out = time + 2 * (kernel // 2) - kernel + 1
  cotangent = jnp.asarray(rng.standard_normal((batch, t_out, dim)), jnp.float32)

  def reference(x, w):
    pad = kernel // 2
    y = jax.lax.conv_general_dilated(x, w, (1,), [(pad, pad)], feature_group_count=groups,
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    return jnp.sum(y * cotangent)

  def ours(x, w):
    return jnp.sum(encoder.grouped_conv1d(x, w, groups) * cotangent)

  np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-6)
  for got, want in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(reference, (0, 1))(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The benchmark scripts' core functions, at tiny sizes.

from experiments.benchmarks import gpu_suite  # noqa: E402
from experiments.benchmarks import harness  # noqa: E402
from experiments.benchmarks import params_macs  # noqa: E402
from experiments.benchmarks import peers  # noqa: E402
from experiments.benchmarks import vs_pytorch  # noqa: E402
from jaxssl.models import variants  # noqa: E402
from jaxssl.training import accounting  # noqa: E402


@pytest.fixture()
def fixed_peak(monkeypatch, tmp_path):
  """A known peak (1e11 FLOP/s), without measuring, in a private cache."""
  monkeypatch.setenv("JAXSSL_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(accounting, "measure_peak_flops", lambda *a, **k: 1e11)
  return 1e11


def test_discovered_configs_cover_the_recipes_and_sweeps():
  found = {name: config for name, _, _, config in harness.discover_configs()}
  assert {"wav2vec2/base", "wav2vec2/demo", "wav2vec2/large"} <= set(found)
  assert all(not isinstance(c, Exception) for c in found.values()), found
  assert all(harness.is_pretraining(c) for c in found.values())
  # Sweep files are expanded into one row per argument.
  for name in found:
    path = name.split(":")[0] + ".py"
    if path in harness.SWEEPS:
      assert ":" in name, name


def test_resized_config_and_synthetic_batch():
  c = harness.resized(harness.load_config("configs/wav2vec2/base.py"), batch_size=3, seconds=0.5,
                      dtype="bfloat16")
  assert (c.data.batch_size, c.data.crop_samples, c.model.dtype) == (3, 8000, "bfloat16")
  assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == (-1, 1, 1)
  batch = harness.synthetic_batch(c)
  assert batch["audio"].shape == (3, 8000) and batch["valid"].all()
  assert c.data.dynamic_batch_sec == 0 and c.data.batch_groups == 1  # A fixed batch.
  assert harness.load_config("configs/wav2vec2/base.py").data.batch_size == 320  # Untouched.


def test_interleaving_alternates_the_order():
  calls = []
  out = harness.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 4)
  assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
  assert set(out) == {"a", "b"} and all(len(v["wall"]) == len(v["cpu"]) == 4
                                        for v in out.values())


def test_results_files(tmp_path):
  rows = [dict(name="x", value=1.23456), dict(name="y", value=float("nan"))]
  md = harness.markdown_table(["name", "value"], rows)
  assert md.splitlines() == ["| name | value |", "| --- | --- |", "| x | 1.23 |", "| y | n/a |"]
  stem = str(tmp_path / "sub" / "bench")
  harness.write_results(stem, {"rows": rows}, md, plot=lambda p: open(p, "wb").close())
  assert {p.name for p in (tmp_path / "sub").iterdir()} == {"bench.json", "bench.md",
                                                           "bench.png"}


def _hand_macs_per_second(v, seconds):
  """Matmul / conv multiply-adds of the BASE-style encoder forward for one utterance."""
  n, macs, c_in = int(seconds * constants.SAMPLE_RATE), 0, 1
  for k, s in zip(variants.CONV_KERNELS, variants.CONV_STRIDES):
    n = (n - k) // s + 1
    macs += n * k * c_in * v.conv_dim
    c_in = v.conv_dim
  t, d = n, v.embed_dim
  macs += t * v.conv_dim * d                                         # post_extract_proj
  macs += t * v.pos_conv_kernel * (d // v.pos_conv_groups) * d       # positional conv
  macs += v.num_layers * (t * (4 * d * d + 2 * d * v.mlp_dim) + 2 * t * t * d)
  return macs / seconds


def test_macs_per_second_match_a_hand_count_and_params_match_fairseq():
  config = harness.load_config("configs/wav2vec2/base.py")
  total, encoder, macs = params_macs.count(config, [1.0])
  assert (total, encoder) == (95_044_608, 94_371_712) == params_macs.PUBLISHED["wav2vec2/base"][:2]
  hand = _hand_macs_per_second(variants.get("base"), 1.0)
  # XLA also counts elementwise work (norms, GELU, softmax, masking): a few percent more.
  assert hand < macs[1.0] < 1.12 * hand, (macs, hand)


def test_peers_have_the_same_parameter_count():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  for model, cls, key in (("w2v2", transformers.Wav2Vec2ForPreTraining, None),
                          ("hubert", transformers.HubertModel, "speech_encoder")):
    c = vs_pytorch.jax_config(model, batch_size=1, seconds=1.0)
    objective = harness.objectives.build(c)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
            for k, v in harness.synthetic_batch(c).items()}
    params = jax.eval_shape(objective.init, jax.random.PRNGKey(0), spec)
    with torch.device("meta"):  # Shapes only: nothing allocated.
      peer = cls(peers.peer_config(c, transformers))
    ours = harness.num_params(params[key] if key else params)
    assert ours == sum(p.numel() for p in peer.parameters()), model


def test_vs_pytorch_row_on_tiny_models(fixed_peak):
  pytest.importorskip("transformers")
  row = vs_pytorch.measure("infer", reps=2, batch_size=2, seconds=1.0, infer_seconds=1.0,
                           tiny=True)
  assert row["params"] == row["peer_params"] == 37_160  # The encoders, without heads.
  assert row["batch"] == "1 x 1 s" and row["flops"] > 0
  assert row["ratio_wall"] == pytest.approx(row["jaxssl_wall"] / row["pytorch_wall"])
  assert row["ratio_cpu"] == pytest.approx(row["jaxssl_cpu"] / row["pytorch_cpu"])
  assert row["mfu"] == pytest.approx(row["flops"] / row["jaxssl_wall"] / fixed_peak)
  # At the peak, jaxssl's CPU time would be FLOPs / peak x cores.
  cores = os.cpu_count() or 1
  assert row["ratio_cpu_at_peak"] == pytest.approx(
      row["flops"] / fixed_peak * cores / row["pytorch_cpu"])
  assert row["rtf"] == pytest.approx(row["jaxssl_wall"] / 1.0)
  assert len(row["times"]["jaxssl"]["wall"]) == len(row["times"]["pytorch"]["cpu"]) == 2


@pytest.mark.parametrize("model", ["w2v2", "hubert"])
def test_torch_peer_steps_train(model):
  torch = pytest.importorskip("torch")
  pytest.importorskip("transformers")
  c = vs_pytorch.jax_config(model, batch_size=2, seconds=1.0, tiny=True)
  step = peers.TorchStep(c, kind=model)  # Runs one step to warm up.
  before = [p.detach().clone() for p in step.params]
  step.run()
  changed = [not torch.equal(a, b) for a, b in zip(before, step.params)]
  assert sum(changed) > 0.9 * len(changed), f"{sum(changed)} of {len(changed)} changed"


def test_train_step_row_on_a_tiny_model(fixed_peak):
  config = harness.load_config("configs/wav2vec2/base.py")
  row = harness.measure_train_step("wav2vec2/base", config, batch_size=2, seconds=0.5, reps=2,
                                   tiny=True)
  assert row["params"] == 64_200 and row["dtype"] == "float32"
  assert row["audio_sec_per_sec"] == pytest.approx(1.0 / row["step_wall"])  # 2 x 0.5 s.
  assert row["mfu"] == pytest.approx(row["gflops_per_step"] * 1e9 / row["step_wall"] / 1e11)
  assert np.isfinite(row["loss"]) and row["memory_gb"] > 0 and row["compile_sec"] > 0


def test_gpu_suite_checks_the_backend_and_keeps_to_its_budget(fixed_peak):
  with pytest.raises(SystemExit, match="--device=gpu but JAX runs on 'cpu'"):
    gpu_suite.check_backend("gpu")
  rows = gpu_suite.run_suite(tiny=True, dtype="float32", batch_size=2, seconds=1.0, reps=1,
                             budget_sec=-1.0, peer=False)
  assert rows[0]["item"].startswith("peak matmul") and rows[0]["tflops"] == 0.1
  assert [r["item"] for r in rows[1:]] == [
      "train wav2vec2/base", "train hubert/base:iteration=2", "infer BASE 1 x 10 s",
      "infer BASE 2 x 10 s"]
  assert all(r["skipped"] == "time budget" for r in rows[1:])


def test_gpu_script_is_valid_bash():
  import subprocess  # pylint: disable=g-import-not-at-top
  subprocess.run(["bash", "-n", "experiments/benchmarks/gpu.sh"], check=True)


@pytest.mark.slow
def test_gpu_script_dry_check_on_cpu(tmp_path):
  """The whole GPU suite on CPU at tiny sizes (several minutes: four compiles)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run(["bash", "experiments/benchmarks/gpu.sh", "--device=cpu", "--tiny",
                        f"--out={tmp_path}/gs"], capture_output=True, text=True, check=True)
  assert "| train wav2vec2/base | 2 x 1 s |" in out.stdout
  assert (tmp_path / "gs_tiny_cpu.json").exists()


def test_profile_maps_instructions_to_model_components():
  from experiments.benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  bwd = ("jit(step)/transpose(jvp(Wav2Vec2Model))/speech_encoder/feature_extractor/conv_1/"
         "conv_general_dilated")
  assert profile_step.component(bwd) == "feature_extractor/conv_1 bwd"
  assert profile_step.component("jit(step)/jvp(M)/encoder/pos_conv/dot") == "pos_conv fwd"
  assert profile_step.component("jit(step)/sqrt") == "other: sqrt"

  def f(x, w):
    with jax.named_scope("ffn"):
      return jnp.tanh(x @ w)

  x = jnp.ones((4, 8))
  names = profile_step.op_names(jax.jit(f).lower(x, x.T).compile().as_text())
  assert names and any("ffn" in op for op in names.values())
  assert {profile_step.component(op) for op in names.values() if "ffn" in op} == {"ffn fwd"}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_heads_first_attention_matches_the_library_attention(dropout):
  """The XLA attention path equals jax.nn (no dropout) / flax (dropout, same key, one mask per
  batch element and head as fairseq drops) on padding."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from jaxssl.models.mixers import mha  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((3, 11, 4, 8)), jnp.float32) for _ in range(3))
  valid = jnp.arange(11)[None] < jnp.array([11, 7, 1])[:, None]
  key = jax.random.PRNGKey(3)
  if dropout:
    want = nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :], dropout_rng=key,
                                    dropout_rate=dropout, deterministic=False,
                                    broadcast_dropout=False)
    got = mha.heads_first_attention(q, k, v, valid, dropout_rng=key, dropout_rate=dropout)
  else:
    want = jax.nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :])
    got = mha.heads_first_attention(q, k, v, valid)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Gradients too (the backward pass is what the train step runs).
  f = lambda fn: jax.grad(lambda q: jnp.sum(jnp.sin(fn(q))))(q)
  if dropout:
    g_want = f(lambda q: nn.dot_product_attention(
        q, k, v, mask=valid[:, None, None, :], dropout_rng=key, dropout_rate=dropout,
        deterministic=False, broadcast_dropout=False))
    g_got = f(lambda q: mha.heads_first_attention(q, k, v, valid, dropout_rng=key,
                                                  dropout_rate=dropout))
  else:
    g_want = f(lambda q: jax.nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :]))
    g_got = f(lambda q: mha.heads_first_attention(q, k, v, valid))
  np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-6)
