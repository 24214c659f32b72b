"""XLA flags of the whole suite, and the environment of the CLI subprocesses the tests start.

Compiling is most of the suite's time (a tiny train step: ~22 s to compile on 2 CPU cores, well under
a second to run), so every test process compiles with XLA's CPU back end at optimisation level 0 and
the classic elemental emitters instead of the fusion emitters: the tiny train step compiles in ~8 s.
Semantics are XLA's either way: a tiny student's 6 logged losses and its evaluation came out bitwise
those of the default flags, and the tiny pipeline stays within its fixture's cross-machine
tolerances (tests/fixtures/tiny_pipeline_metrics.json was written with the defaults). Summation
order may differ (tests/test_models.py compares padded and unpadded runs at the tensors' scale).
The code runs slower (2-3x for the ResNet-50 duplex teacher), which only the few native-size runs
notice. Users' runs, the benchmarks and the results keep XLA's defaults.
"""
from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def cli_env(devices: int = 2, **extra: str) -> dict[str, str]:
  """The test process's environment for `python -m lix_jax.main` on `devices` simulated CPU devices."""
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}", **extra)
