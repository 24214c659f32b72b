"""Test set-up: 8 simulated CPU devices and the suite's XLA flags (tests/cli_env.py), set before jax is
imported anywhere."""
import os

from cli_env import FAST_COMPILE

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {FAST_COMPILE}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

from lix_jax import config as config_lib  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The persistent compilation cache, as `lix_jax.main` sets it (STACK_FACTS): a program another test,
# worker or CLI subprocess compiled already loads instead of compiling again.
config_lib.enable_compilation_cache()


# The CLI end-to-end files first, the heaviest first, then the rest in collection order: xdist
# (`--dist loadfile`, with `--no-loadscope-reorder` in pyproject.toml's addopts) hands whole files
# to the workers in this order, so no long file starts last and runs alone at the end. The tiny
# pipeline (test_cli) runs beside the ResNet-50 and format rehearsals, which compile programs of
# their own (other networks and shapes); the files after it load its compiled programs from the
# persistent cache instead of compiling them a second time in parallel.
HEAVY_FIRST = ("test_cli.py", "test_rehearsal_e2e.py", "test_rehearsal_formats_e2e.py",
               "test_reliability.py", "test_multiprocess.py", "test_export.py", "test_steps.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: file order kept.
