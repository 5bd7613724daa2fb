"""Test setup: 8 forced CPU devices, so sharding tests run on a (2, 2, 2) mesh."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
# The tests compile far more than they run (tiny models, a few steps): without LLVM's
# optimisation of the CPU code the serial suite went from 1,760 to 1,563 s (2 cores). Results
# differ from -O2 builds by float rounding only (every test passes either way). Tests that launch
# jobs pass these flags on, less the forced device count (test_main, test_multiprocess).
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache for the session's workers and the jobs they launch: many tests compile
# the same tiny programs (a tiny model's step, its loss), which then compile once. It lives in
# the checkout (git-ignored), so a fresh clone starts cold.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_test_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
