"""lix_jax.kernels against independent float64 NumPy implementations of the formulas."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lix_jax import kernels as K

RNG = np.random.default_rng(0)


def _randn(*shape):
  return RNG.normal(size=shape).astype(np.float32)


# ---- NumPy references (float64, written from the formulas) ---------------------------------------
def np_sqd(x, z):
  x, z = np.float64(x), np.float64(z)
  return ((x[:, None, :] - z[None, :, :]) ** 2).sum(-1)


def np_unit(x):
  x = np.float64(x)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def np_kernel(name, x, z, sigma=None, normalize=True):
  if name == "linear":
    return np.float64(x) @ np.float64(z).T
  if name == "rbf":
    return np.exp(-np_sqd(x, z) / (2 * sigma ** 2))
  if normalize:
    x, z = np_unit(x), np_unit(z)
  return np.exp(-np.sqrt(np_sqd(x, z)) / sigma)


def np_h(n):
  return np.eye(n) - np.ones((n, n)) / n


def np_hsic_b(k, l):
  n = k.shape[0]
  h = np_h(n)
  return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def np_hsic_u(k, l):
  n = k.shape[0]
  kt, lt = k.copy(), l.copy()
  np.fill_diagonal(kt, 0)
  np.fill_diagonal(lt, 0)
  one = np.ones(n)
  return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
          - 2 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


def np_cka(x, z, name="linear", unbiased=False, **kw):
  k, l = np_kernel(name, x, x, **kw), np_kernel(name, z, z, **kw)
  h = np_hsic_u if unbiased else np_hsic_b
  return h(k, l) / np.sqrt(h(k, k) * h(l, l))


def np_kernel_regression(q, k, v, sigma, mask=None):
  w = np_kernel("laplace", q, k, sigma=sigma)
  if mask is not None:
    w = w * mask[None, :]
  return (w @ np.float64(v)) / w.sum(1, keepdims=True)


# ---- Kernels, centring, HSIC ---------------------------------------------------------------------
def test_kernels_match_numpy():
  x, z = _randn(9, 5), _randn(7, 5)
  np.testing.assert_allclose(K.pairwise_sq_dists(x, z), np_sqd(x, z), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(K.linear_kernel(x, z), np_kernel("linear", x, z), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(K.rbf_kernel(x, z, 1.7), np_kernel("rbf", x, z, 1.7), rtol=1e-5,
                             atol=1e-6)
  for normalize in (True, False):
    np.testing.assert_allclose(K.laplace_kernel(x, z, 0.6, normalize=normalize),
                               np_kernel("laplace", x, z, 0.6, normalize), rtol=1e-4, atol=1e-6)
  with pytest.raises(KeyError, match="valid kernels"):
    K.get_kernel("cosine")


def test_center_gram_and_hsic_match_numpy():
  n = 11
  x, z = _randn(n, 4), _randn(n, 6)
  k = np.float32(np_kernel("rbf", x, x, 2.0))
  l = np.float32(np_kernel("laplace", z, z, 1.0))
  np.testing.assert_allclose(K.center_gram(np.float32(k)), np_h(n) @ k @ np_h(n), atol=1e-6)
  np.testing.assert_allclose(K.hsic(k, l), np_hsic_b(k, l), rtol=1e-5)
  np.testing.assert_allclose(K.hsic(k, l, unbiased=True), np_hsic_u(k, l), rtol=1e-4)
  # A 0/1 mask equals computing on the valid sub-matrices alone.
  w = np.array([1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1], np.float32)
  sel = np.flatnonzero(w)
  ks, ls = k[np.ix_(sel, sel)], l[np.ix_(sel, sel)]
  np.testing.assert_allclose(K.hsic(k, l, weights=w), np_hsic_b(ks, ls), rtol=1e-5)
  np.testing.assert_allclose(K.hsic(k, l, True, weights=w), np_hsic_u(ks, ls), rtol=1e-4)
  with pytest.raises(ValueError, match="n >= 4"):
    K.hsic(k[:3, :3], l[:3, :3], unbiased=True)
  with pytest.raises(ValueError, match="square"):
    K.hsic(k[:3], l[:3])


def test_unbiased_hsic_equals_song_estimator_in_float64():
  # The U-centred form is algebraically Song et al.'s estimator: equal to rounding in float64.
  with jax.enable_x64(True):
    for n in (4, 5, 17):
      x, z = RNG.normal(size=(n, 3)), RNG.normal(size=(n, 4))
      k, l = np_kernel("rbf", x, x, 1.5), np_kernel("linear", z, z)
      got = K.hsic(k, l, unbiased=True)
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(got, np_hsic_u(k, l), rtol=1e-12, atol=1e-15)
    w = np.array([1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1], np.float64)
    sel = np.flatnonzero(w)
    np.testing.assert_allclose(K.hsic(k, l, True, weights=w),
                               np_hsic_u(k[np.ix_(sel, sel)], l[np.ix_(sel, sel)]), rtol=1e-12)


@pytest.mark.parametrize("n,d", [(64, 16), (128, 32)])
def test_float32_precision_with_large_mean_features(n, d):
  # Post-ReLU-like features of mean ~10: uncentred Grams carry a large common offset. Expanding
  # Song et al.'s unbiased formula on them lost 4e-4 to 5e-3 relative in float32.
  rng = np.random.default_rng(n)
  x = np.maximum(rng.normal(10, 3, (n, d)), 0).astype(np.float32)
  z = np.maximum(rng.normal(10, 3, (n, d + 3)), 0).astype(np.float32)
  z[:, :d] = 0.5 * z[:, :d] + 0.5 * x
  for name, kw in [("linear", {}), ("rbf", {"sigma": 3.0 * np.sqrt(2.0 * d)})]:
    k32, l32 = K.get_kernel(name)(x, x, **kw), K.get_kernel(name)(z, z, **kw)
    k64, l64 = np_kernel(name, x, x, **kw), np_kernel(name, z, z, **kw)
    assert k32.dtype == jnp.float32
    for unbiased, ref in ((True, np_hsic_u), (False, np_hsic_b)):
      np.testing.assert_allclose(K.hsic(k32, l32, unbiased), ref(k64, l64), rtol=1e-5,
                                 err_msg=f"hsic {name} unbiased={unbiased}")
      np.testing.assert_allclose(K.cka(x, z, name, unbiased, **kw),
                                 np_cka(x, z, name, unbiased, **kw), rtol=1e-5,
                                 err_msg=f"cka {name} unbiased={unbiased}")
    # Centring itself adds no error beyond the float32 Gram's own rounding (~4e-6 here).
    cref = np_h(n) @ k64 @ np_h(n)
    err = np.linalg.norm(np.float64(K.center_gram(k32)) - cref) / np.linalg.norm(cref)
    assert err < 1e-5, (name, err)


# ---- CKA -----------------------------------------------------------------------------------------
def test_cka_matches_numpy():
  x = _randn(24, 6)
  z = np.float32(x[:, :4] @ _randn(4, 5) + 0.7 * _randn(24, 5))
  for name, kw in [("linear", {}), ("rbf", {"sigma": 2.5}), ("laplace", {"sigma": 0.8})]:
    np.testing.assert_allclose(K.cka(x, z, name, **kw), np_cka(x, z, name, **kw), rtol=1e-4,
                               err_msg=name)
  np.testing.assert_allclose(K.cka(x, z, unbiased=True), np_cka(x, z, unbiased=True), rtol=1e-4)
  np.testing.assert_allclose(K.linear_cka(x, z), np_cka(x, z), rtol=1e-5)
  np.testing.assert_allclose(K.linear_cka(x, z), K.cka(x, z, "linear"), rtol=1e-5)
  # Masked samples are excluded exactly, in both forms.
  w = (RNG.random(24) > 0.4).astype(np.float32)
  sel = np.flatnonzero(w)
  np.testing.assert_allclose(K.linear_cka(x, z, weights=w), np_cka(x[sel], z[sel]), rtol=1e-5)
  np.testing.assert_allclose(K.cka(x, z, "laplace", weights=w, sigma=0.8),
                             np_cka(x[sel], z[sel], "laplace", sigma=0.8), rtol=1e-4)


def test_cka_identity_and_invariances():
  x = _randn(30, 6)
  q, _ = np.linalg.qr(RNG.normal(size=(6, 6)))
  xq, xs = np.float32(x @ q), np.float32(3.7 * x)
  np.testing.assert_allclose(K.linear_cka(x, x), 1.0, rtol=1e-6)
  for name, kw in [("linear", {}), ("rbf", {"sigma": 2.0}), ("laplace", {"sigma": 0.5})]:
    np.testing.assert_allclose(K.cka(x, x, name, **kw), 1.0, rtol=1e-5, err_msg=name)
  z = _randn(30, 6) + x
  base = float(K.linear_cka(x, z))
  assert 0.1 < base < 0.99
  # Linear CKA: invariant to orthogonal maps and isotropic scaling of either side.
  np.testing.assert_allclose(K.linear_cka(xq, z), base, rtol=1e-5)
  np.testing.assert_allclose(K.linear_cka(xs, z), base, rtol=1e-5)
  np.testing.assert_allclose(K.cka(xq, z), K.cka(x, z), rtol=1e-5)
  # RBF (fixed sigma) is orthogonally invariant; normalised Laplace also scale invariant.
  np.testing.assert_allclose(K.cka(xq, z, "rbf", sigma=2.0), K.cka(x, z, "rbf", sigma=2.0),
                             rtol=1e-4)
  lap = float(K.cka(x, z, "laplace", sigma=0.5))
  np.testing.assert_allclose(K.cka(xq, z, "laplace", sigma=0.5), lap, rtol=1e-4)
  np.testing.assert_allclose(K.cka(xs, z, "laplace", sigma=0.5), lap, rtol=1e-4)
  # And a non-isotropic scaling does change linear CKA (the test can fail).
  assert abs(float(K.linear_cka(x * np.arange(1, 7, dtype=np.float32), z)) - base) > 1e-3


def test_degenerate_inputs_are_finite():
  x = _randn(16, 4)

  @jax.jit
  def values_and_grads(a):
    out = {}
    for name in ("linear", "rbf", "laplace"):
      f = lambda a, name=name: K.cka(a, x, name, **({} if name == "linear" else {"sigma": 1.0}))
      out[name] = jax.value_and_grad(f)(a)
    out["linear_cka"] = jax.value_and_grad(K.linear_cka)(a, x)
    # Identical queries and keys (distance exactly 0) and zero vectors: finite gradients.
    kr = lambda q: jnp.sum(K.kernel_regression(q, a, x, sigma=0.5, block_size=8))
    out["kr"] = jax.value_and_grad(kr)(a)
    return out

  for const in (np.full((16, 4), 0.1, np.float32), np.zeros((16, 4), np.float32)):
    out = values_and_grads(const)
    for name, (val, grad) in out.items():
      assert np.isfinite(float(val)) and np.all(np.isfinite(grad)), name
    for name in ("linear", "linear_cka"):  # documented: CKA := 0 for degenerate features
      assert float(out[name][0]) == 0.0 and np.all(np.asarray(out[name][1]) == 0), name


# ---- Kernel regression ---------------------------------------------------------------------------
# sigma as a Python float takes the bounded path (no running max); as an array (traced) or below
# MIN_BOUNDED_SIGMA the online log-sum-exp path. Both must match the dense NumPy formula.
@pytest.mark.parametrize("sigma", [0.4, np.float32(0.4), 0.02], ids=["bounded", "traced", "tiny"])
def test_kernel_regression_streaming_matches_dense(sigma):
  n, m, c = 37, 53, 3
  q, k, v = _randn(n, 5), _randn(m, 5), _randn(m, c)
  mask = RNG.random(m) > 0.35
  mask[:16] = False  # whole key blocks masked at block size 7 and 16 (the -inf path)
  expect, expect_masked = (np_kernel_regression(q, k, v, float(sigma), mk) for mk in (None, mask))
  for bs in (7, 16, 64):
    if isinstance(sigma, float):
      kr = jax.jit(functools.partial(K.kernel_regression, sigma=sigma, block_size=bs))
    else:
      kr = jax.jit(lambda q, k, v, key_mask=None, s=sigma, bs=bs: K.kernel_regression(
          q, k, v, sigma=jnp.asarray(s), block_size=bs, key_mask=key_mask))
    np.testing.assert_allclose(kr(q, k, v), expect, rtol=1e-4, atol=1e-5, err_msg=f"block_size={bs}")
    np.testing.assert_allclose(kr(q, k, v, key_mask=mask), expect_masked, rtol=1e-4, atol=1e-5,
                               err_msg=f"block_size={bs}, masked")
    out = kr(q, k, v, key_mask=np.zeros(m, bool))
    assert out.shape == (n, c) and np.all(np.asarray(out) == 0)
  with pytest.raises(ValueError, match="key_mask"):
    K.kernel_regression(q, k, v, sigma=0.4, key_mask=np.ones(m + 1, bool))


def test_fused_kernel_regression_matches_numpy():
  """The Pallas kernel (interpret mode on CPU) against the dense NumPy formula: odd sizes that
  need padding of rows and feature columns, several query and key blocks, masked keys, an image
  with no valid key, and bf16 inputs."""
  from lix_jax import kr_fused
  b, n, m, d, c = 3, 45, 70, 5, 3
  q, k, v = _randn(b, n, d), _randn(b, m, d), _randn(b, m, c)
  mask = RNG.random((b, m)) > 0.3
  mask[2] = False
  got = jax.jit(functools.partial(kr_fused.kernel_regression_fused, sigma=0.45, block_q=16,
                                  block_k=32))(q, k, v, key_mask=mask)
  assert got.shape == (b, n, c) and got.dtype == jnp.float32
  for i in range(2):
    np.testing.assert_allclose(got[i], np_kernel_regression(q[i], k[i], v[i], 0.45, mask[i]),
                               rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(got[2]) == 0)
  got_bf16 = kr_fused.kernel_regression_fused(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)),
                                              sigma=0.45)
  bf = lambda a: np.float64(np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32))
  np.testing.assert_allclose(got_bf16[0], np_kernel_regression(bf(q[0]), bf(k[0]), bf(v[0]), 0.45),
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="sigma"):
    kr_fused.kernel_regression_fused(q, k, v, sigma=0.01)
  with pytest.raises(ValueError, match="block_k"):
    kr_fused.kernel_regression_fused(q, k, v, sigma=0.45, block_k=48)
  with pytest.raises(ValueError, match="key_mask"):
    kr_fused.kernel_regression_fused(q, k, v, sigma=0.45, key_mask=mask[:, :5])


def test_fused_default_blocks_fit_shared_memory():
  """Default tiles: powers of two in [16, 128], within the shared-memory budget by the estimate
  (recomputed here), query blocks below 128 only where 2x the queries would not fit even with
  32-key blocks, and the documented picks at the taps timed on an H100."""
  from lix_jax import kr_fused
  est = lambda bq, bk, p: 4 * (2 * bq * p + 2 * bk * 2 * p + bq * bk)
  hopper = kr_fused.HOPPER_SMEM_BUDGET_BYTES
  assert kr_fused.smem_budget("NVIDIA H100 80GB HBM3") == hopper
  assert kr_fused.smem_budget("NVIDIA A100-SXM4-40GB") == hopper * 163 // 227
  assert kr_fused.smem_budget("NVIDIA L4") == hopper * 99 // 227  # unknown: the common limit
  for budget in (hopper, kr_fused.smem_budget("A100"), kr_fused.smem_budget("L4")):
    for c in (3, 16, 24, 32, 64, 96, 128, 256, 512):
      bq, bk, warps = kr_fused.default_blocks(c, c, budget=budget)
      p = max(16, 1 << (c - 1).bit_length())
      assert all(16 <= x <= 128 and x & (x - 1) == 0 for x in (bq, bk)), (c, bq, bk)
      assert est(bq, bk, p) <= budget or (bq, bk) == (16, 16), (c, budget)
      assert bq == 128 or est(2 * bq, 32, p) > budget  # queries shrink only when they must
      assert warps == (8 if bq * 2 * p >= 16384 else 4)
  assert [kr_fused.default_blocks(c, c) for c in (32, 128, 256)] == [
      (128, 64, 4), (128, 32, 8), (32, 32, 8)]


def test_fused_device_blocks_use_this_gpus_budget(monkeypatch):
  """Tiles for a kernel lowered on a GPU host follow that GPU's shared memory (here a pretend L4);
  for another platform, or on a CPU host, the H100 budget."""
  from types import SimpleNamespace
  from lix_jax import kr_fused
  hopper = kr_fused.default_blocks(128, 128)
  assert kr_fused.device_blocks(128, 128) == hopper  # this CPU host
  assert kr_fused.device_blocks(128, 128, backend="gpu") == hopper  # a GPU export from a CPU host
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax, "devices", lambda *a: [SimpleNamespace(device_kind="NVIDIA L4")])
  l4 = kr_fused.default_blocks(128, 128, budget=kr_fused.smem_budget("NVIDIA L4"))
  assert l4 != hopper
  assert kr_fused.device_blocks(128, 128) == l4
  assert kr_fused.device_blocks(128, 128, backend="tpu") == hopper


@pytest.mark.parametrize("platform,backend,target", [
    ("cuda", "gpu", "__gpu$xla.gpu.triton"), ("tpu", "tpu", "tpu_custom_call")])
def test_fused_kernel_regression_lowers_for_accelerators(platform, backend, target):
  """Compiled (not interpreted) lowering for GPUs and TPUs, from this CPU host: on a GPU the
  kernel must go through Triton (a bare pallas_call would pick Mosaic GPU, which cannot lower
  its row reductions), on a TPU through Mosaic."""
  from jax import export
  from lix_jax import kr_fused
  fn = jax.jit(functools.partial(kr_fused.kernel_regression_fused, sigma=0.5, interpret=False,
                                 backend=backend))
  spec = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  exported = export.export(fn, platforms=[platform], disabled_checks=[
      export.DisabledSafetyCheck.custom_call(target)])(spec(2, 300, 24), spec(2, 150, 24),
                                                       spec(2, 150, 19))
  assert target in exported.mlir_module()
  assert exported.out_avals[0].shape == (2, 300, 19)
  with pytest.raises(ValueError, match="backend"):
    kr_fused.kernel_regression_fused(np.ones((1, 4, 2)), np.ones((1, 4, 2)), np.ones((1, 4, 1)),
                                     sigma=0.5, backend="rocm")


def _dense_kr_jnp(q, k, v, sigma, mask):
  """Dense jnp reference: differentiable, independent of the streaming code."""
  qn = q / jnp.linalg.norm(q, axis=1, keepdims=True)
  kn = k / jnp.linalg.norm(k, axis=1, keepdims=True)
  d = jnp.sqrt(jnp.sum((qn[:, None] - kn[None]) ** 2, -1))
  w = jnp.exp(-d / sigma) * mask[None, :]
  return (w @ v) / jnp.sum(w, 1, keepdims=True)


def test_gradients():
  q, k, v = _randn(13, 4), _randn(19, 4), _randn(19, 3)
  mask = RNG.random(19) > 0.3
  proj = _randn(13, 3)
  f_stream = lambda q, k, v: jnp.sum(proj * K.kernel_regression(q, k, v, sigma=0.5, block_size=5,
                                                                 key_mask=mask))
  # The same with sigma as an array: the online log-sum-exp path.
  f_online = lambda q, k, v: jnp.sum(proj * K.kernel_regression(
      q, k, v, sigma=jnp.asarray(0.5), block_size=5, key_mask=mask))
  f_dense = lambda q, k, v: jnp.sum(proj * _dense_kr_jnp(q, k, v, 0.5, mask))
  grads = lambda f: jax.jit(jax.grad(f, (0, 1, 2)))(q, k, v)
  for f in (f_stream, f_online):
    for gs, gd in zip(grads(f), grads(f_dense)):
      np.testing.assert_allclose(gs, gd, rtol=1e-3, atol=1e-5)
  # linear_cka: directional central differences in float64.
  with jax.enable_x64(True):
    x, z = RNG.normal(size=(20, 5)), RNG.normal(size=(20, 4))
    z[:, :3] += x[:, :3]
    g = np.asarray(jax.jit(jax.grad(K.linear_cka))(x, z))
    f = jax.jit(K.linear_cka)
    for _ in range(3):
      dirn, eps = RNG.normal(size=x.shape), 1e-6
      fd = (float(f(x + eps * dirn, z)) - float(f(x - eps * dirn, z))) / (2 * eps)
      np.testing.assert_allclose(np.sum(g * dirn), fd, rtol=1e-6, atol=1e-9)


# ---- dtypes and vmap -----------------------------------------------------------------------------
def test_bfloat16_inputs_accumulate_in_float32():
  x, z = _randn(64, 8), _randn(64, 8)
  z = z + x
  v = _randn(64, 4)
  xb, zb, vb = (jnp.asarray(a, jnp.bfloat16) for a in (x, z, v))
  up = lambda a: np.asarray(a.astype(jnp.float32))
  cases = [
      (K.linear_cka, (xb, zb)),
      (functools.partial(K.cka, kernel="rbf", sigma=3.0), (xb, zb)),
      (functools.partial(K.kernel_regression, sigma=0.5, block_size=24), (xb, zb, vb)),
  ]
  for fn, args in cases:
    out = fn(*args)
    assert out.dtype == jnp.float32
    # Same values as float32 on the bf16-rounded inputs, and close to float32 on the originals.
    np.testing.assert_allclose(out, fn(*[up(a) for a in args]), rtol=1e-5, atol=1e-6)
    orig = fn(*[np.float32(a) for a in (x, z, v)[:len(args)]])
    np.testing.assert_allclose(out, orig, rtol=3e-2, atol=3e-2)


def test_vmap_over_batch():
  xb, zb, vb = _randn(3, 20, 5), _randn(3, 20, 4), _randn(3, 20, 2)
  qb = _randn(3, 11, 5)
  got = jax.jit(jax.vmap(K.linear_cka))(xb, zb)
  got_g = jax.jit(jax.vmap(lambda a, b: K.cka(a, b, "laplace", sigma=0.7)))(xb, zb)
  kr = functools.partial(K.kernel_regression, sigma=0.6, block_size=6)
  got_kr = jax.jit(jax.vmap(kr))(qb, xb, vb)
  for i in range(3):
    np.testing.assert_allclose(got[i], np_cka(xb[i], zb[i]), rtol=1e-5)
    np.testing.assert_allclose(got_g[i], np_cka(xb[i], zb[i], "laplace", sigma=0.7), rtol=1e-4)
    np.testing.assert_allclose(got_kr[i], np_kernel_regression(qb[i], xb[i], vb[i], 0.6),
                               rtol=1e-4, atol=1e-5)
