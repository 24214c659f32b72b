"""Test set-up: 8 simulated CPU devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update("jax_default_matmul_precision", "highest")

# The persistent compilation cache, as `lix_jax.main` sets it (STACK_FACTS): a program another test,
# worker or CLI subprocess compiled already loads instead of compiling again. LIX_JAX_CACHE=""
# switches it off.
_cache_dir = os.environ.get("LIX_JAX_CACHE", os.path.expanduser("~/.cache/lix_jax/xla"))
if _cache_dir:
  jax.config.update("jax_compilation_cache_dir", _cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
