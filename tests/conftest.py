"""Test set-up: 8 simulated CPU devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

from lix_jax import config as config_lib  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The persistent compilation cache, as `lix_jax.main` sets it (STACK_FACTS): a program another test,
# worker or CLI subprocess compiled already loads instead of compiling again.
config_lib.enable_compilation_cache()
