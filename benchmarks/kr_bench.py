"""ARFD's kernel regression alone: the XLA path (`kernels.kernel_regression`, blocked) against the
fused Pallas kernel (`kr_fused.kernel_regression_fused`) at one tap's shape; prints a markdown table.

Forward only, as in the step (the regression's target enters ARFD through stop_gradient). Each row
is the median of `--iters` calls after a warm-up, and the largest absolute difference from the
first XLA row, so a fast but wrong kernel shows.

  python benchmarks/kr_bench.py                                  # decoder tap, KITTI-scale crop:
                                                                 # 32 x 12288 queries x 3072 keys x 32
  python benchmarks/kr_bench.py --shape 2 768 192 32 --iters 3   # small, for a CPU check
"""
from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lix_jax import kernels, kr_fused


def median_ms(fn, args, iters: int) -> tuple[float, float]:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = 1e3 * (time.perf_counter() - t0)
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(1e3 * (time.perf_counter() - t0))
  return first, statistics.median(times)


def _xla_kr(q, k, km, *, sigma, block_size):
  return kernels.kernel_regression(q, k, k, sigma=sigma, block_size=block_size, key_mask=km)


def _fused_kr(q, k, km, *, sigma, block_q, block_k, num_warps):
  return kr_fused.kernel_regression_fused(q, k, k, sigma=sigma, block_q=block_q, block_k=block_k,
                                          num_warps=num_warps, key_mask=km)


def build_cases(c: int, sigma: float, xla_blocks, pallas_blocks, num_warps):
  """`(label, fn)` rows; `fn(q, k, mask)` on `[B, n, C]`, `[B, m, C]`, `[B, m]`.

  Each `fn` binds its block sizes when it is made (`functools.partial`): a lambda closing over the
  loop variable would run every "xla block=..." row at the last block size, as this script did
  before (its GPU logs of session 5 carry a note).
  """
  cases = []
  for blk in xla_blocks:
    kr = functools.partial(_xla_kr, sigma=sigma, block_size=blk)
    cases.append((f"xla block={blk}", jax.jit(jax.vmap(kr))))
  warps = num_warps if jax.default_backend() == "gpu" else [4]
  auto = [(None, None, None)]  # kr_fused.device_blocks, the configuration the step uses
  for bq, bk, nw in auto + list(itertools.product(pallas_blocks, pallas_blocks, warps)):
    if bq is None:
      label = "pallas default (bq={} bk={} warps={})".format(*kr_fused.device_blocks(c, c))
    else:
      label = f"pallas bq={bq} bk={bk} warps={nw}"
    fused = functools.partial(_fused_kr, sigma=sigma, block_q=bq, block_k=bk, num_warps=nw)
    cases.append((label, jax.jit(fused)))
  return cases


def make_inputs(b: int, n: int, m: int, c: int, dtype):
  rng = np.random.default_rng(0)
  q, k = (jnp.asarray(rng.normal(size=(b, s, c)), dtype) for s in (n, m))
  mask = jnp.asarray(rng.random((b, m)) > 0.1)
  return q, k, mask


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", type=int, nargs=4, default=[32, 12288, 3072, 32],
                      metavar=("B", "QUERIES", "KEYS", "C"))
  parser.add_argument("--sigma", type=float, default=1.0)
  parser.add_argument("--iters", type=int, default=10)
  parser.add_argument("--xla_blocks", type=int, nargs="*", default=[256, 4096])
  parser.add_argument("--pallas_blocks", type=int, nargs="*", default=[32, 64, 128],
                      help="block_q and block_k values (all pairs)")
  parser.add_argument("--num_warps", type=int, nargs="*", default=[4, 8])
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = parser.parse_args()
  b, n, m, c = args.shape
  print(f"# backend {jax.default_backend()}, {jax.devices()[0].device_kind}; B={b} queries={n} "
        f"keys={m} C={c} sigma={args.sigma} dtype={args.dtype}")
  q, k, mask = make_inputs(b, n, m, c, jnp.dtype(args.dtype))
  cases = build_cases(c, args.sigma, args.xla_blocks, args.pallas_blocks, args.num_warps)

  print("| implementation | first call ms | median ms | max abs diff vs first row |")
  print("|---|---|---|---|")
  reference = None
  for name, fn in cases:
    try:
      first, ms = median_ms(fn, (q, k, mask), args.iters)
      out = np.asarray(fn(q, k, mask), np.float32)
    except Exception as e:  # noqa: BLE001 (one failing configuration must not hide the others)
      print(f"| {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | |")
      continue
    reference = out if reference is None else reference
    print(f"| {name} | {first:.1f} | {ms:.2f} | {np.max(np.abs(out - reference)):.2e} |",
          flush=True)


if __name__ == "__main__":
  main()
