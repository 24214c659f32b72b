"""Kernels, Gram centring, HSIC, CKA and streaming kernel regression (DESIGN §2.4, §3).

Every function takes samples as rows: `x: [n, d]`, `z: [m, d]` (one image's pixels are the
samples at a feature tap). Batches are handled with `jax.vmap`; everything is jittable and
differentiable. bfloat16/float16 inputs are promoted to float32 before any arithmetic, so sums
accumulate in float32 and results are float32 (float64 inputs stay float64).

A researcher's three lines::

  from lix_jax import kernels
  sim = kernels.linear_cka(feats_a, feats_b)                       # [n, d1], [n, d2] -> scalar
  sim_rbf = kernels.cka(feats_a, feats_b, kernel="rbf", sigma=1.0)  # Gram form, n x n memory

Batched (one CKA per image of `[B, n, d]` features)::

  per_image = jax.vmap(kernels.linear_cka)(a, b)                                  # [B]
  r = jax.vmap(lambda q, k, v: kernels.kernel_regression(q, k, v, sigma=0.5))(q, k, v)

Degenerate inputs. Constant (or zero) features have zero centred Gram, so HSIC(K, K) = 0 and CKA
would be 0/0. lix_jax defines CKA = 0 whenever a centred self-similarity is at or below
`DEGENERATE_RTOL` (1e-10) times its uncentred counterpart (HSIC(K, K) against the same expression
on the uncentred Gram; ||X~'X~||_F against ||X||_F^2 in `linear_cka`) -- the level below which
float32 centring leaves only rounding noise -- so value and gradient stay finite (gradient 0).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# Relative size below which a centred self-similarity is treated as exactly 0 (see module doc).
DEGENERATE_RTOL = 1e-10
# Squared distances at or below this are treated as 0 by the Laplace kernel's square root: it keeps
# the gradient finite for identical points (d sqrt(s)/ds is unbounded at 0). Float32 rounding of
# the expansion ||x||^2 + ||z||^2 - 2 x.z is far larger than this anyway.
_SQRT_FLOOR = 1e-12
# Distances decide kernel weights; TPU/GPU default f32 matmuls may run in bf16 passes.
_DIST_PRECISION = jax.lax.Precision.HIGHEST


def _acc_dtype(*xs: Array) -> jnp.dtype:
  """float32 for low-precision inputs, float64 if any input is float64."""
  return jnp.result_type(jnp.float32, *[x.dtype for x in xs])


def _safe_sqrt(s: Array) -> Array:
  ok = s > _SQRT_FLOOR
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, s, 1.0)), 0.0)


def _unit_rows(x: Array) -> Array:
  """x / max(||x||_2, 1e-6) per row, with a gradient that is finite for zero rows."""
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x / jnp.sqrt(jnp.maximum(sq, 1e-12))


def pairwise_sq_dists(x: Array, z: Array) -> Array:
  """Squared Euclidean distances `[n, m]`, ||x_i||^2 + ||z_j||^2 - 2 x_i.z_j, clamped at 0.

  The expansion needs no `[n, m, d]` tensor but carries float32 rounding of about 1e-7 times the
  squared norms, so nearly identical points get a small positive distance. When `z is x` (a
  self-Gram, as `cka` builds) the diagonal is set to exactly 0, so a point's distance to itself
  has neither value nor gradient noise.
  """
  same = z is x
  dt = _acc_dtype(x, z)
  x, z = x.astype(dt), z.astype(dt)
  xz = jnp.matmul(x, z.T, precision=_DIST_PRECISION)
  d2 = jnp.maximum(jnp.sum(x * x, -1)[:, None] + jnp.sum(z * z, -1)[None, :] - 2.0 * xz, 0.0)
  if same:
    d2 = jnp.where(jnp.eye(d2.shape[0], dtype=bool), 0.0, d2)
  return d2


def linear_kernel(x: Array, z: Array) -> Array:
  """k(x, z) = x.z, `[n, m]`."""
  dt = _acc_dtype(x, z)
  return jnp.matmul(x.astype(dt), z.astype(dt).T)


def rbf_kernel(x: Array, z: Array, sigma: float | Array) -> Array:
  """k(x, z) = exp(-||x - z||^2 / (2 sigma^2)), `[n, m]`."""
  return jnp.exp(-pairwise_sq_dists(x, z) / (2.0 * jnp.square(sigma)))


def laplace_kernel(x: Array, z: Array, sigma: float | Array, normalize: bool = True) -> Array:
  """k(x, z) = exp(-||x^ - z^||_2 / sigma), x^ = x / max(||x||_2, 1e-6) if `normalize`. `[n, m]`.

  The distance's square root is floored (`_SQRT_FLOOR`) so identical points get a finite gradient.
  """
  if normalize:
    same, dt = z is x, _acc_dtype(x, z)
    x = _unit_rows(x.astype(dt))
    z = x if same else _unit_rows(z.astype(dt))
  return jnp.exp(-_safe_sqrt(pairwise_sq_dists(x, z)) / sigma)


_KERNELS: dict[str, Callable[..., Array]] = {
    "linear": linear_kernel, "rbf": rbf_kernel, "laplace": laplace_kernel}


def get_kernel(name: str) -> Callable[..., Array]:
  """Kernel function by name; a miss lists the valid names."""
  if name not in _KERNELS:
    raise KeyError(f"Unknown kernel {name!r}; valid kernels are: {sorted(_KERNELS)}")
  return _KERNELS[name]


def center_gram(k: Array) -> Array:
  """H K H with H = I - 11^T/n: subtract row and column means, add back the grand mean."""
  k = k.astype(_acc_dtype(k))
  return (k - jnp.mean(k, 0, keepdims=True) - jnp.mean(k, 1, keepdims=True) + jnp.mean(k))


def _check_square(k: Array, name: str) -> int:
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f"{name} must be a square [n, n] Gram matrix, got shape {k.shape}")
  return k.shape[0]


def _u_center(g: Array, off: Array, nv: Array) -> Array:
  """U-centred Gram (Szekely & Rizzo 2014) over the `nv` samples where `off` -- the valid-pair
  mask, zero on the diagonal -- is 1: G~_ij = G_ij - r_i / (n - 2) - c_j / (n - 2)
  + t / ((n - 1)(n - 2)) for i != j, 0 on the diagonal and for masked samples, with r, c, t the
  row, column and total sums of the off-diagonal entries.
  """
  g = g * off
  r, c = jnp.sum(g, 1), jnp.sum(g, 0)
  den = jnp.maximum(nv - 2.0, 1.0)
  t = jnp.sum(r) / jnp.maximum((nv - 1.0) * (nv - 2.0), 1.0)
  return (g - r[:, None] / den - c[None, :] / den + t) * off


def hsic(k: Array, l: Array, unbiased: bool = False, *, weights: Array | None = None) -> Array:
  """Hilbert-Schmidt independence criterion of two `[n, n]` Gram matrices.

  Biased (Gretton et al. 2005): tr(K H L H) / (n - 1)^2. Unbiased (Song et al. 2012), with
  K~, L~ the Grams with zeroed diagonals:
  [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3)), which needs n >= 4.
  It is computed in the equal U-centred form (Szekely & Rizzo 2014), sum_ij K^_ij L^_ji / (n (n-3))
  with K^, L^ the U-centred Grams: Song et al.'s three terms are each far larger than their sum
  when the Grams have a large common offset (features of mean ~10): in float32 that expansion lost
  4e-4 to 5e-3 relative there, the U-centred form stays below 1e-6 (tests/test_kernels.py).

  Args:
    k, l: `[n, n]` symmetric Gram matrices.
    unbiased: use Song et al.'s unbiased estimator.
    weights: optional `[n]` 0/1 sample mask; masked samples are excluded exactly (the result equals
      HSIC of the valid sub-matrices, with n = number of valid samples). With a mask the sample
      count is only known at run time: fewer than 2 (biased) or 4 (unbiased) valid samples give 0.
  Returns:
    Scalar HSIC (float32, or float64 for float64 inputs).
  """
  n = _check_square(k, "k")
  if _check_square(l, "l") != n:
    raise ValueError(f"k and l must have the same shape, got {k.shape} and {l.shape}")
  if unbiased and n < 4:
    raise ValueError(f"unbiased HSIC needs n >= 4 samples, got n={n} (Gram shape {k.shape})")
  dt = _acc_dtype(k, l)
  k, l = k.astype(dt), l.astype(dt)
  w = jnp.ones((n,), dt) if weights is None else jax.lax.stop_gradient(weights).astype(dt)
  nv = jnp.sum(w)
  ww = w[:, None] * w[None, :]
  if not unbiased:
    # Weighted centring: subtract the means over valid samples only, then zero masked entries.
    def wcenter(g):
      r = g @ w / jnp.maximum(nv, 1.0)
      return (g - r[None, :] - r[:, None] + jnp.dot(w, r) / jnp.maximum(nv, 1.0)) * ww
    val = jnp.sum(wcenter(k) * wcenter(l).T) / jnp.maximum(nv - 1.0, 1.0) ** 2
    return jnp.where(nv >= 2, val, 0.0)
  off = ww * (1.0 - jnp.eye(n, dtype=dt))
  val = jnp.sum(_u_center(k, off, nv) * _u_center(l, off, nv).T) / jnp.maximum(nv * (nv - 3.0), 1.0)
  return jnp.where(nv >= 4, val, 0.0)


def _ratio_or_zero(num: Array, self_x: Array, self_z: Array, scale_x: Array,
                   scale_z: Array) -> Array:
  """num / sqrt(self_x self_z), or 0 if a self-similarity is <= DEGENERATE_RTOL * its scale."""
  ok = (self_x > DEGENERATE_RTOL * scale_x) & (self_z > DEGENERATE_RTOL * scale_z)
  den = jnp.sqrt(jnp.where(ok, self_x * self_z, 1.0))
  return jnp.where(ok, num / den, 0.0)


def cka(x: Array, z: Array, kernel: str = "linear", unbiased: bool = False, *,
        weights: Array | None = None, **kernel_kw) -> Array:
  """Centred kernel alignment in Gram form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

  K = kernel(x, x), L = kernel(z, z); builds two `[n, n]` Grams, so use it for n up to a few
  thousand (`linear_cka` is the O(d^2)-memory form of the linear case).

  Args:
    x: `[n, d1]` features. z: `[n, d2]` features of the same n samples.
    kernel: "linear", "rbf" or "laplace".
    unbiased: use the unbiased HSIC estimator (n >= 4).
    weights: optional `[n]` 0/1 sample mask (see `hsic`).
    **kernel_kw: kernel arguments, e.g. `sigma=1.0` for "rbf"/"laplace".
  Returns:
    Scalar CKA; 0 for degenerate (constant) features, see the module docstring.
  """
  if x.ndim != 2 or z.ndim != 2 or x.shape[0] != z.shape[0]:
    raise ValueError(f"cka needs x [n, d1] and z [n, d2], got {x.shape} and {z.shape}")
  kfn = get_kernel(kernel)
  k, l = kfn(x, x, **kernel_kw), kfn(z, z, **kernel_kw)
  h = lambda a, b: hsic(a, b, unbiased, weights=weights)
  if weights is None:
    scale = lambda g: jnp.sum(g * g)
  else:
    wd = jax.lax.stop_gradient(weights).astype(k.dtype)
    scale = lambda g: jnp.sum(g * g * wd[:, None] * wd[None, :])
  n_eff = x.shape[0] if weights is None else jnp.sum(wd)
  # Uncentred Gram energy with HSIC's normalisation: the upper bound of the biased HSIC(K, K).
  norm = 1.0 / jnp.maximum(n_eff - 1.0, 1.0) ** 2
  return _ratio_or_zero(h(k, l), h(k, k), h(l, l), scale(k) * norm, scale(l) * norm)


def linear_cka(x: Array, z: Array, *, weights: Array | None = None) -> Array:
  """Linear CKA in feature space: ||X~' Z~||_F^2 / (||X~' X~||_F ||Z~' Z~||_F).

  X~, Z~ are the column-centred features. Equal to `cka(x, z, kernel="linear")` (biased HSIC), but
  needs only `[d1, d2]`-sized intermediates beyond a centred copy of the inputs, so any n works.

  Args:
    x: `[n, d1]`. z: `[n, d2]`.
    weights: optional `[n]` non-negative sample weights (a 0/1 mask excludes samples exactly):
      means are weighted and each sample's outer product is weighted. Not differentiated.
  Returns:
    Scalar CKA in [0, 1]; 0 for degenerate (constant or zero) features.
  """
  if x.ndim != 2 or z.ndim != 2 or x.shape[0] != z.shape[0]:
    raise ValueError(f"linear_cka needs x [n, d1] and z [n, d2], got {x.shape} and {z.shape}")
  dt = _acc_dtype(x, z)
  x, z = x.astype(dt), z.astype(dt)
  if weights is None:
    xc, zc = x - jnp.mean(x, 0), z - jnp.mean(z, 0)
    sx, sz = jnp.sum(x * x), jnp.sum(z * z)
  else:
    w = jax.lax.stop_gradient(weights).astype(dt)[:, None]
    sw = jnp.maximum(jnp.sum(w), jnp.finfo(dt).tiny)
    # sqrt(w) on both sides makes X~'Z~ = sum_i w_i x~_i z~_i'; a 0/1 mask drops rows exactly.
    rw = jnp.sqrt(w)
    xc = (x - jnp.sum(w * x, 0) / sw) * rw
    zc = (z - jnp.sum(w * z, 0) / sw) * rw
    sx, sz = jnp.sum(w * x * x), jnp.sum(w * z * z)
  fro = lambda a, b: jnp.sum(jnp.square(a.T @ b))  # ||a'b||_F^2
  hxz, fxx, fzz = fro(xc, zc), fro(xc, xc), fro(zc, zc)
  # Degeneracy test of ||X~'X~||_F against the uncentred ||X||_F^2 (an upper bound of ||X'X||_F),
  # squared on both sides; the sqrt is taken only where the test passes, so the gradient is
  # exactly 0 (not 0 * inf) when it fails.
  rtol2 = DEGENERATE_RTOL ** 2
  ok = (fxx > rtol2 * sx * sx) & (fzz > rtol2 * sz * sz)
  return jnp.where(ok, hxz / jnp.sqrt(jnp.where(ok, fxx * fzz, 1.0)), 0.0)


def _pad_rows(a: Array, rows: int) -> Array:
  return jnp.pad(a, [(0, rows - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


# Unit rows (or zero rows) are at distance <= 2, so scores are >= -2 / sigma >= -80 here:
# exp(-80) ~ 1.8e-35 is still a normal float32, and every term is <= 1, so no shift is needed.
MIN_BOUNDED_SIGMA = 1.0 / 40.0


def _laplace_scores(qi: Array, qsq: Array, kj: Array, ksqj: Array, sigma: float | Array) -> Array:
  """`-||q - k||_2 / sigma` for a query block `[bq, d]` and a key block `[bk, d]`; `qsq`, `ksqj`
  are their squared row norms (computed once per block by the caller)."""
  d2 = qsq[:, None] + ksqj[None, :] - 2.0 * jnp.matmul(qi, kj.T, precision=_DIST_PRECISION)
  return -_safe_sqrt(jnp.maximum(d2, 0.0)) / sigma


def values_with_ones(values: Array, mask: Array) -> Array:
  """`[..., m, C]` values -> `[..., m, C + 1]`: a ones column appended (the Nadaraya-Watson
  denominator rides along in the value matmul), rows of masked keys zeroed. See `divide_by_ones`."""
  ones = jnp.ones(values.shape[:-1] + (1,), values.dtype)
  return jnp.concatenate([values, ones], -1) * mask[..., None].astype(values.dtype)


def divide_by_ones(acc: Array) -> Array:
  """`[..., C + 1]` sums of weight * [v, 1] -> `[..., C]` weighted means; 0 where no weight."""
  denom = acc[..., -1:]
  return acc[..., :-1] / jnp.where(denom > 0, denom, 1.0)


def _bounded_regression(qb: Array, kb: Array, vb: Array, mb: Array, ksq: Array,
                        sigma: float) -> Array:
  """Blocked Nadaraya-Watson for scores in [-2 / sigma, 0]: `[nq, bq, d]` queries -> `[nq, bq, C]`.

  The weights exp(score) are summed as they are (no running max): the denominator rides along as
  a ones column of the values, so each key block costs two matmuls and one elementwise pass.
  """
  # Masked (and padded) keys contribute nothing: their value row, ones column included, is zero.
  vb1 = values_with_ones(vb, mb)

  @jax.checkpoint
  def query_block(qi):
    qsq = jnp.sum(qi * qi, -1)

    @jax.checkpoint
    def key_step(acc, blk):
      kj, vj, ksqj = blk
      return acc + jnp.exp(_laplace_scores(qi, qsq, kj, ksqj, sigma)) @ vj, None

    acc, _ = jax.lax.scan(key_step, jnp.zeros((qi.shape[0], vb1.shape[-1]), qi.dtype),
                          (kb, vb1, ksq))
    return divide_by_ones(acc)

  return jax.lax.map(query_block, qb)


def kernel_regression(queries: Array, keys: Array, values: Array, *, sigma: float | Array,
                      block_size: int = 1024, key_mask: Array | None = None,
                      normalize: bool = True) -> Array:
  """Laplace-kernel Nadaraya-Watson regression, streamed so no `[n, m]` matrix is formed.

  R_i = sum_j k(q_i, k_j) v_j / sum_j k(q_i, k_j), k(q, k) = exp(-||q^ - k^||_2 / sigma) (§2.4).
  Queries are processed in blocks (`lax.map`), and for each block the key blocks in a `lax.scan`.
  With unit-normalised rows (`normalize`) and a concrete sigma >= `MIN_BOUNDED_SIGMA`, every
  score -||q^ - k^|| / sigma lies in [-2 / sigma, 0], so exp neither overflows nor underflows:
  the scan then just sums `k @ [v, 1]` (numerator and denominator in one matmul, no running max).
  Otherwise (raw features, a traced or tiny sigma) it runs an online log-sum-exp with a running
  max, as in flash attention. Peak memory is
  O(block_size^2 + block_size * C) per step; both loops are rematerialised (`jax.checkpoint`) so
  the backward pass stays at O(m / block_size * block_size * C) too. n and m need not be multiples
  of `block_size`: rows are padded and padded keys masked.

  Args:
    queries: `[n, d]`. keys: `[m, d]`. values: `[m, C]`.
    sigma: Laplace bandwidth (on unit-normalised features distances lie in [0, 2]).
    block_size: rows per query block and per key block.
    key_mask: optional `[m]` bool; False keys get weight 0. A query with no valid key gets 0.
    normalize: unit-normalise queries and keys first (as §2.4); required for the bounded path.
  Returns:
    `[n, C]`, float32 (float64 for float64 inputs).

  Batched: `jax.vmap(functools.partial(kernel_regression, sigma=s))(q, k, v)` for `[B, n, d]`.
  """
  if queries.ndim != 2 or keys.ndim != 2 or values.ndim != 2:
    raise ValueError(f"kernel_regression needs 2-D queries, keys, values; got {queries.shape}, "
                     f"{keys.shape}, {values.shape}")
  (n, d), m = queries.shape, keys.shape[0]
  if keys.shape[1] != d or values.shape[0] != m:
    raise ValueError(f"shape mismatch: queries {queries.shape}, keys {keys.shape}, "
                     f"values {values.shape}")
  if key_mask is not None and key_mask.shape != (m,):
    raise ValueError(f"key_mask must have shape ({m},), got {key_mask.shape}")
  dt = _acc_dtype(queries, keys, values)
  q, k, v = queries.astype(dt), keys.astype(dt), values.astype(dt)
  if normalize:
    q, k = _unit_rows(q), _unit_rows(k)
  mask = jnp.ones((m,), bool) if key_mask is None else key_mask.astype(bool)
  bq, bk = min(block_size, n), min(block_size, m)
  nq, nk = math.ceil(n / bq), math.ceil(m / bk)
  qb = _pad_rows(q, nq * bq).reshape(nq, bq, d)
  kb = _pad_rows(k, nk * bk).reshape(nk, bk, d)
  vb = _pad_rows(v, nk * bk).reshape(nk, bk, -1)
  mb = _pad_rows(mask, nk * bk).reshape(nk, bk)
  ksq = jnp.sum(kb * kb, -1)
  if normalize and isinstance(sigma, (int, float)) and sigma >= MIN_BOUNDED_SIGMA:
    return _bounded_regression(qb, kb, vb, mb, ksq, sigma).reshape(nq * bq, -1)[:n]

  @jax.checkpoint
  def query_block(qi):
    qsq = jnp.sum(qi * qi, -1)

    @jax.checkpoint
    def key_step(carry, blk):
      run_max, denom, acc = carry
      kj, vj, mj, ksqj = blk
      s = jnp.where(mj[None, :], _laplace_scores(qi, qsq, kj, ksqj, sigma), -jnp.inf)
      # The max only stabilises exp; the result does not depend on it, so no gradient through it.
      new_max = jax.lax.stop_gradient(jnp.maximum(run_max, jnp.max(s, -1)))
      safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)  # all keys so far masked
      p = jnp.exp(s - safe_max[:, None])
      corr = jnp.exp(run_max - safe_max)
      return (new_max, denom * corr + jnp.sum(p, -1), acc * corr[:, None] + p @ vj), None

    init = (jnp.full((bq,), -jnp.inf, dt), jnp.zeros((bq,), dt),
            jnp.zeros((bq, vb.shape[-1]), dt))
    (_, denom, acc), _ = jax.lax.scan(key_step, init, (kb, vb, mb, ksq))
    return acc / jnp.where(denom > 0, denom, 1.0)[:, None]

  out = jax.lax.map(query_block, qb)
  return out.reshape(nq * bq, -1)[:n]
