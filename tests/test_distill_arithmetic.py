"""Trainer arithmetic of `steps.distill_step` against a fake model with known logits (issue 10).

As scenic's trainer tests do, the networks are replaced by tiny fakes whose outputs are simple
functions of their parameters and the input (1x1 convs), so every loss term, the total, the
gradient and the sharded step can be recomputed independently:

- `FakeStudent(image, train)` -> (logits, {"stage3", "decoder"}): a tanh 1x1-conv embedding
  (= the decoder tap), 2x2 average pooling and a 1x1 conv (= stage3), a 1x1-conv classifier on the
  embedding. Its batch_stats collection is a step counter (the step needs the collection).
- `FakeTeacher(image, x, train)`: fixed logits and taps, 1x1 convs of concat(image, x).
- The real `models.Adapters`.

The reference (`_reference_loss`) is written from DESIGN §2.1-§2.6 against an array namespace
`xp`: with NumPy in float64 it gives the loss terms (a); with jax.numpy, `jax.grad` of it gives
the gradient that one SGD step with lr = 1, no momentum and no weight decay must apply (b). The
same step over 8 devices must equal the 1-device step (c).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fake_models

from lix_jax import losses
from lix_jax.config import base_config
from lix_jax.train import sharding, steps

K = 5  # classes
H, W = 8, 12
N_LABELED = N_UNLABELED = 8  # global; one of each per device on 8 devices
TAPS = ("stage3", "decoder")
# Every `distill` key at its default (lix_jax.config, the one place), then this test's values.
DISTILL_DEFAULTS = base_config().distill.to_dict()
BASE_CFG = dict(DISTILL_DEFAULTS, lambda_l=0.7, lambda_f=0.3, lambda_unlabeled=0.5, alpha=1.3, beta=0.6,
                temperature=2.0, controller="fixed", kappa=2.0, sigma=0.8, mix=0.4, lambda_kr=1.0,
                lambda_cka=0.5, kernel="linear", stride=1, taps=TAPS, tap_weights=(1.0, 0.5),
                pl_threshold=0.5)
# name -> (registry method, config overrides). `lix` uses the dynamic controller and ARFD.
CASES = {
    "kd": ("kd", {}),
    "dwld_fixed": ("dwld", {}),
    "pseudo_label": ("pseudo_label", {}),
    "lix_dynamic": ("lix", {"controller": "dynamic"}),
}


def _pool2(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


class FakeStudent(nn.Module):
  num_classes: int = K
  width: int = 4

  @nn.compact
  def __call__(self, image, train: bool = False):
    count = self.variable("batch_stats", "count", lambda: jnp.zeros((), jnp.int32))
    if train and not self.is_initializing():
      count.value += 1
    feat = jnp.tanh(nn.Conv(self.width, (1, 1), name="embed")(image))
    stage3 = nn.Conv(self.width + 2, (1, 1), name="stage3")(_pool2(feat))
    logits = nn.Conv(self.num_classes, (1, 1), name="classifier")(feat)
    return logits, {"stage3": stage3, "decoder": feat}


class FakeTeacher(nn.Module):
  num_classes: int = K

  @nn.compact
  def __call__(self, image, x, train: bool = False):
    del train
    z = jnp.concatenate([image, x], -1)
    # x3: confident on some pixels, not on others (the pseudo-label threshold splits them).
    logits = 3.0 * nn.Conv(self.num_classes, (1, 1), name="classifier")(z)
    dec = jnp.tanh(nn.Conv(6, (1, 1), name="decoder")(z))
    stage3 = nn.Conv(5, (1, 1), name="stage3")(_pool2(dec))
    return logits, {"stage3": stage3, "decoder": dec}


# --- The reference, from the DESIGN formulas ------------------------------------------------------


def _conv1x1(xp, x, p):
  return xp.einsum("bhwc,cd->bhwd", x, p["kernel"][0, 0]) + p["bias"]


def _log_softmax(xp, z):
  z = z - xp.max(z, -1, keepdims=True)
  return z - xp.log(xp.sum(xp.exp(z), -1, keepdims=True))


def _mean_over(xp, values, mask):
  return xp.sum(xp.where(mask, values, 0.0)) / xp.sum(mask)


def _dkd_terms(xp, s, t, y, tau):
  """Per-pixel TCLD, NCLD (DESIGN §2.2) by the textbook formulas."""
  onehot = y[..., None] == xp.arange(K)
  p, q = xp.exp(_log_softmax(xp, t / tau)), xp.exp(_log_softmax(xp, s / tau))
  p_y, q_y = xp.sum(xp.where(onehot, p, 0.0), -1), xp.sum(xp.where(onehot, q, 0.0), -1)
  tcld = p_y * (xp.log(p_y) - xp.log(q_y)) + (1 - p_y) * (xp.log(1 - p_y) - xp.log(1 - q_y))
  # Non-target distributions: the target logit masked out (a finite -1e9 keeps gradients finite).
  lp_hat = _log_softmax(xp, xp.where(onehot, -1e9, t / tau))
  lq_hat = _log_softmax(xp, xp.where(onehot, -1e9, s / tau))
  ncld = xp.sum(xp.where(onehot, 0.0, xp.exp(lp_hat) * (lp_hat - lq_hat)), -1)
  return tcld, ncld


def _logit_term(xp, sg, name, s, t, labels, cfg):
  """L_L of one method over the pixels where labels != 255 (labels = targets, DESIGN §2.6)."""
  valid = labels != 255
  y = xp.where(valid, labels, 0)
  tau = cfg["temperature"]
  if name == "kd":
    lp, lq = _log_softmax(xp, t / tau), _log_softmax(xp, s / tau)
    return tau**2 * _mean_over(xp, xp.sum(xp.exp(lp) * (lp - lq), -1), valid)
  if name == "pseudo_label":
    p = xp.exp(_log_softmax(xp, t))
    keep = valid & (xp.max(p, -1) >= cfg["pl_threshold"])
    onehot = xp.argmax(t, -1)[..., None] == xp.arange(K)
    return _mean_over(xp, -xp.sum(xp.where(onehot, _log_softmax(xp, s), 0.0), -1), keep)
  tcld, ncld = _dkd_terms(xp, s, t, y, tau)
  a, b = cfg["alpha"], cfg["beta"]
  if cfg["controller"] == "fixed":
    w_t, w_n = a, b
  else:  # dynamic (DESIGN §2.3)
    rho = xp.sum(xp.where(y[..., None] == xp.arange(K), xp.exp(_log_softmax(xp, t)), 0.0), -1)
    u_t = rho * xp.exp(sg(tcld) / cfg["kappa"])
    u_n = xp.exp(sg(ncld) / cfg["kappa"])
    w_t, w_n = a * u_t / _mean_over(xp, u_t, valid), b * u_n / _mean_over(xp, u_n, valid)
  return tau**2 * _mean_over(xp, w_t * tcld + w_n * ncld, valid)


def _arfd(xp, sg, a, t, cfg):
  """ARFD at one tap (DESIGN §2.4), over every pixel of every image; stride 1, linear CKA."""
  b, h, w, c = a.shape
  a, t = a.reshape(b, h * w, c), t.reshape(b, h * w, c)
  unit = lambda v: v / xp.maximum(xp.sqrt(xp.sum(v * v, -1, keepdims=True)), 1e-6)
  a0 = sg(a)
  dist = xp.sqrt(xp.sum((unit(a0)[:, :, None] - unit(t)[:, None]) ** 2, -1))  # [b, n, n]
  k = xp.exp(-dist / cfg["sigma"])
  r = xp.einsum("bij,bjc->bic", k, t) / xp.sum(k, -1, keepdims=True)
  target = sg((1 - cfg["mix"]) * t + cfg["mix"] * r)
  l_kr = xp.mean(xp.mean((a - target) ** 2, -1))
  ac, tc = a - xp.mean(a, 1, keepdims=True), t - xp.mean(t, 1, keepdims=True)
  fro2 = lambda x, z: xp.sum(xp.einsum("bnc,bnd->bcd", x, z) ** 2, (1, 2))
  cka = fro2(ac, tc) / xp.sqrt(fro2(ac, ac) * fro2(tc, tc))
  return cfg["lambda_kr"] * l_kr + cfg["lambda_cka"] * xp.mean(1 - cka)


def _reference_loss(xp, sg, params, batch, t_logits, t_taps, method, cfg):
  """(total, terms) of DESIGN §2.5/§2.6 for the fake student; teacher outputs over [lab; unlab]."""
  sp = params["student"]
  images = xp.concatenate([batch["image"], batch["unlabeled_image"]], 0)
  feat = xp.tanh(_conv1x1(xp, images, sp["embed"]))
  s_all = _conv1x1(xp, feat, sp["classifier"])
  s_taps = {"decoder": feat, "stage3": _conv1x1(xp, _pool2(feat), sp["stage3"])}
  n = batch["image"].shape[0]
  s_lab, s_unl, t_lab, t_unl = s_all[:n], s_all[n:], t_logits[:n], t_logits[n:]
  labels = batch["label"]
  terms = {"ce": _logit_term(xp, sg, "pseudo_label", s_lab, _onehot_logits(xp, labels), labels,
                             dict(cfg, pl_threshold=0.0))}
  logit_name = {"kd": "kd", "dwld": "dwld", "pseudo_label": "pseudo_label", "lix": "dwld"}[method]
  if method != "pseudo_label":  # pseudo-labels add nothing on labelled images
    terms["logit"] = _logit_term(xp, sg, logit_name, s_lab, t_lab, labels, cfg)
  # Unlabelled frames: the teacher's arg-max is the target class, every pixel counts.
  terms["logit_unlabeled"] = _logit_term(xp, sg, logit_name, s_unl, t_unl,
                                         xp.argmax(t_unl, -1), cfg)
  if method == "lix":
    adapted = {tap: _conv1x1(xp, s_taps[tap], params["adapters"][tap]) for tap in TAPS}
    terms["feature"] = sum(wt * _arfd(xp, sg, adapted[tap], t_taps[tap], cfg)
                           for tap, wt in zip(TAPS, cfg["tap_weights"]))
  total = (terms["ce"] + cfg["lambda_l"] * (terms.get("logit", 0.0) + cfg["lambda_unlabeled"]
                                            * terms["logit_unlabeled"])
           + cfg["lambda_f"] * terms.get("feature", 0.0))
  return total, terms


def _onehot_logits(xp, labels):
  """Logits whose arg-max is the label: CE is then written once, as `pseudo_label` at threshold 0."""
  return 10.0 * (xp.where(labels == 255, 0, labels)[..., None] == xp.arange(K))


# --- Fixtures -------------------------------------------------------------------------------------


def _batch():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, K, (N_LABELED, H, W)).astype(np.int32)
  for i in range(N_LABELED):  # a different number of ignored pixels per image
    labels[i, : i + 1, : 2 * i] = 255
  return {"image": rng.normal(size=(N_LABELED, H, W, 3)).astype(np.float32),
          "x": rng.normal(size=(N_LABELED, H, W, 1)).astype(np.float32), "label": labels,
          "unlabeled_image": rng.normal(size=(N_UNLABELED, H, W, 3)).astype(np.float32),
          "unlabeled_x": rng.normal(size=(N_UNLABELED, H, W, 1)).astype(np.float32)}


@functools.lru_cache(maxsize=None)
def _setup():
  return fake_models.distill_setup(FakeStudent(), FakeTeacher(), hw=(H, W), taps=TAPS,
                                   learning_rate=1.0)


@functools.lru_cache(maxsize=None)
def _run(case: str, num_devices: int | None):
  """(metrics, new params) of one distill step; num_devices None = unsharded (axis_name=None)."""
  method, overrides = CASES[case]
  student, teacher, adapters, t_vars, state = _setup()
  cfg = dict(BASE_CFG, **overrides)
  step = functools.partial(steps.distill_step, student=student, teacher=teacher,
                           adapters=adapters, distill_loss=losses.make_distill_loss(method, cfg))
  batch = _batch()
  if num_devices is None:
    new_state, metrics = jax.jit(functools.partial(step, axis_name=None))(state, batch, t_vars)
    fetch = lambda tree: jax.tree.map(np.asarray, tree)
  else:
    dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:num_devices]))
    new_state, metrics = dp.wrap(step)(dp.replicate(state), dp.shard_batch(batch),
                                       dp.replicate(t_vars))
    fetch = dp.fetch
  return fetch(metrics), fetch(new_state.params), fetch(new_state.batch_stats)


def _teacher_outputs(batch):
  _, teacher, _, t_vars, _ = _setup()
  images = np.concatenate([batch["image"], batch["unlabeled_image"]])
  xs = np.concatenate([batch["x"], batch["unlabeled_x"]])
  return jax.tree.map(np.asarray, teacher.apply(t_vars, images, xs))


def _f64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64) if np.issubdtype(
      np.asarray(a).dtype, np.floating) else np.asarray(a), tree)


# --- Tests ----------------------------------------------------------------------------------------


def test_fixture_exercises_thresholds_and_ignored_pixels():
  batch = _batch()
  t_logits, _ = _teacher_outputs(batch)
  conf = np.max(np.exp(_log_softmax(np, t_logits[N_LABELED:].astype(np.float64))), -1)
  kept = np.mean(conf >= BASE_CFG["pl_threshold"])
  assert 0.1 < kept < 0.9, kept  # the pseudo-label threshold really drops some pixels
  assert 0 < np.sum(batch["label"] == 255) < batch["label"].size


@pytest.mark.parametrize("case", list(CASES))
def test_loss_terms_equal_numpy(case):
  method, overrides = CASES[case]
  cfg = dict(BASE_CFG, **overrides)
  metrics, _, batch_stats = _run(case, None)
  batch = _batch()
  t_logits, t_taps = _teacher_outputs(batch)
  params = _f64(_setup()[4].params)
  total, terms = _reference_loss(np, lambda v: v, params, _f64(batch), _f64(t_logits),
                                 _f64(t_taps), method, cfg)
  expected_keys = {"ce", "logit_unlabeled"} | ({"logit"} if method != "pseudo_label" else set()) | (
      {"feature"} if method == "lix" else set())
  reported = {k for k in ("ce", "logit", "logit_unlabeled", "feature") if k in metrics}
  assert reported == expected_keys
  for key in expected_keys:
    np.testing.assert_allclose(metrics[key], terms[key], rtol=2e-5, err_msg=key)
  np.testing.assert_allclose(metrics["loss"], total, rtol=2e-5)
  assert metrics["nonfinite"] == 0
  assert int(batch_stats["count"]) == 1  # the student ran once, in train mode


@pytest.mark.parametrize("case", list(CASES))
def test_sgd_update_is_minus_reference_gradient(case):
  method, overrides = CASES[case]
  cfg = dict(BASE_CFG, **overrides)
  metrics, new_params, _ = _run(case, None)
  old_params = jax.tree.map(np.asarray, _setup()[4].params)
  batch = jax.tree.map(jnp.asarray, _batch())
  t_logits, t_taps = _teacher_outputs(batch)

  def ref(params):
    return _reference_loss(jnp, jax.lax.stop_gradient, params, batch, t_logits, t_taps, method,
                           cfg)[0]

  grads = jax.jit(jax.grad(ref))(jax.tree.map(jnp.asarray, old_params))
  applied = jax.tree.map(lambda old, new: old - new, old_params, new_params)  # lr = 1: Δ = −g
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(applied),
                               jax.tree.leaves(grads)):
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale + 1e-7,
                               err_msg=jax.tree_util.keystr(path))
  grad_norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
  np.testing.assert_allclose(metrics["l2_grads"], grad_norm, rtol=1e-4)
  if method != "lix":  # no feature loss: the stage3 conv and the adapters get no gradient
    zero = jax.tree.leaves(applied["adapters"]) + jax.tree.leaves(applied["student"]["stage3"])
    assert not any(np.any(leaf) for leaf in zero)


@pytest.mark.parametrize("case", list(CASES))
def test_8_devices_equal_1_device(case):
  one, eight = _run(case, None), _run(case, 8)
  for key, value in one[0].items():
    np.testing.assert_allclose(eight[0][key], value, rtol=1e-5, atol=1e-7, err_msg=key)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one[1]), jax.tree.leaves(eight[1])):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
