"""Pixel-wise logit losses: CE, KD, DKD, DWLD (DESIGN §2.1-§2.3) and pseudo-labels (§2.6).

DWLD's weight controllers are in `dwc`; `masked_mean` and the other per-pixel building blocks
(one-hot targets, non-target reductions) are in `pixel`.

Conventions (DESIGN §1): logits are `[B, H, W, K]` (any float dtype; computed in at least float32),
labels `[B, H, W]` int32 in `[0, K) ∪ {ignore_index}`. Every pixel mean is over the valid pixels of
the *global* batch: a sum and a count, each `lax.psum`-ed over `axis_name` when one is given, then
divided, with the count clamped to ≥ 1 so that an all-ignored batch gives 0 (not NaN). A loss
therefore has the same value whether a batch is split over 1 or N devices. Teacher logits always go
through `lax.stop_gradient`. KL divergences are computed from `log_softmax`, never `log(softmax)`.

Under `shard_map(..., check_vma=False)` the transpose of `psum` is a `psum`, so the per-shard
gradient of one of these losses is `N_devices ×` this shard's share of the global gradient;
`pmean`-ing parameter gradients over the data axis (DESIGN §6) then gives exactly the global
gradient (tested in tests/test_logit_losses.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lix_jax import IGNORE_INDEX  # noqa: F401  (re-exported; defined once in lix_jax/__init__.py)
from lix_jax.losses import pixel
from lix_jax.losses.dwc import Controller, get_controller
from lix_jax.losses.pixel import masked_mean


def cross_entropy(logits: jax.Array, labels: jax.Array, *, ignore_index: int = IGNORE_INDEX,
                  axis_name: str | None = None) -> jax.Array:
  """`L_H = mean_valid −log softmax(logits)[label]` (DESIGN §2.1).

  Args:
    logits: `[B, H, W, K]`.
    labels: `[B, H, W]` int, `ignore_index` marks pixels that do not count.
    ignore_index: label value of ignored pixels.
    axis_name: data axis for the global sum/count, or None.

  Returns:
    Scalar float32 (float64 for float64 logits).
  """
  logp = jax.nn.log_softmax(pixel.at_least_f32(logits), axis=-1)
  valid, _, one_hot = pixel.one_hot_targets(labels, logits.shape[-1], ignore_index)
  return masked_mean(-pixel.pick(logp, one_hot), valid, axis_name)


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
            temperature: float, ignore_index: int = IGNORE_INDEX,
            axis_name: str | None = None) -> jax.Array:
  """Hinton KD: `τ² · mean_valid KL(softmax_τ(t) ‖ softmax_τ(s))` (DESIGN §2.5).

  Args:
    student_logits, teacher_logits: `[B, H, W, K]`; the teacher is stop-gradient.
    labels: `[B, H, W]`; only supplies the valid mask (`labels != ignore_index`).
    temperature: τ > 0.
    ignore_index: label value of ignored pixels.
    axis_name: data axis for the global sum/count, or None.

  Returns:
    Scalar loss.
  """
  s = pixel.at_least_f32(student_logits) / temperature
  t = lax.stop_gradient(pixel.at_least_f32(teacher_logits)) / temperature
  log_p = jax.nn.log_softmax(t, axis=-1)
  log_q = jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  valid = labels != ignore_index
  return temperature**2 * masked_mean(kl, valid, axis_name)


def _dkd_forward(s: jax.Array, t: jax.Array, labels: jax.Array, ignore_index: int):
  """TCLD, NCLD `[B, H, W]` of scaled logits, and what the backward pass needs."""
  valid, target, one_hot = pixel.one_hot_targets(labels, s.shape[-1], ignore_index)
  t_y, lse_t, e_t, sum_t = pixel.nontarget_stats(t, one_hot, target)
  s_y, lse_s, _, _ = pixel.nontarget_stats(s, one_hot, target)
  d_t, d_s = t_y - lse_t, s_y - lse_s
  lp_y, lp_n = -jax.nn.softplus(-d_t), -jax.nn.softplus(d_t)
  lq_y, lq_n = -jax.nn.softplus(-d_s), -jax.nn.softplus(d_s)
  p_y, q_y = jnp.exp(lp_y), jnp.exp(lq_y)
  tcld = p_y * (lp_y - lq_y) + jnp.exp(lp_n) * (lp_n - lq_n)
  # KL(p̂ ‖ q̂) = Σ_k p̂_k (log p̂_k − log q̂_k), p̂ = e_t / sum_t (0 at the target); the log-ratio
  # is formed per class (exactly 0 for K = 2), not as a difference of sums.
  log_ratio = (t - lse_t[..., None]) - (s - lse_s[..., None])
  ncld = jnp.sum(e_t * log_ratio, axis=-1) / sum_t
  zero = jnp.zeros((), t.dtype)
  return (jnp.where(valid, tcld, zero), jnp.where(valid, ncld, zero)), (lse_s, lse_t, p_y, q_y)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dkd_scaled(s: jax.Array, t: jax.Array, labels: jax.Array, ignore_index: int):
  """(TCLD, NCLD) of scaled student / teacher logits, with a closed-form gradient w.r.t. s.

  Autodiff of the forward pass walks back through two masked log-sum-exps, softplus and the
  picks (several passes over `[.., K]`); the gradient has a one-pass closed form instead:
    ∂TCLD/∂s_k = (q_y − p_y)·(1 if k = y else −q̂_k),   ∂NCLD/∂s_k = q̂_k − p̂_k (k ≠ y), 0 (k = y).
  The teacher gets no gradient (DESIGN §1: it enters through stop_gradient anyway).
  """
  return _dkd_forward(s, t, labels, ignore_index)[0]


def _dkd_scaled_fwd(s, t, labels, ignore_index):
  out, res = _dkd_forward(s, t, labels, ignore_index)
  return out, (s, t, labels, *res)


def _dkd_scaled_bwd(ignore_index, res, cotangents):
  s, t, labels, lse_s, lse_t, p_y, q_y = res
  g_t, g_n = cotangents
  valid, _, one_hot = pixel.one_hot_targets(labels, s.shape[-1], ignore_index)
  zero = jnp.zeros((), s.dtype)
  g_t, g_n = jnp.where(valid, g_t, zero), jnp.where(valid, g_n, zero)
  q_hat, p_hat = jnp.exp(s - lse_s[..., None]), jnp.exp(t - lse_t[..., None])
  a = (g_t * (q_y - p_y))[..., None]
  grad_s = jnp.where(one_hot, a, g_n[..., None] * (q_hat - p_hat) - a * q_hat)
  return grad_s, jnp.zeros_like(t), None


_dkd_scaled.defvjp(_dkd_scaled_fwd, _dkd_scaled_bwd)


def dkd_terms(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
              temperature: float,
              ignore_index: int = IGNORE_INDEX) -> tuple[jax.Array, jax.Array]:
  """Per-pixel decoupled KD terms (Zhao et al. 2022; DESIGN §2.2).

  `TCLD = KL([p_y, 1 − p_y] ‖ [q_y, 1 − q_y])`, `NCLD = KL(p̂ ‖ q̂)` with p̂, q̂ the softmax_τ
  over the non-target classes; per pixel `KL(p ‖ q) = TCLD + (1 − p_y)·NCLD`. For K = 2, NCLD ≡ 0.
  The gradient w.r.t. the student logits is closed-form (`_dkd_scaled`), exact to rounding.

  Args:
    student_logits, teacher_logits: `[B, H, W, K]`; the teacher is stop-gradient.
    labels: `[B, H, W]` target classes (for unlabelled pixels: `teacher_targets`).
    temperature: τ > 0.
    ignore_index: label value of ignored pixels.

  Returns:
    `(tcld, ncld)`, each `[B, H, W]` float32, 0 at ignored pixels (value and gradient).
  """
  t = lax.stop_gradient(pixel.at_least_f32(teacher_logits)) / temperature
  s = pixel.at_least_f32(student_logits) / temperature
  return _dkd_scaled(s, t, labels, ignore_index)


def dkd_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
             alpha: float, beta: float, temperature: float, ignore_index: int = IGNORE_INDEX,
             axis_name: str | None = None) -> jax.Array:
  """`DKD = τ² · mean_valid(α·TCLD + β·NCLD)` (DESIGN §2.2). Args as `dkd_terms`; a scalar."""
  tcld, ncld = dkd_terms(student_logits, teacher_logits, labels, temperature=temperature,
                         ignore_index=ignore_index)
  valid = labels != ignore_index
  return temperature**2 * masked_mean(alpha * tcld + beta * ncld, valid, axis_name)


def dwld_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
              alpha: float, beta: float, temperature: float,
              controller: str | Controller = "balanced_sym", kappa: float = 4.0,
              ignore_index: int = IGNORE_INDEX, axis_name: str | None = None,
              class_balance: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Dynamically-weighted logit distillation `τ²·mean_valid(w^t⊙TCLD + w^n⊙NCLD)` (DESIGN §2.3).

  The controller (a name in `dwc.CONTROLLERS` or a callable) is called as
  `controller(student_logits, teacher_logits, labels, alpha=, beta=, temperature=, kappa=,
  tcld=, ncld=, valid=, axis_name=, ignore_index=, class_balance=)` where `tcld`, `ncld` are the stop-gradient
  per-pixel terms `[B, H, W]` (0 where invalid) and `valid` the `[B, H, W]` bool mask; it must
  accept (and may ignore) any of these keywords via `**kw` and return `(w_t, w_n)`, each
  `[B, H, W]`, 0 at invalid pixels. Any global statistic it needs must be reduced over
  `axis_name`. The weights are stop-gradient.

  Args:
    student_logits, teacher_logits: `[B, H, W, K]`; the teacher is stop-gradient.
    labels: `[B, H, W]` target classes (for unlabelled pixels: `teacher_targets`).
    alpha, beta: mean weights of TCLD and NCLD.
    temperature: τ > 0.
    controller: "fixed" | "dynamic" | "trust" | "balanced" | "balanced_sym" or a callable as above.
    kappa: controller temperature κ ≠ 0 (dynamic, balanced, balanced_sym); ±inf = trust.
    ignore_index: label value of ignored pixels.
    axis_name: data axis for global sums, counts and maxima, or None.
    class_balance: γ of the `balanced` and `balanced_sym` controllers (class-frequency exponent);
      others ignore it.

  Returns:
    `(loss, aux)`: aux = {"w_t": [B,H,W], "w_n": [B,H,W], "tcld": scalar, "ncld": scalar}, the
    scalars being global means over valid pixels (stop-gradient; for logging).
  """
  fn = controller if callable(controller) else get_controller(controller)
  tcld, ncld = dkd_terms(student_logits, teacher_logits, labels, temperature=temperature,
                         ignore_index=ignore_index)
  valid = labels != ignore_index
  w_t, w_n = fn(student_logits, teacher_logits, labels, alpha=alpha, beta=beta,
                temperature=temperature, kappa=kappa, tcld=lax.stop_gradient(tcld),
                ncld=lax.stop_gradient(ncld), valid=valid, axis_name=axis_name,
                ignore_index=ignore_index, class_balance=class_balance)
  w_t, w_n = lax.stop_gradient(w_t), lax.stop_gradient(w_n)
  loss = temperature**2 * masked_mean(w_t * tcld + w_n * ncld, valid, axis_name)
  aux = {
      "w_t": w_t,
      "w_n": w_n,
      "tcld": masked_mean(lax.stop_gradient(tcld), valid, axis_name),
      "ncld": masked_mean(lax.stop_gradient(ncld), valid, axis_name),
  }
  return loss, aux


# --- Unlabelled frames (DESIGN §2.6) ------------------------------------------------------------


def teacher_targets(teacher_logits: jax.Array, valid: jax.Array, *,
                    ignore_index: int = IGNORE_INDEX) -> jax.Array:
  """Teacher arg-max as int32 labels `[B, H, W]`, `ignore_index` where `valid` is False.

  Used as `labels` for unlabelled frames: DKD/DWLD then take the teacher's arg-max as target class
  (so ρ is the teacher's confidence).
  """
  target = jnp.argmax(lax.stop_gradient(teacher_logits), axis=-1).astype(jnp.int32)
  return jnp.where(valid, target, jnp.int32(ignore_index))


def pseudo_label_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
                      threshold: float = 0.0, ignore_index: int = IGNORE_INDEX,
                      axis_name: str | None = None) -> jax.Array:
  """CE of the student on the teacher's arg-max over confident valid pixels (DESIGN §2.6).

  A pixel counts when `labels != ignore_index` and the teacher's softmax confidence (τ = 1)
  is ≥ `threshold`; the mean is over the counted pixels of the global batch.

  Args:
    student_logits, teacher_logits: `[B, H, W, K]`; the teacher is stop-gradient.
    labels: `[B, H, W]`; only supplies the valid mask.
    threshold: minimum teacher confidence in [0, 1].
    ignore_index: label value of ignored pixels.
    axis_name: data axis for the global sum/count, or None.

  Returns:
    Scalar loss.
  """
  t = lax.stop_gradient(pixel.at_least_f32(teacher_logits))
  confidence = jnp.max(jax.nn.softmax(t, axis=-1), axis=-1)
  keep = (labels != ignore_index) & (confidence >= threshold)
  targets = teacher_targets(t, keep, ignore_index=ignore_index)
  return cross_entropy(student_logits, targets, ignore_index=ignore_index, axis_name=axis_name)
