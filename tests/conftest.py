"""Test setup: 8 forced CPU devices, so sharding tests run on a (2, 2, 2) mesh."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
