"""lix_jax.losses.feature against NumPy implementations of the formulas (DESIGN §2.4)."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from lix_jax.losses import feature as F

RNG = np.random.default_rng(1)
B, H, W, C = 4, 6, 8, 5
MASK_HW = (11, 13)  # label resolution: not a multiple of the feature resolution


# ---- NumPy references ----------------------------------------------------------------------------
def np_index(src, dst):
  return np.minimum(np.floor((np.arange(dst) + 0.5) * src / dst).astype(int), src - 1)


def np_resize(mask, h, w):
  return mask[:, np_index(mask.shape[1], h)][:, :, np_index(mask.shape[2], w)]


def np_sqd(x, z):
  return ((x[:, None, :] - z[None, :, :]) ** 2).sum(-1)


def np_unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def np_nw(q, k, sigma):
  """Laplace Nadaraya-Watson with keys as values."""
  w = np.exp(-np.sqrt(np_sqd(np_unit(q), np_unit(k))) / sigma)
  return w @ k / w.sum(1, keepdims=True)


def np_kr_target(a, t, m, sigma, mix, stride):
  out = np.empty_like(t)
  for b in range(a.shape[0]):
    keys = t[b, ::stride, ::stride].reshape(-1, t.shape[-1])
    km = m[b, ::stride, ::stride].reshape(-1)
    r = np_nw(a[b].reshape(-1, a.shape[-1]), keys[km], sigma) if km.any() else t[b].reshape(
        -1, t.shape[-1])
    out[b] = (1 - mix) * t[b] + mix * r.reshape(t[b].shape)
  return out


def np_hsic(k, l):
  n = k.shape[0]
  h = np.eye(n) - 1.0 / n
  return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def np_gram(kernel, x, sigma):
  if kernel == "linear":
    return x @ x.T
  if kernel == "laplace":
    return np.exp(-np.sqrt(np_sqd(np_unit(x), np_unit(x))) / sigma)
  bw = sigma * np.sqrt(np_sqd(x, x).mean())  # documented: sigma * RMS pairwise distance
  return np.exp(-np_sqd(x, x) / (2 * bw ** 2))


def np_cka(x, z, kernel="linear", sigma=1.0):
  k, l = np_gram(kernel, x, sigma), np_gram(kernel, z, sigma)
  return np_hsic(k, l) / np.sqrt(np_hsic(k, k) * np_hsic(l, l))


def np_arfd(s, t, m, *, sigma, mix, kernel, stride, max_pixels, lambda_kr=1.0, lambda_cka=1.0):
  s, t = np.float64(s), np.float64(t)
  tt = np_kr_target(s, t, m, sigma, mix, stride)
  kr = (((s - tt) ** 2).mean(-1) * m).sum() / m.sum()
  sub = 1
  if kernel != "linear":
    while math.ceil(s.shape[1] / sub) * math.ceil(s.shape[2] / sub) > max_pixels:
      sub += 1
  ckas = []
  for b in range(s.shape[0]):
    mb = m[b, ::sub, ::sub].reshape(-1)
    if mb.sum() >= 2:
      x = s[b, ::sub, ::sub].reshape(-1, s.shape[-1])[mb]
      z = t[b, ::sub, ::sub].reshape(-1, t.shape[-1])[mb]
      ckas.append(np_cka(x, z, kernel, sigma))
  cka = np.mean(ckas)
  return lambda_kr * kr + lambda_cka * (1 - cka), kr, cka


def np_log_softmax(z):
  z = z - z.max(0)
  return z - np.log(np.exp(z).sum(0))


def np_cwd(s, t, m, tau):
  total, count = 0.0, 0
  for b in range(s.shape[0]):
    mb = m[b].reshape(-1)
    if mb.any():
      lq = np_log_softmax(np.float64(s[b]).reshape(-1, s.shape[-1])[mb] / tau)
      lp = np_log_softmax(np.float64(t[b]).reshape(-1, t.shape[-1])[mb] / tau)
      total += tau ** 2 * (np.exp(lp) * (lp - lq)).sum()
      count += s.shape[-1]
  return total / count


def np_at(s, t, m, p):
  out = []
  for b in range(s.shape[0]):
    mb = m[b].reshape(-1)
    if mb.any():
      a = [(np.abs(np.float64(f[b])) ** p).mean(-1).reshape(-1)[mb] for f in (s, t)]
      a = [v / np.linalg.norm(v) for v in a]
      out.append(((a[0] - a[1]) ** 2).sum())
  return np.mean(out)


def _make_mask(b, counts_override=None):
  """Random label-resolution mask; per-image overrides force exactly 0 or 1 valid feature pixel."""
  mask = RNG.random((b,) + MASK_HW) > 0.4
  for i, kind in (counts_override or {}).items():
    mask[i] = False
    if kind == 1:
      mask[i, np_index(MASK_HW[0], H)[2], np_index(MASK_HW[1], W)[3]] = True
  return mask


def _feats(b=B, c=C):
  s = RNG.normal(size=(b, H, W, c)).astype(np.float32)
  t = (0.8 * s + 0.6 * RNG.normal(size=(b, H, W, c))).astype(np.float32)
  return s, t


# ---- Tests ---------------------------------------------------------------------------------------
def test_resolve_kr_impl():
  """"auto" picks the fused kernel only on GPUs, for a bounded Python sigma and a tap with at
  least PALLAS_MIN_PAIRS query-key pairs; explicit choices pass through; a typo names the valid."""
  big = F.PALLAS_MIN_PAIRS
  assert F.resolve_kr_impl("auto", 1.0, 12288, 3072, backend="gpu") == "pallas"
  assert F.resolve_kr_impl("auto", 1.0, big, 1, backend="gpu") == "pallas"
  assert F.resolve_kr_impl("auto", 1.0, big - 1, 1, backend="gpu") == "xla"  # stage-3-sized
  assert F.resolve_kr_impl("auto", 1.0, 12288, 3072, backend="cpu") == "xla"
  assert F.resolve_kr_impl("auto", 1.0, 12288, 3072, backend="tpu") == "xla"
  assert F.resolve_kr_impl("auto", jnp.float32(1.0), 12288, 3072, backend="gpu") == "xla"
  assert F.resolve_kr_impl("auto", 0.01, 12288, 3072, backend="gpu") == "xla"  # below bound
  assert F.resolve_kr_impl("pallas", 1.0, 4, 4, backend="cpu") == "pallas"
  assert F.resolve_kr_impl("xla", 1.0, 12288, 3072, backend="gpu") == "xla"
  assert F.resolve_kr_impl("auto", 1.0, 4, 4) == "xla"  # this host
  with pytest.raises(KeyError, match=r"'auto', 'pallas', 'xla'"):
    F.resolve_kr_impl("triton", 1.0, 4, 4)


def test_resize_mask_and_kr_recalibrate():
  s, t = _feats()
  mask = _make_mask(B, {1: 1})
  m = np_resize(mask, H, W)
  np.testing.assert_array_equal(F.resize_mask(jnp.asarray(mask), (B, H, W)), m)
  got = F.kr_recalibrate(s, t, sigma=0.7, mix=0.3, stride=2, valid_mask=mask, block_size=7)
  np.testing.assert_allclose(got, np_kr_target(np.float64(s), np.float64(t), m, 0.7, 0.3, 2),
                             rtol=1e-4, atol=1e-5)
  # The fused (Pallas) regression, in interpret mode on CPU, gives the same target; mask included
  # (image 1 has one valid key, and masked keys must not count).
  fused = F.kr_recalibrate(s, t, sigma=0.7, mix=0.3, stride=2, valid_mask=mask, impl="pallas")
  np.testing.assert_allclose(fused, got, rtol=1e-5, atol=1e-6)
  with pytest.raises(KeyError, match="impl"):
    F.kr_recalibrate(s, t, sigma=0.7, mix=0.3, impl="cuda")
  # "auto" on this CPU host is the XLA regression: the same values, bit for bit.
  np.testing.assert_array_equal(
      F.kr_recalibrate(s, t, sigma=0.7, mix=0.3, stride=2, valid_mask=mask, block_size=7,
                       impl="auto"), got)
  # mix = 0 gives the teacher, both via the Python shortcut and through the regression.
  np.testing.assert_array_equal(F.kr_recalibrate(s, t, sigma=0.7, mix=0.0), t)
  np.testing.assert_allclose(F.kr_recalibrate(s, t, sigma=0.7, mix=jnp.float32(0.0)), t,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="valid_mask"):
    F.kr_recalibrate(s, t, sigma=0.7, mix=0.3, valid_mask=mask[:2])
  with pytest.raises(KeyError, match="valid kernels"):
    F.arfd_loss(s, t, kernel="cosine")
  with pytest.raises(ValueError, match="fitnet_loss"):
    F.fitnet_loss(s, t[..., :3])


@pytest.mark.parametrize("kernel", ["linear", "rbf", "laplace"])
def test_arfd_matches_numpy(kernel):
  s, t = _feats()
  mask = _make_mask(B, {1: 1, 3: 0})  # image 1: 1 valid pixel (no CKA), image 3: none
  m = np_resize(mask, H, W)
  kw = dict(sigma=0.8, mix=0.4, kernel=kernel, stride=2)
  loss, aux = F.arfd_loss(s, t, cka_max_pixels=20, valid_mask=mask, lambda_kr=0.7,
                          lambda_cka=1.3, **kw)
  ref, kr, cka = np_arfd(s, t, m, max_pixels=20, lambda_kr=0.7, lambda_cka=1.3, **kw)
  np.testing.assert_allclose(aux["kr"], kr, rtol=1e-4)
  np.testing.assert_allclose(aux["cka"], cka, rtol=1e-4)
  np.testing.assert_allclose(aux["cka_loss"], 1 - cka, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(loss, ref, rtol=1e-4)
  if kernel == "linear":
    # Skipped terms are absent; the KR term at mix = 0 is FitNet.
    loss0, aux0 = F.arfd_loss(s, t, mix=0.0, lambda_kr=1.0, lambda_cka=0, valid_mask=mask)
    assert set(aux0) == {"kr"}
    fit = F.fitnet_loss(s, t, valid_mask=mask)
    np.testing.assert_allclose(loss0, fit, rtol=1e-6)
    np.testing.assert_allclose(fit, (((s - t) ** 2).mean(-1) * m).sum() / m.sum(), rtol=1e-5)


def test_cwd_and_at_match_numpy():
  s, t = _feats()
  mask = _make_mask(B, {1: 1, 3: 0})
  m = np_resize(mask, H, W)
  np.testing.assert_allclose(F.cwd_loss(s, t, temperature=2.5, valid_mask=mask),
                             np_cwd(s, t, m, 2.5), rtol=1e-5)
  np.testing.assert_allclose(F.cwd_loss(s, t, temperature=4.0),
                             np_cwd(s, t, np.ones((B, H, W), bool), 4.0), rtol=1e-5)
  # AT: student and teacher widths may differ.
  np.testing.assert_allclose(F.at_loss(s, t[..., :3], p=2, valid_mask=mask),
                             np_at(s, t[..., :3], m, 2), rtol=1e-5)
  np.testing.assert_allclose(F.at_loss(s, t, p=1, valid_mask=mask), np_at(s, t, m, 1), rtol=1e-5)


def _cka_jnp(x, z, kernel, sigma):
  """Dense Gram-form CKA in jnp (differentiable reference)."""
  def gram(f):
    if kernel == "linear":
      return f @ f.T
    u = f / jnp.linalg.norm(f, axis=1, keepdims=True)
    eye = jnp.eye(f.shape[0], dtype=bool)  # exact zero diagonal, with a zero gradient
    sq = jnp.where(eye, 1.0, jnp.sum((u[:, None] - u[None]) ** 2, -1))
    return jnp.exp(-jnp.where(eye, 0.0, jnp.sqrt(sq)) / sigma)
  n = x.shape[0]
  h = jnp.eye(n) - 1.0 / n
  hs = lambda k, l: jnp.trace(k @ h @ l @ h)
  k, l = gram(x), gram(z)
  return hs(k, l) / jnp.sqrt(hs(k, k) * hs(l, l))


@pytest.mark.parametrize("kernel", ["linear", "laplace"])
def test_arfd_gradient_matches_dense_reference(kernel):
  s, t = _feats(b=3)
  mask = _make_mask(3, {1: 1})
  m = np_resize(mask, H, W)
  target = np.float32(np_kr_target(np.float64(s), np.float64(t), m, 0.8, 0.5, 1))

  def ref(a):
    kr = jnp.sum(jnp.mean((a - target) ** 2, -1) * m) / m.sum()
    ckas = [_cka_jnp(a[b][m[b]], t[b][m[b]], kernel, 0.8) for b in range(3) if m[b].sum() >= 2]
    return 0.6 * kr + 1.1 * (1 - sum(ckas) / len(ckas))

  ours = lambda a: F.arfd_loss(a, t, sigma=0.8, mix=0.5, lambda_kr=0.6, lambda_cka=1.1,
                               kernel=kernel, stride=1, valid_mask=mask, cka_max_pixels=H * W)[0]
  g, g_ref = jax.jit(jax.grad(ours))(s), jax.jit(jax.grad(ref))(s)
  np.testing.assert_allclose(g, g_ref, rtol=2e-3, atol=1e-6)
  assert np.abs(np.asarray(g)).max() > 1e-4


def test_degenerate_features_finite_and_bf16():
  s, t = _feats(b=2)
  mask = _make_mask(2)

  @jax.jit
  def all_losses(a, b):
    out = {k: F.arfd_loss(a, b, kernel=k, lambda_kr=1.0, stride=1, valid_mask=mask,
                          cka_max_pixels=16)[0]
           for k in ("linear", "rbf", "laplace")}
    out["cwd"] = F.cwd_loss(a, b, temperature=4.0, valid_mask=mask)
    out["at"] = F.at_loss(a, b, valid_mask=mask)
    out["fitnet"] = F.fitnet_loss(a, b, valid_mask=mask)
    return out

  grads = jax.jit(jax.grad(lambda a, b: sum(all_losses(a, b).values())))
  for const in (np.full_like(s, 0.3), np.zeros_like(s)):
    for a, b in ((const, t), (s, const), (const, const)):
      vals = all_losses(a, b)
      assert all(np.isfinite(float(v)) for v in vals.values()), vals
      assert np.all(np.isfinite(grads(a, b)))
  # bfloat16 features: float32 results equal to float32 on the rounded values.
  sb, tb = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
  got = all_losses(sb, tb)
  ref = all_losses(np.float32(sb.astype(jnp.float32)), np.float32(tb.astype(jnp.float32)))
  orig = all_losses(s, t)
  for k in got:
    assert got[k].dtype == jnp.float32, k
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(got[k], orig[k], rtol=3e-2, err_msg=k)


def test_sharded_equals_single_device():
  n_dev = len(jax.devices())
  assert n_dev == 8, "conftest.py sets 8 host devices"
  s, t = _feats(b=8)
  mask = _make_mask(8, {2: 1, 5: 0})  # different valid counts per image, incl. 1 and 0

  def losses(a, b, m, axis_name=None):
    kw = dict(valid_mask=m, axis_name=axis_name)
    return (F.fitnet_loss(a, b, **kw), F.cwd_loss(a, b, temperature=2.0, **kw),
            F.at_loss(a, b, **kw),
            F.arfd_loss(a, b, sigma=0.7, mix=0.5, lambda_kr=1.0, kernel="linear", stride=2,
                        **kw)[0],
            F.arfd_loss(a, b, sigma=0.7, mix=0.5, lambda_kr=1.0, kernel="laplace", stride=1,
                        cka_max_pixels=12, **kw)[0],
            F.arfd_loss(a, b, sigma=0.7, mix=0.5, lambda_kr=1.0, stride=2, kr_impl="pallas",
                        **kw)[0])

  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.jit(jax.shard_map(functools.partial(losses, axis_name="data"), mesh=mesh,
                                  in_specs=(P("data"),) * 3, out_specs=P(), check_vma=False))
  got = sharded(s, t, mask)
  want = jax.jit(losses)(s, t, mask)
  for name, g, w in zip(["fitnet", "cwd", "at", "arfd_linear", "arfd_laplace", "arfd_pallas"],
                        got, want):
    np.testing.assert_allclose(g, w, rtol=1e-6, err_msg=name)
  np.testing.assert_allclose(want[5], want[3], rtol=1e-5)  # fused kernel == XLA path
  # A mean of per-device means would differ: the test can fail.
  m, err = np_resize(mask, H, W), ((s - t) ** 2).mean(-1)
  per_dev = [(err[i] * m[i]).sum() / max(m[i].sum(), 1) for i in range(8)]
  np.testing.assert_allclose(want[0], (err * m).sum() / m.sum(), rtol=1e-5)
  assert abs(np.mean(per_dev) - float(want[0])) > 1e-3
