"""Memory and time of lix_jax.kernels at DESIGN §8 sizes; prints a markdown table.

Memory is XLA's compiled `temp_size_in_bytes` (scratch beyond inputs and outputs), read from
`jax.jit(f).lower(...).compile().memory_analysis()`; time is the median wall time of the compiled
function over `--repeats` runs after one warm-up run.

  python benchmarks/kernels_bench.py                 # §8 sizes: linear_cka 2^18 x 256,
                                                     # kernel_regression 2^16 x 2^16 x 256
  python benchmarks/kernels_bench.py --quick         # small sizes, minutes on 2 CPU cores
  python benchmarks/kernels_bench.py --memory-only   # compile only: memory at full size, no runs
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp

from lix_jax import kernels

GIB = 2 ** 30


def _mib(nbytes: float) -> str:
  return "n/a" if nbytes is None or math.isnan(nbytes) else f"{nbytes / 2 ** 20:,.1f}"


def bench(name: str, fn, shapes, *, dtype=jnp.float32, repeats: int = 3, run: bool = True,
          target_bytes: float | None = None) -> dict:
  sds = [jax.ShapeDtypeStruct(s, dtype) for s in shapes]
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*sds).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  temp = float(ma.temp_size_in_bytes) if ma is not None else float("nan")
  in_bytes = sum(math.prod(s) * jnp.dtype(dtype).itemsize for s in shapes)
  ms = float("nan")
  if run:
    keys = jax.random.split(jax.random.key(0), len(shapes))
    args = [jax.random.normal(k, s, dtype) for k, s in zip(keys, shapes)]
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
  ok = "" if target_bytes is None else ("yes" if temp < target_bytes else "NO")
  row = dict(case=name, shape=" x ".join("(" + ",".join(map(str, s)) + ")" for s in shapes),
             input_mib=_mib(in_bytes), temp_mib=_mib(temp), ms="n/a" if math.isnan(ms) else
             f"{ms:,.1f}", compile_s=f"{compile_s:.1f}", under_1gib=ok)
  print("  " + " | ".join(f"{k}={v}" for k, v in row.items()), flush=True)
  return row


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
  p.add_argument("--memory-only", action="store_true", help="compile and report memory only")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--no-grad", action="store_true", help="skip the gradient cases")
  p.add_argument("--block-size", type=int, default=1024)
  args = p.parse_args()

  d = 256
  n_cka, n_kr = (2 ** 14, 2 ** 12) if args.quick else (2 ** 18, 2 ** 16)
  dense_ns = [2 ** k for k in (range(8, 12) if args.quick else range(10, 14))]
  run = not args.memory_only
  kw = dict(repeats=args.repeats, run=run)
  kr = functools.partial(kernels.kernel_regression, sigma=1.0, block_size=args.block_size)
  print(f"backend={jax.default_backend()} devices={jax.devices()}")
  rows = [
      bench("linear_cka", kernels.linear_cka, [(n_cka, d), (n_cka, d)], target_bytes=GIB, **kw),
      bench(f"kernel_regression (block {args.block_size})", kr, [(n_kr, d), (n_kr, d), (n_kr, d)],
            target_bytes=GIB, **kw),
  ]
  if not args.no_grad:
    rows.append(bench("grad linear_cka", jax.grad(kernels.linear_cka),
                      [(n_cka, d), (n_cka, d)], target_bytes=GIB, **kw))
    rows.append(bench("grad kernel_regression (wrt queries)",
                      jax.grad(lambda q, k, v: jnp.sum(kr(q, k, v))),
                      [(n_kr, d), (n_kr, d), (n_kr, d)], target_bytes=GIB, **kw))
  rows.append(bench("linear_cka, bf16 inputs", kernels.linear_cka, [(n_cka, d), (n_cka, d)],
                    dtype=jnp.bfloat16, target_bytes=GIB, **kw))
  for n in dense_ns:
    rows.append(bench("dense cka linear (Gram)", kernels.cka, [(n, d), (n, d)], **kw))
    rows.append(bench("dense cka rbf (Gram)",
                      functools.partial(kernels.cka, kernel="rbf", sigma=16.0),
                      [(n, d), (n, d)], **kw))
  cols = ["case", "shape", "input_mib", "temp_mib", "ms", "compile_s", "under_1gib"]
  print(f"\nbackend: {jax.default_backend()}, {jax.devices()[0].device_kind}; "
        f"temp = XLA temp_size_in_bytes (beyond inputs/outputs)\n")
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for r in rows:
    print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
  main()
