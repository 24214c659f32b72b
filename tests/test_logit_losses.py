"""Logit losses (DESIGN §2.1-§2.3, §2.6) against independent float64 NumPy implementations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lix_jax.losses import dwc, logit

IGN = 255
TAUS = (1.0, 2.0, 4.0)


# --- NumPy reference, float64, written from DESIGN's formulas ------------------------------------


def np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_softmax(z):
  return np.exp(np_log_softmax(z))


def np_valid_mean(x, labels):
  valid = labels != IGN
  return x[valid].sum() / max(valid.sum(), 1)


def np_ce(s, labels):
  logp = np_log_softmax(s)
  y = np.where(labels == IGN, 0, labels)
  return np_valid_mean(-np.take_along_axis(logp, y[..., None], -1)[..., 0], labels)


def np_kl_per_pixel(s, t, tau):
  p, q = np_softmax(t / tau), np_softmax(s / tau)
  return (p * (np.log(p) - np.log(q))).sum(-1)


def np_dkd_terms(s, t, labels, tau):
  """Per pixel: TCLD = binary KL of [p_y, 1-p_y]; NCLD = KL of softmaxes of the other logits."""
  k = s.shape[-1]
  y = np.where(labels == IGN, 0, labels)
  target = np.arange(k) == y[..., None]
  p, q = np_softmax(t / tau), np_softmax(s / tau)
  p_y, q_y = p[target].reshape(y.shape), q[target].reshape(y.shape)
  tcld = p_y * np.log(p_y / q_y) + (1 - p_y) * np.log((1 - p_y) / (1 - q_y))
  t_nt = (t / tau)[~target].reshape(*y.shape, k - 1)
  s_nt = (s / tau)[~target].reshape(*y.shape, k - 1)
  p_hat, q_hat = np_softmax(t_nt), np_softmax(s_nt)
  ncld = (p_hat * np.log(p_hat / q_hat)).sum(-1)
  valid = labels != IGN
  return np.where(valid, tcld, 0.0), np.where(valid, ncld, 0.0), np.where(valid, p_y, 0.0)


def np_dwc_weights(s, t, labels, tau, alpha, beta, controller, kappa, class_balance=1.0):
  valid = labels != IGN
  tcld, ncld, _ = np_dkd_terms(s, t, labels, tau)
  if controller == "fixed":
    return alpha * valid, beta * valid
  inv = 0.0 if controller == "trust" else 1.0 / kappa
  y = np.where(valid, labels, 0)
  rho = np.take_along_axis(np_softmax(t), y[..., None], -1)[..., 0]  # τ = 1
  u_t = rho * np.exp(tcld * inv)
  u_n = np.exp(ncld * inv)
  if controller == "balanced":  # times (pixels of the pixel's class in the batch)^-γ
    n_y = np.array([np.sum(valid & (labels == c)) for c in range(t.shape[-1])])[y]
    u_t, u_n = u_t * n_y**-class_balance, u_n * n_y**-class_balance
  if controller == "balanced_sym":  # the rarer of target and predicted class; n = labels + preds
    pred = s.argmax(-1)
    n = np.array([np.sum(valid & (labels == c)) + np.sum(valid & (pred == c))
                  for c in range(t.shape[-1])])
    n_min = np.minimum(n[y], n[pred])
    u_t, u_n = u_t * n_min**-class_balance, u_n * n_min**-class_balance
  w_t = alpha * u_t / np_valid_mean(u_t, labels)
  w_n = beta * u_n / np_valid_mean(u_n, labels)
  return np.where(valid, w_t, 0.0), np.where(valid, w_n, 0.0)


def np_dwld(s, t, labels, tau, w_t, w_n):
  tcld, ncld, _ = np_dkd_terms(s, t, labels, tau)
  return tau**2 * np_valid_mean(w_t * tcld + w_n * ncld, labels)


def np_pseudo_label(s, t, labels, threshold):
  p = np_softmax(t)
  keep = (labels != IGN) & (p.max(-1) >= threshold)
  return np_ce(s, np.where(keep, p.argmax(-1), IGN))


def np_fd_grad(f, x, h=1e-5):
  """Central finite differences of a scalar NumPy function, float64."""
  g = np.zeros_like(x)
  for i in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[i] += h
    xm[i] -= h
    g[i] = (f(xp) - f(xm)) / (2 * h)
  return g


# --- Data ---------------------------------------------------------------------------------------


def make_batch(seed=0, shape=(2, 3, 4), k=5, ignore_frac=0.3):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=(*shape, k)) * 2.0
  t = rng.normal(size=(*shape, k)) * 3.0
  labels = rng.integers(0, k, size=shape)
  labels[rng.random(shape) < ignore_frac] = IGN
  # Round to float32 once so the NumPy reference sees exactly what JAX sees.
  return s.astype(np.float32).astype(np.float64), t.astype(np.float32).astype(np.float64), labels


S, T, Y = make_batch()
assert (Y == IGN).any() and (Y != IGN).any()


def j(x):
  return jnp.asarray(x, jnp.float32)


def jl(labels):
  return jnp.asarray(labels, jnp.int32)


def close(a, b, rtol=1e-5, atol=1e-6):
  np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol, atol=atol)


# --- Values and gradients ------------------------------------------------------------------------


def test_cross_entropy_value_and_grad():
  close(logit.cross_entropy(j(S), jl(Y)), np_ce(S, Y))
  g = jax.grad(logit.cross_entropy)(j(S), jl(Y))
  valid = Y != IGN
  onehot = np.eye(S.shape[-1])[np.where(valid, Y, 0)]
  g_np = np.where(valid[..., None], np_softmax(S) - onehot, 0.0) / valid.sum()
  close(g, g_np, atol=1e-7)


@pytest.mark.parametrize("tau", TAUS)
def test_kd_value_and_grad(tau):
  close(logit.kd_loss(j(S), j(T), jl(Y), temperature=tau),
        tau**2 * np_valid_mean(np_kl_per_pixel(S, T, tau), Y))
  g = jax.grad(lambda s: logit.kd_loss(s, j(T), jl(Y), temperature=tau))(j(S))
  valid = (Y != IGN)[..., None]
  # d/ds τ²·KL(p‖softmax(s/τ)) = τ·(q − p).
  g_np = np.where(valid, tau * (np_softmax(S / tau) - np_softmax(T / tau)), 0.0) / valid.sum()
  close(g, g_np, atol=1e-7)
  # Teacher is stop-gradient.
  g_t = jax.grad(lambda t: logit.kd_loss(j(S), t, jl(Y), temperature=tau))(j(T))
  assert not np.any(np.asarray(g_t))


@pytest.mark.parametrize("tau", TAUS)
def test_dkd_terms_and_kl_identity(tau):
  tcld, ncld = logit.dkd_terms(j(S), j(T), jl(Y), temperature=tau)
  tcld_np, ncld_np, p_y = np_dkd_terms(S, T, Y, tau)
  close(tcld, tcld_np)
  close(ncld, ncld_np)
  ignored = Y == IGN
  assert not np.any(np.asarray(tcld)[ignored]) and not np.any(np.asarray(ncld)[ignored])
  # DKD identity, per valid pixel: KL(p‖q) = TCLD + (1 − p_y)·NCLD.
  kl = np_kl_per_pixel(S, T, tau)
  recon = np.asarray(tcld, np.float64) + (1 - p_y) * np.asarray(ncld, np.float64)
  close(recon[~ignored], kl[~ignored])


@pytest.mark.parametrize("tau", TAUS)
def test_dkd_loss_value_and_grad(tau):
  alpha, beta = 0.7, 2.5
  fn = lambda s: logit.dkd_loss(s, j(T), jl(Y), alpha=alpha, beta=beta, temperature=tau)

  def np_fn(s):
    tcld, ncld, _ = np_dkd_terms(s, T, Y, tau)
    return tau**2 * np_valid_mean(alpha * tcld + beta * ncld, Y)

  close(fn(j(S)), np_fn(S))
  close(jax.grad(fn)(j(S)), np_fd_grad(np_fn, S), rtol=1e-3, atol=2e-6)


DWLD_CASES = [("fixed", 1.0, 1.0), ("dynamic", 1.0, 2.0), ("dynamic", 2.0, 0.5),
              ("dynamic", 4.0, -1.5), ("dynamic", 4.0, -0.5), ("trust", 2.0, 1.0),
              ("balanced", 2.0, 1.0), ("balanced", 1.0, -2.0), ("balanced_sym", 2.0, 1.0)]


@pytest.mark.parametrize("controller,tau,kappa", DWLD_CASES)
def test_dwld_value_weights_and_grad(controller, tau, kappa):
  alpha, beta = 0.8, 1.7
  fn = lambda s: logit.dwld_loss(s, j(T), jl(Y), alpha=alpha, beta=beta, temperature=tau,
                                 controller=controller, kappa=kappa)
  loss, aux = fn(j(S))
  w_t, w_n = np_dwc_weights(S, T, Y, tau, alpha, beta, controller, kappa)
  close(aux["w_t"], w_t)
  close(aux["w_n"], w_n)
  close(loss, np_dwld(S, T, Y, tau, w_t, w_n))
  tcld, ncld, _ = np_dkd_terms(S, T, Y, tau)
  close(aux["tcld"], np_valid_mean(tcld, Y))
  close(aux["ncld"], np_valid_mean(ncld, Y))
  # Weights are stop-gradient: the gradient is that of the loss with the weights held fixed.
  g = jax.grad(lambda s: fn(s)[0])(j(S))
  g_np = np_fd_grad(lambda s: np_dwld(s, T, Y, tau, w_t, w_n), S)
  close(g, g_np, rtol=1e-3, atol=2e-6)


@pytest.mark.parametrize("kappa", [3.0, -0.7])
def test_dynamic_weights_average_to_alpha_beta(kappa):
  alpha, beta = 0.6, 1.9
  _, aux = logit.dwld_loss(j(S), j(T), jl(Y), alpha=alpha, beta=beta, temperature=2.0,
                           kappa=kappa)
  valid = Y != IGN
  w_t, w_n = np.asarray(aux["w_t"]), np.asarray(aux["w_n"])
  close(w_t[valid].mean(), alpha)
  close(w_n[valid].mean(), beta)
  assert not w_t[~valid].any() and not w_n[~valid].any()
  assert w_t[valid].std() > 1e-3 and w_n[valid].std() > 1e-3  # Genuinely per-pixel.


@pytest.mark.parametrize("tau", TAUS)
def test_dwld_fixed_equals_dkd(tau):
  kw = dict(alpha=0.9, beta=1.3, temperature=tau)
  dkd = lambda s: logit.dkd_loss(s, j(T), jl(Y), **kw)
  dwld = lambda s: logit.dwld_loss(s, j(T), jl(Y), controller="fixed", **kw)[0]
  np.testing.assert_allclose(dwld(j(S)), dkd(j(S)), rtol=1e-7, atol=0)
  np.testing.assert_allclose(jax.grad(dwld)(j(S)), jax.grad(dkd)(j(S)), rtol=1e-7, atol=1e-12)


def test_trust_and_huge_kappa_with_certain_teacher_equal_dkd():
  k = T.shape[-1]
  t = T.copy()
  t += 40.0 * (np.arange(k) == np.where(Y == IGN, 0, Y)[..., None])  # ρ = 1 in float32.
  kw = dict(alpha=0.9, beta=1.3, temperature=4.0)
  dkd = logit.dkd_loss(j(S), j(t), jl(Y), **kw)
  trust = logit.dwld_loss(j(S), j(t), jl(Y), controller="trust", **kw)[0]
  close(trust, float(dkd), rtol=1e-6)
  for kappa in (1e8, -1e8):
    close(logit.dwld_loss(j(S), j(t), jl(Y), controller="dynamic", kappa=kappa, **kw)[0],
          float(dkd), rtol=1e-5)
  # With an uncertain teacher trust is not DKD (the test above can fail).
  assert abs(float(logit.dwld_loss(j(S), j(T), jl(Y), controller="trust", **kw)[0])
             - float(logit.dkd_loss(j(S), j(T), jl(Y), **kw))) > 1e-3


@pytest.mark.parametrize("threshold", [0.0, 0.6])
def test_pseudo_label_value_and_grad(threshold):
  fn = lambda s: logit.pseudo_label_loss(s, j(T), jl(Y), threshold=threshold)
  close(fn(j(S)), np_pseudo_label(S, T, Y, threshold))
  p = np_softmax(T)
  keep = (Y != IGN) & (p.max(-1) >= threshold)
  assert 0 < keep.sum() < (Y != IGN).sum() or threshold == 0.0
  onehot = np.eye(S.shape[-1])[p.argmax(-1)]
  g_np = np.where(keep[..., None], np_softmax(S) - onehot, 0.0) / keep.sum()
  close(jax.grad(fn)(j(S)), g_np, atol=1e-7)


def test_teacher_targets():
  valid = Y != IGN
  out = logit.teacher_targets(j(T), jnp.asarray(valid))
  assert out.dtype == jnp.int32
  np.testing.assert_array_equal(out, np.where(valid, T.argmax(-1), IGN))


# --- Edge cases -----------------------------------------------------------------------------------


ALL_LOSSES = {  # name -> loss(s, t, y, axis_name=None)
    "ce": lambda s, t, y, a=None: logit.cross_entropy(s, y, axis_name=a),
    "kd": lambda s, t, y, a=None: logit.kd_loss(s, t, y, temperature=2.0, axis_name=a),
    "dkd": lambda s, t, y, a=None: logit.dkd_loss(s, t, y, alpha=1.0, beta=2.0, temperature=2.0,
                                                  axis_name=a),
    "dwld_fixed": lambda s, t, y, a=None: logit.dwld_loss(
        s, t, y, alpha=1.0, beta=2.0, temperature=2.0, controller="fixed", axis_name=a)[0],
    "dwld_dynamic": lambda s, t, y, a=None: logit.dwld_loss(
        s, t, y, alpha=1.0, beta=2.0, temperature=2.0, kappa=2.0, axis_name=a)[0],
    "dwld_dynamic_neg": lambda s, t, y, a=None: logit.dwld_loss(
        s, t, y, alpha=1.0, beta=2.0, temperature=1.0, kappa=-1.0, axis_name=a)[0],
    "dwld_trust": lambda s, t, y, a=None: logit.dwld_loss(
        s, t, y, alpha=1.0, beta=2.0, temperature=2.0, controller="trust", axis_name=a)[0],
    "dwld_balanced": lambda s, t, y, a=None: logit.dwld_loss(
        s, t, y, alpha=1.0, beta=2.0, temperature=2.0, controller="balanced", kappa=2.0,
        class_balance=0.7, axis_name=a)[0],
    "dwld_balanced_sym": lambda s, t, y, a=None: logit.dwld_loss(
        s, t, y, alpha=1.0, beta=2.0, temperature=2.0, controller="balanced_sym", kappa=2.0,
        axis_name=a)[0],
    "pseudo_label": lambda s, t, y, a=None: logit.pseudo_label_loss(s, t, y, threshold=0.4,
                                                                    axis_name=a),
    "pseudo_label_thr0": lambda s, t, y, a=None: logit.pseudo_label_loss(s, t, y, axis_name=a),
}


def test_all_ignored_batch_gives_zero_and_finite_grads():
  y = jnp.full(Y.shape, IGN, jnp.int32)
  for name, fn in ALL_LOSSES.items():
    loss, g = jax.value_and_grad(fn)(j(S), j(T), y)
    assert float(loss) == 0.0, name
    assert np.all(np.isfinite(g)) and not np.any(np.asarray(g)), name


def test_two_classes_ncld_zero_and_tcld_is_kl():
  s, t, y = make_batch(seed=1, k=2)
  tcld, ncld = logit.dkd_terms(j(s), j(t), jl(y), temperature=2.0)
  assert not np.any(np.asarray(ncld))
  valid = y != IGN
  close(np.asarray(tcld)[valid], np_kl_per_pixel(s, t, 2.0)[valid])
  fn = lambda s_: logit.dwld_loss(s_, j(t), jl(y), alpha=1.0, beta=1.0, temperature=2.0)[0]
  g = jax.grad(fn)(j(s))
  assert np.all(np.isfinite(g)) and np.any(np.asarray(g))


@pytest.mark.parametrize("k", [2, 5])
def test_extreme_logits_are_nan_free(k):
  s, t, y = make_batch(seed=2, k=k)
  target = np.arange(k) == np.where(y == IGN, 0, y)[..., None]
  t = t + 500.0 * target  # Teacher certain of the target ...
  s = s - 500.0 * target  # ... student certain against it: exp overflow if done naively.
  for name, fn in ALL_LOSSES.items():
    loss, g = jax.value_and_grad(fn)(j(s), j(t), jl(y))
    assert np.isfinite(float(loss)) and float(loss) > 0, name
    assert np.all(np.isfinite(g)), name
  tcld, ncld = logit.dkd_terms(j(s), j(t), jl(y), temperature=1.0)
  g = jax.grad(lambda s_: jnp.sum(logit.dkd_terms(s_, j(t), jl(y), temperature=1.0)[1]))(j(s))
  assert np.all(np.isfinite(tcld)) and np.all(np.isfinite(ncld)) and np.all(np.isfinite(g))
  # p_y = 1 to float64 precision, so TCLD = log p_y − log q_y (both from a stable log_softmax).
  valid = y != IGN
  expected = (np_log_softmax(t) - np_log_softmax(s))[target & valid[..., None]]
  close(np.asarray(tcld)[valid], expected, rtol=1e-5)


def test_bfloat16_inputs_compute_in_float32():
  s16, t16 = jnp.asarray(S, jnp.bfloat16), jnp.asarray(T, jnp.bfloat16)
  s32, t32 = s16.astype(jnp.float32), t16.astype(jnp.float32)
  for name, fn in ALL_LOSSES.items():
    out16, out32 = fn(s16, t16, jl(Y)), fn(s32, t32, jl(Y))
    assert out16.dtype == jnp.float32, name
    np.testing.assert_allclose(out16, out32, rtol=1e-6, err_msg=name)


def test_controller_errors_and_custom_controller():
  with pytest.raises(KeyError, match=r"dynamic.*fixed.*trust"):
    logit.dwld_loss(j(S), j(T), jl(Y), alpha=1.0, beta=1.0, temperature=1.0, controller="nope")
  with pytest.raises(ValueError, match="kappa"):
    logit.dwld_loss(j(S), j(T), jl(Y), alpha=1.0, beta=1.0, temperature=1.0, kappa=0.0)
  assert set(dwc.CONTROLLERS) == {"fixed", "dynamic", "trust", "balanced", "balanced_sym"}

  def doubled(student_logits, teacher_logits, labels, *, alpha, beta, temperature, valid, **kw):
    return 2 * alpha * valid, 2 * beta * valid

  kw = dict(alpha=0.5, beta=1.5, temperature=2.0)
  close(logit.dwld_loss(j(S), j(T), jl(Y), controller=doubled, **kw)[0],
        2 * float(logit.dkd_loss(j(S), j(T), jl(Y), **kw)), rtol=1e-6)


# --- Distributed reduction ------------------------------------------------------------------------


def sharded_batch():
  """8 images, one per device, with different valid counts (one image fully ignored)."""
  s, t, y = make_batch(seed=3, shape=(8, 2, 4), k=4, ignore_frac=0.0)
  for i in range(8):
    y[i].reshape(-1)[:i] = IGN  # Image i has i ignored pixels ...
  y[5] = IGN  # ... and image 5 has none valid.
  return s, t, y


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_sharded_equals_single_device(name):
  s, t, y = sharded_batch()
  mesh = Mesh(np.array(jax.devices()), ("data",))
  assert mesh.size == 8
  fn = ALL_LOSSES[name]
  # jit: an un-jitted shard_map runs op by op on 8 devices (slow).
  sharded = jax.jit(jax.shard_map(lambda *args: fn(*args, a="data"), mesh=mesh,
                                  in_specs=(P("data"),) * 3, out_specs=P(), check_vma=False))
  single = jax.jit(fn)
  np.testing.assert_allclose(sharded(j(s), j(t), jl(y)), single(j(s), j(t), jl(y)), rtol=1e-6)
  single = float(single(j(s), j(t), jl(y)))
  # A mean of per-device means differs, so the comparison above can fail.
  one_image = jax.jit(fn)
  per_device = np.mean([float(one_image(j(s[i:i + 1]), j(t[i:i + 1]), jl(y[i:i + 1])))
                        for i in range(8)])
  assert abs(per_device - single) > 1e-3 * abs(single)


def test_sharded_dwld_weights_and_grads():
  """Global max and means: the per-pixel weights match one device; per-shard grads are 8× the
  shard's share of the global gradient under check_vma=False (psum transposes to psum)."""
  s, t, y = sharded_batch()
  mesh = Mesh(np.array(jax.devices()), ("data",))
  kw = dict(alpha=0.7, beta=1.4, temperature=2.0, kappa=1.5)

  def per_shard(s_, t_, y_):
    fn = lambda x: logit.dwld_loss(x, t_, y_, axis_name="data", **kw)
    (loss, aux), g = jax.value_and_grad(fn, has_aux=True)(s_)
    return loss, aux["w_t"], aux["w_n"], g

  sharded = jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=(P("data"),) * 3,
                                  out_specs=(P(), P("data"), P("data"), P("data")),
                                  check_vma=False))
  loss, w_t, w_n, g = sharded(j(s), j(t), jl(y))
  fn = lambda x: logit.dwld_loss(x, j(t), jl(y), **kw)
  (loss1, aux1), g1 = jax.value_and_grad(fn, has_aux=True)(j(s))
  np.testing.assert_allclose(loss, loss1, rtol=1e-6)
  np.testing.assert_allclose(w_t, aux1["w_t"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(w_n, aux1["w_n"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(g) / 8, g1, rtol=1e-5, atol=1e-8)


def test_symmetric_balance_weights_false_positives_of_rare_classes():
  """A pixel labelled with the large class but predicted as the rare one: `balanced` weights it as
  the large class, `balanced_sym` as the rare one (counts of labels plus predictions)."""
  k, hw = 3, (1, 8, 8)
  labels = np.zeros(hw, np.int32)
  labels[0, :2, :2] = 1  # the rare class: 4 of 64 pixels
  student = np.zeros((*hw, k), np.float32)
  student[..., 0] = 3.0
  student[0, :2, :2, 1] = 6.0  # predicted right on the rare class ...
  student[0, 7, 7, 1] = 6.0  # ... and once on a large-class pixel
  teacher = np.random.default_rng(3).normal(size=(*hw, k)).astype(np.float32)
  kw = dict(alpha=1.0, beta=1.0, temperature=1.0, kappa=1e12)  # κ huge: the prior alone
  w = {c: np.asarray(logit.dwld_loss(j(student), j(teacher), jl(labels), controller=c, **kw)[1]
                     ["w_n"]) for c in ("balanced", "balanced_sym")}
  # Priors: `balanced` 1 / n_y with n_0 = 60, n_1 = 4 (labels); `balanced_sym` 1 / min(n_y, n_ŷ)
  # with n_0 = 60 + 59, n_1 = 4 + 5 (labels + predictions). Up to one normalisation constant:
  ratio = w["balanced_sym"] / w["balanced"]
  large, rare = labels == 0, labels == 1
  large[0, 7, 7] = False
  np.testing.assert_allclose(ratio[large], ratio[large][0], rtol=1e-5)
  np.testing.assert_allclose(ratio[rare] / ratio[large][0], (60 / 9) / (60 / 119) * (4 / 60),
                             rtol=1e-5)
  # The false positive is weighted as the rare class: 119 / 9 times a correct large-class pixel.
  np.testing.assert_allclose(ratio[0, 7, 7] / ratio[large][0], 119 / 9, rtol=1e-5)


def test_balanced_controller_gives_each_class_the_same_total_weight():
  kw = dict(alpha=0.8, beta=1.7, temperature=2.0)
  # κ huge: u^n = n_y^-1 alone, so every class present gets the same total NCLD weight.
  _, aux = logit.dwld_loss(j(S), j(T), jl(Y), controller="balanced", kappa=1e12, **kw)
  present = [c for c in range(S.shape[-1]) if np.any(Y == c)]
  totals = [float(np.sum(np.asarray(aux["w_n"])[Y == c])) for c in present]
  assert len(present) >= 3 and len(set(np.bincount(Y[Y != IGN]))) > 1  # unequal class areas
  np.testing.assert_allclose(totals, totals[0], rtol=1e-5)
  np.testing.assert_allclose(np.sum(aux["w_n"]), kw["beta"] * np.sum(Y != IGN), rtol=1e-5)
  # γ = 0 is the dynamic controller.
  balanced0 = logit.dwld_loss(j(S), j(T), jl(Y), controller="balanced", class_balance=0.0, **kw)
  dynamic = logit.dwld_loss(j(S), j(T), jl(Y), controller="dynamic", **kw)
  close(balanced0[0], dynamic[0])
  close(balanced0[1]["w_t"], dynamic[1]["w_t"])
