r"""Per-pixel logit losses alone: forward + backward (w.r.t. the student logits) of CE, KD, DKD and
DWLD (fixed / dynamic / trust / balanced_sym controllers) at one logits shape, median of `--iters`
jitted calls.

Teacher logits and labels are arguments (not constants), so XLA cannot fold the teacher side away.

  PYTHONPATH=. python benchmarks/logit_bench.py                 # 32x64x192, K=10 (the LIX step's)
  PYTHONPATH=. python benchmarks/logit_bench.py --shape 8 512 1024 19
"""
from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lix_jax.losses import logit  # noqa: E402


def loss_entries(kappa: float = 4.0) -> dict:
  """Loss name -> `fn(student, teacher, labels)`; each DWLD entry binds its controller when made."""
  common = dict(alpha=1.0, beta=1.0, temperature=1.0)

  def dwld(s, t, y, *, controller):
    return logit.dwld_loss(s, t, y, controller=controller, kappa=kappa, **common)[0]

  return {
      "ce": lambda s, t, y: logit.cross_entropy(s, y),
      "kd": lambda s, t, y: logit.kd_loss(s, t, y, temperature=1.0),
      "dkd": lambda s, t, y: logit.dkd_loss(s, t, y, **common),
      **{f"dwld ({c})": functools.partial(dwld, controller=c)
         for c in ("fixed", "dynamic", "trust", "balanced_sym")},
  }


def make_inputs(b: int, h: int, w: int, k: int):
  rng = np.random.default_rng(0)
  student = jnp.asarray(3 * rng.normal(size=(b, h, w, k)), jnp.float32)
  teacher = jnp.asarray(5 * rng.normal(size=(b, h, w, k)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, k, size=(b, h, w)), jnp.int32)
  return student, teacher, labels


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shape", type=int, nargs=4, default=(32, 64, 192, 10), metavar=("B", "H", "W", "K"))
  parser.add_argument("--iters", type=int, default=10)
  args = parser.parse_args()
  student, teacher, labels = make_inputs(*args.shape)
  losses = loss_entries()
  print(f"logits {args.shape}, {jax.devices()[0].platform}, median of {args.iters}\n")
  print("| loss | fwd + bwd ms |\n|---|---|")
  for name, fn in losses.items():
    step = jax.jit(jax.value_and_grad(fn))
    jax.block_until_ready(step(student, teacher, labels))
    times = []
    for _ in range(args.iters):
      t0 = time.perf_counter()
      jax.block_until_ready(step(student, teacher, labels))
      times.append(time.perf_counter() - t0)
    print(f"| {name} | {1e3 * statistics.median(times):.1f} |")


if __name__ == "__main__":
  main()
