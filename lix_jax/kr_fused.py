"""Fused (Pallas) Laplace-kernel regression for ARFD's recalibration target on accelerators.

`kernels.kernel_regression` streams key blocks through XLA: each block's `[bq, bk]` distance and
weight matrices go to device memory between the two matmuls, and at KITTI-scale crops that
traffic is most of ARFD's cost (docs/performance.md, "DWLD + ARFD"). This kernel keeps them on
chip, flash-attention style: one program per (image, query block) loops over key blocks, computes
distances, Laplace weights and the weighted value sum in registers/SRAM, and writes only the
`[bq, C]` numerator and `[bq]` denominator.

It implements the bounded case of `kernels.kernel_regression` (unit-normalised rows, a concrete
sigma >= `kernels.MIN_BOUNDED_SIGMA`): scores lie in [-2 / sigma, 0], so no running max is needed.
It is forward only: ARFD's target enters its loss through stop_gradient (DESIGN §2.4), so the
inputs are stop-gradient here too; for a differentiable regression use `kernels.kernel_regression`.

Selected by `distill.kr_impl = "pallas"`, or by "auto" (the default) for large taps on GPUs
(`losses.feature.resolve_kr_impl`). On GPUs it is lowered through Triton, on TPUs through Mosaic
(lowering checked, never run on a TPU by this project), on CPU it runs in Pallas interpret mode
(correct, slow: for tests). Timed on an H100 in docs/performance.md, "DWLD + ARFD".
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from lix_jax import kernels

Array = jax.Array


def _next_pow2(n: int, minimum: int = 16) -> int:
  return max(minimum, 1 << (max(n, 1) - 1).bit_length())


# Shared memory per program: an H100 gives ~227 KiB. `_smem_estimate` counts the query tile twice
# (load and dot-operand layout), key and value tiles once per pipeline stage and the weights once;
# it over-counts Triton's request. On an H100, tiles estimated at up to 213 KiB compiled and every
# one estimated at 270 KiB or more was refused (results/gpu/kr_bench_h100_2026-11_*.txt). Other
# GPUs give less (an A100 ~163 KiB, most others ~99 KiB) and were never measured here: they get the
# budget scaled down by the same margin from their own limit.
HOPPER_SMEM_BUDGET_BYTES = 216 * 1024
_SMEM_LIMITS_KIB = {"H100": 227, "H200": 227, "GH200": 227, "A100": 163, "A800": 163}
_DEFAULT_SMEM_LIMIT_KIB = 99


def smem_budget(device_kind: str) -> int:
  """Budget of `_smem_estimate` bytes for a GPU named `device_kind` (`jax.Device.device_kind`)."""
  limit = next((kib for name, kib in _SMEM_LIMITS_KIB.items() if name in device_kind.upper()),
               _DEFAULT_SMEM_LIMIT_KIB)
  return HOPPER_SMEM_BUDGET_BYTES * limit // 227


def _smem_estimate(bq: int, bk: int, dp: int, cp: int, num_stages: int) -> int:
  return 4 * (2 * bq * dp + num_stages * bk * (dp + cp) + bq * bk)


def default_blocks(d: int, c: int, num_stages: int = 2,
                   budget: int = HOPPER_SMEM_BUDGET_BYTES) -> tuple[int, int, int]:
  """(block_q, block_k, num_warps) for features of width d and values of width c.

  The largest tiles from (128, 64) down whose estimate fits `budget` (`smem_budget`; keys shrink to
  32 first, then queries, then keys to 16), and 8 warps once a program's query-side tiles
  (bq * (d + c) floats) reach 16 Ki, else 4. On an H100 at the KITTI-scale taps this picks the
  fastest or near-fastest of a 3 x 3 x 2 sweep: (128, 64, 4) at 32 channels, (128, 32, 8) at 128
  and (32, 32, 8) at 256 (`benchmarks/kr_bench.py`).
  """
  dp, cp = _next_pow2(d), _next_pow2(c)
  fits = lambda bq, bk: _smem_estimate(bq, bk, dp, cp, num_stages) <= budget
  bq, bk = 128, 64
  while bk > 32 and not fits(bq, bk):
    bk //= 2
  while bq > 16 and not fits(bq, bk):
    bq //= 2
  while bk > 16 and not fits(bq, bk):
    bk //= 2
  return bq, bk, 8 if bq * (dp + cp) >= 16 * 1024 else 4


def device_blocks(d: int, c: int, num_stages: int = 2,
                  backend: str | None = None) -> tuple[int, int, int]:
  """`default_blocks` for this host's GPU (its `smem_budget`) when lowering for "gpu" on a GPU
  host; the H100 budget otherwise (another platform, or a GPU export from a CPU host)."""
  budget = HOPPER_SMEM_BUDGET_BYTES
  if (backend or jax.default_backend()) == "gpu" and jax.default_backend() == "gpu":
    budget = smem_budget(jax.devices()[0].device_kind)
  return default_blocks(d, c, num_stages, budget)


def _kernel(q_ref, k_ref, v_ref, w_ref, num_ref, den_ref, *, sigma: float, block_k: int,
            num_key_blocks: int, dist_precision):
  """One (image, query block): sums over key blocks of w_j exp(-||q - k_j|| / sigma) [v_j, 1]."""
  q = q_ref[...]
  qsq = jnp.sum(q * q, axis=-1)

  def body(j, carry):
    num, den = carry
    rows = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    k, v, w = k_ref[rows, :], v_ref[rows, :], w_ref[0, rows]
    ksq = jnp.sum(k * k, axis=-1)
    # Distances decide the weights: the q.k product near float32 accuracy (kernels._DIST_PRECISION).
    qk = lax.dot_general(q, k, (((1,), (1,)), ((), ())), precision=dist_precision,
                         preferred_element_type=jnp.float32)
    d2 = jnp.maximum(qsq[:, None] + ksq[None, :] - 2.0 * qk, 0.0)
    p = jnp.exp(jnp.sqrt(d2) * (-1.0 / sigma)) * w[None, :]
    return (num + jnp.dot(p, v, preferred_element_type=jnp.float32),
            den + jnp.sum(p, axis=1))

  init = (jnp.zeros(num_ref.shape, jnp.float32), jnp.zeros(num_ref.shape[:1], jnp.float32))
  num, den = lax.fori_loop(0, num_key_blocks, body, init)
  num_ref[...] = num
  den_ref[...] = den[:, None]


def kernel_regression_fused(queries: Array, keys: Array, values: Array, *, sigma: float,
                            key_mask: Array | None = None, block_q: int | None = None,
                            block_k: int | None = None, interpret: bool | None = None,
                            backend: str | None = None, num_warps: int | None = None,
                            num_stages: int = 2) -> Array:
  """Batched Nadaraya-Watson regression with the Laplace kernel on unit-normalised rows (§2.4).

  R[b, i] = sum_j k(q_bi, k_bj) v_bj / sum_j k(q_bi, k_bj), k(x, z) = exp(-||x^ - z^||_2 / sigma):
  the same values as `jax.vmap(kernels.kernel_regression)` in its bounded case, without any
  `[n, m]` or `[block, block]` array in device memory.

  Args:
    queries: `[B, n, d]`. keys: `[B, m, d]`. values: `[B, m, C]`.
    sigma: Laplace bandwidth, a Python number >= `kernels.MIN_BOUNDED_SIGMA`.
    key_mask: optional `[B, m]` bool; False keys get weight 0; a query with no valid key gets 0.
    block_q, block_k: query rows per program and key rows per loop step (powers of two >= 16);
      None = `device_blocks`.
    interpret: run the kernel in Pallas interpret mode; None = only on the CPU backend.
    backend: the platform to lower for, "gpu" (Triton), "tpu" (Mosaic) or "cpu"; None = JAX's
      default backend. Set it to export or AOT-compile for another platform than this host's.
    num_warps, num_stages: Triton launch parameters (GPU only); num_warps None = `device_blocks`.
  Returns:
    `[B, n, C]` float32. No gradient flows (forward only, see the module docstring).
  """
  if queries.ndim != 3 or keys.ndim != 3 or values.ndim != 3:
    raise ValueError(f"kernel_regression_fused needs [B, n, d], [B, m, d], [B, m, C]; got "
                     f"{queries.shape}, {keys.shape}, {values.shape}")
  (b, n, d), m, c = queries.shape, keys.shape[1], values.shape[-1]
  if keys.shape != (b, m, d) or values.shape[:2] != (b, m):
    raise ValueError(f"shape mismatch: queries {queries.shape}, keys {keys.shape}, "
                     f"values {values.shape}")
  if key_mask is not None and key_mask.shape != (b, m):
    raise ValueError(f"key_mask must have shape {(b, m)}, got {key_mask.shape}")
  if not isinstance(sigma, (int, float)) or sigma < kernels.MIN_BOUNDED_SIGMA:
    raise ValueError(f"kernel_regression_fused needs a Python sigma >= "
                     f"{kernels.MIN_BOUNDED_SIGMA}, got {sigma!r}; use kernels.kernel_regression")
  backend = backend or jax.default_backend()
  if backend not in ("cpu", "gpu", "tpu"):
    raise ValueError(f"backend must be 'cpu', 'gpu' or 'tpu', got {backend!r}")
  auto_q, auto_k, auto_warps = device_blocks(d, c, num_stages, backend)
  block_q, block_k, num_warps = block_q or auto_q, block_k or auto_k, num_warps or auto_warps
  for name, blk in (("block_q", block_q), ("block_k", block_k)):
    if blk < 16 or blk & (blk - 1):
      raise ValueError(f"{name} must be a power of two >= 16, got {blk}")
  if interpret is None:
    interpret = backend == "cpu"
  # jax >= 0.10 lowers a bare pallas_call on GPUs with Mosaic GPU, which lacks this kernel's
  # row reductions; the Triton backend is asked for by its compiler params. TPUs take Mosaic.
  compiler_params, dist_precision = None, lax.Precision.HIGHEST
  if not interpret and backend == "gpu":
    compiler_params = pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    # Triton runs HIGHEST as plain-FMA float32; three TF32 tensor-core passes give the same
    # accuracy (XLA's own HIGHEST on GPUs is likewise not a single TF32 pass).
    dist_precision = lax.DotAlgorithmPreset.TF32_TF32_F32_X3

  f32 = lambda x: lax.stop_gradient(x.astype(jnp.float32))
  q, k = kernels._unit_rows(f32(queries)), kernels._unit_rows(f32(keys))  # noqa: SLF001
  mask = jnp.ones((b, m), bool) if key_mask is None else key_mask.astype(bool)
  # Pad to the kernel's tiles: feature columns to a power of two (zeros change no distance),
  # queries to block_q, keys to block_k (padded keys get weight 0). The denominator is a row sum
  # in the kernel rather than a ones column of the values: with C a power of two (the usual
  # widths) a ones column would double the padded value width.
  bq = min(block_q, _next_pow2(n))
  bk = min(block_k, _next_pow2(m))
  dp, cp = _next_pow2(d), _next_pow2(c)
  n_pad, m_pad = math.ceil(n / bq) * bq, math.ceil(m / bk) * bk
  q = jnp.pad(q, ((0, 0), (0, n_pad - n), (0, dp - d)))
  k = jnp.pad(k, ((0, 0), (0, m_pad - m), (0, dp - d)))
  v = jnp.pad(f32(values), ((0, 0), (0, m_pad - m), (0, cp - c)))
  key_weight = jnp.pad(mask.astype(jnp.float32), ((0, 0), (0, m_pad - m)))[:, None, :]

  kernel = functools.partial(_kernel, sigma=float(sigma), block_k=bk, num_key_blocks=m_pad // bk,
                             dist_precision=dist_precision)
  num, den = pl.pallas_call(
      kernel,
      grid=(b, n_pad // bq),
      in_specs=[pl.BlockSpec((None, bq, dp), lambda i, j: (i, j, 0)),
                pl.BlockSpec((None, m_pad, dp), lambda i, j: (i, 0, 0)),
                pl.BlockSpec((None, m_pad, cp), lambda i, j: (i, 0, 0)),
                pl.BlockSpec((None, 1, m_pad), lambda i, j: (i, 0, 0))],
      out_specs=[pl.BlockSpec((None, bq, cp), lambda i, j: (i, j, 0)),
                 pl.BlockSpec((None, bq, 1), lambda i, j: (i, j, 0))],
      out_shape=[jax.ShapeDtypeStruct((b, n_pad, cp), jnp.float32),
                 jax.ShapeDtypeStruct((b, n_pad, 1), jnp.float32)],
      interpret=interpret,
      compiler_params=compiler_params,
      name="laplace_kernel_regression",
  )(q, k, v, key_weight)
  den = den[:, :n]
  return num[:, :n, :c] / jnp.where(den > 0, den, 1.0)  # 0 where no key has weight
