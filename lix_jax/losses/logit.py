"""Pixel-wise logit losses: CE, KD, DKD, DWLD (DESIGN §2.1-§2.3) and pseudo-labels (§2.6).

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
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

IGNORE_INDEX = 255

# A controller maps (student_logits, teacher_logits, labels, *, alpha, beta, temperature, **kw) to
# per-pixel weights (w_t, w_n), each [B, H, W]; see `dwld_loss` for the keyword arguments in **kw.
Controller = Callable[..., tuple[jax.Array, jax.Array]]


def _at_least_f32(x: jax.Array) -> jax.Array:
  """Promotes bf16/f16 to float32; float64 (x64 tests) stays float64."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _psum(x: jax.Array, axis_name: str | None) -> jax.Array:
  return x if axis_name is None else lax.psum(x, axis_name)


def masked_mean(x: jax.Array, valid: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Mean of `x` over the valid pixels of the global batch.

  Args:
    x: per-pixel values, e.g. `[B, H, W]`.
    valid: bool mask broadcastable to `x`.
    axis_name: data axis to `psum` the sum and the count over, or None.

  Returns:
    Scalar `Σ_valid x / max(#valid, 1)`, sums and counts taken over all devices of `axis_name`.
  """
  total = _psum(jnp.sum(jnp.where(valid, x, jnp.zeros((), x.dtype))), axis_name)
  # Counting in int32 stays exact beyond 2^24 pixels, where a float32 count would not.
  count = _psum(jnp.sum(jnp.broadcast_to(valid, x.shape).astype(jnp.int32)), axis_name)
  return total / jnp.maximum(count, 1).astype(total.dtype)


def _one_hot(labels: jax.Array, num_classes: int,
             ignore_index: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns (valid [B,H,W] bool, target [B,H,W] in [0, K), one-hot [B,H,W,K] bool); ignored
  pixels are given class 0. An id outside [0, K) other than `ignore_index` would count as a valid
  pixel of no class; the input pipeline rejects such labels on the host, naming the record
  (`data.pipeline.check_train_ids`), so none reaches a jitted step."""
  if num_classes < 2:
    raise ValueError(f"logits need K >= 2 classes on the last axis, got K={num_classes}")
  valid = labels != ignore_index
  target = jnp.where(valid, labels, 0)
  return valid, target, target[..., None] == jnp.arange(num_classes, dtype=target.dtype)


def _pick(x: jax.Array, one_hot: jax.Array) -> jax.Array:
  """x[..., y] for a one-hot mask over the last axis (differentiable without a scatter)."""
  return jnp.sum(jnp.where(one_hot, x, jnp.zeros((), x.dtype)), axis=-1)


def _gather(x: jax.Array, target: jax.Array) -> jax.Array:
  """x[..., y] for int targets `[...]` in [0, K): a gather, no `[.., K]` temporary. Only where no
  gradient flows back through it (its transpose is a scatter)."""
  return jnp.take_along_axis(x, target[..., None], axis=-1, mode="promise_in_bounds")[..., 0]


def _class_counts(classes: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
  """int32 `[K]`: the number of valid pixels of each class in `classes` (`[B, H, W]`, in [0, K)).

  The one-hot is built class-major (`[K, pixels]`) so the count is a reduction over its minor
  axis; summing a `[.., K]` one-hot over its major axes was 3x slower on XLA:CPU.
  """
  flat = jnp.where(valid, classes, num_classes).reshape(-1)
  return jnp.sum((jnp.arange(num_classes)[:, None] == flat[None, :]).astype(jnp.int32), axis=1)


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
  logp = jax.nn.log_softmax(_at_least_f32(logits), axis=-1)
  valid, _, one_hot = _one_hot(labels, logits.shape[-1], ignore_index)
  return masked_mean(-_pick(logp, one_hot), valid, axis_name)


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
  s = _at_least_f32(student_logits) / temperature
  t = lax.stop_gradient(_at_least_f32(teacher_logits)) / temperature
  log_p = jax.nn.log_softmax(t, axis=-1)
  log_q = jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  valid = labels != ignore_index
  return temperature**2 * masked_mean(kl, valid, axis_name)


def _nontarget_stats(z: jax.Array, one_hot: jax.Array, target: jax.Array):
  """For scaled logits z `[..., K]` and target classes `[...]` (their one-hot `one_hot`):
  (z_y, lse_n, e, sum_e), the reductions DKD needs. No gradient flows through it (custom VJP or
  stop-gradient at every caller).

  lse_n = logsumexp of the K − 1 non-target logits = m + log(sum_e), with m their max and
  e = exp(z − m) (exactly 0 at the target), so p̂_k = e_k / sum_e is the softmax over the
  non-target classes. With d = z_y − lse_n: log p_y = −softplus(−d), log(1 − p_y) = −softplus(d),
  exact and finite for any logits (a confident teacher's 1 − p_y never underflows to log 0); the
  full-softmax logsumexp is never formed.
  """
  z_y = _gather(z, target)
  masked = jnp.where(one_hot, -jnp.inf, z)
  m = lax.stop_gradient(jnp.max(masked, axis=-1))  # finite for K ≥ 2
  e = jnp.exp(masked - m[..., None])
  sum_e = jnp.sum(e, axis=-1)
  return z_y, m + jnp.log(sum_e), e, sum_e


def _dkd_forward(s: jax.Array, t: jax.Array, labels: jax.Array, ignore_index: int):
  """TCLD, NCLD `[B, H, W]` of scaled logits, and what the backward pass needs."""
  valid, target, one_hot = _one_hot(labels, s.shape[-1], ignore_index)
  t_y, lse_t, e_t, sum_t = _nontarget_stats(t, one_hot, target)
  s_y, lse_s, _, _ = _nontarget_stats(s, one_hot, target)
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
  valid, _, one_hot = _one_hot(labels, s.shape[-1], ignore_index)
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
  t = lax.stop_gradient(_at_least_f32(teacher_logits)) / temperature
  s = _at_least_f32(student_logits) / temperature
  return _dkd_scaled(s, t, labels, ignore_index)


def dkd_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
             alpha: float, beta: float, temperature: float, ignore_index: int = IGNORE_INDEX,
             axis_name: str | None = None) -> jax.Array:
  """`DKD = τ² · mean_valid(α·TCLD + β·NCLD)` (DESIGN §2.2). Args as `dkd_terms`; a scalar."""
  tcld, ncld = dkd_terms(student_logits, teacher_logits, labels, temperature=temperature,
                         ignore_index=ignore_index)
  valid = labels != ignore_index
  return temperature**2 * masked_mean(alpha * tcld + beta * ncld, valid, axis_name)


# --- Dynamic weight controllers (DESIGN §2.3) --------------------------------------------------


def _normalised_weights(log_u: jax.Array, valid: jax.Array, scale: float,
                        axis_name: str | None) -> jax.Array:
  """`scale · u / mean_valid(u)` with u = exp(log_u), 0 at invalid pixels, stop-gradient.

  The global (pmax-ed) max of log_u over valid pixels is subtracted before exp; the ratio is
  unchanged and the largest u is exactly 1, so the mean is > 0 whenever a pixel is valid.
  """
  log_u = jnp.where(valid, lax.stop_gradient(log_u), -jnp.inf)
  m = jnp.max(log_u)
  if axis_name is not None:
    m = lax.pmax(m, axis_name)
  m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), m.dtype))  # all-ignored batch: m = −inf.
  u = jnp.where(valid, jnp.exp(log_u - m), jnp.zeros((), log_u.dtype))
  mean = masked_mean(u, valid, axis_name)
  mean = jnp.where(mean > 0, mean, jnp.ones((), mean.dtype))
  return lax.stop_gradient(jnp.where(valid, scale * (u / mean), jnp.zeros((), u.dtype)))


def fixed_controller(student_logits, teacher_logits, labels, *, alpha, beta, temperature,
                     valid, tcld, **kw) -> tuple[jax.Array, jax.Array]:
  """`w_t = α`, `w_n = β` on valid pixels (0 elsewhere): DWLD ≡ DKD."""
  del student_logits, teacher_logits, labels, temperature, kw
  v = valid.astype(tcld.dtype)
  return alpha * v, beta * v


def dynamic_controller(student_logits, teacher_logits, labels, *, alpha, beta, temperature,
                       tcld, ncld, valid, kappa=1.0, axis_name=None,
                       ignore_index=IGNORE_INDEX, log_prior=None,
                       **kw) -> tuple[jax.Array, jax.Array]:
  """DWC of DESIGN §2.3: `u^t = ρ·exp(sg(TCLD)/κ)`, `u^n = exp(sg(NCLD)/κ)`, normalised to α, β.

  ρ = softmax(t)[y] at τ = 1 (teacher reliability). `kappa=±inf` gives the `trust` controller.
  ρ enters the exponent as log ρ (from log_softmax), so a tiny ρ never underflows before the
  max-subtraction. `log_prior` (`[B, H, W]` or None) is added to both log-weights before the
  normalisation (used by `balanced_controller`).
  """
  del student_logits, temperature, kw
  if isinstance(kappa, (int, float)) and kappa == 0:
    raise ValueError("dwld controller temperature kappa must be non-zero (use ±inf for 'trust')")
  inv_kappa = 1.0 / kappa
  _, target, one_hot = _one_hot(labels, teacher_logits.shape[-1], ignore_index)
  t = lax.stop_gradient(_at_least_f32(teacher_logits))
  # log softmax(t)[y] = −softplus(lse_n − t_y): the same reductions as DKD's at τ = 1 (XLA then
  # computes them once), and never a [.., K] log-softmax.
  t_y, lse_n, _, _ = _nontarget_stats(t, one_hot, target)
  log_rho = -jax.nn.softplus(lse_n - t_y)
  tcld, ncld = lax.stop_gradient(tcld), lax.stop_gradient(ncld)
  log_u_t, log_u_n = log_rho + tcld * inv_kappa, ncld * inv_kappa
  if log_prior is not None:
    log_u_t, log_u_n = log_u_t + log_prior, log_u_n + log_prior
  w_t = _normalised_weights(log_u_t, valid, alpha, axis_name)
  w_n = _normalised_weights(log_u_n, valid, beta, axis_name)
  return w_t, w_n


def balanced_controller(student_logits, teacher_logits, labels, *, alpha, beta, temperature,
                        valid, class_balance=1.0, axis_name=None, ignore_index=IGNORE_INDEX,
                        symmetric=False, **kw) -> tuple[jax.Array, jax.Array]:
  """lix_jax's own DWC: `dynamic` times `n_y^(−γ)`, normalised to α, β as in `dynamic`.

  n_y is the number of valid pixels of the pixel's class y in the global batch (psum-ed over
  `axis_name`), γ = `class_balance`. At γ = 1 every class present in the batch gets the same total
  weight, whatever its area -- the per-class normalisation that CWD gets from its softmax over
  pixels; γ = 0 is `dynamic`. The weights still average α and β over valid pixels, so the loss
  stays a global mean (DESIGN §1).

  `symmetric=True` (the `balanced_sym` controller) weights a pixel by the rarer of its target class
  y and the student's arg-max class ŷ: `min(n_y, n_ŷ)^(−γ)`, with n_c counting the pixels labelled
  c plus those predicted c. A student that paints a rare class into a large one is then weighted
  as a rare-class error (false positives count, not only misses), as in CWD, where the rare
  class's own channel is normalised over every pixel.
  """
  num_classes = teacher_logits.shape[-1]
  counts = _class_counts(labels, valid, num_classes)
  if symmetric:
    pred = jnp.argmax(lax.stop_gradient(student_logits), axis=-1)
    counts = counts + _class_counts(pred, valid, num_classes)
  log_counts = jnp.log(jnp.maximum(_psum(counts, axis_name), 1).astype(jnp.float32))
  log_n = log_counts[jnp.where(valid, labels, 0)]  # a gather, no [.., K] temp.
  if symmetric:
    log_n = jnp.minimum(log_n, log_counts[pred])
  return dynamic_controller(student_logits, teacher_logits, labels, alpha=alpha, beta=beta,
                            temperature=temperature, valid=valid, axis_name=axis_name,
                            ignore_index=ignore_index, log_prior=-class_balance * log_n, **kw)


def trust_controller(student_logits, teacher_logits, labels, *, alpha, beta, temperature,
                     **kw) -> tuple[jax.Array, jax.Array]:
  """κ = ∞: reliability only, `w_t = α·ρ/mean_valid(ρ)`, `w_n = β`."""
  kw["kappa"] = math.inf
  return dynamic_controller(student_logits, teacher_logits, labels, alpha=alpha, beta=beta,
                            temperature=temperature, **kw)


CONTROLLERS: dict[str, Controller] = {
    "fixed": fixed_controller,
    "dynamic": dynamic_controller,
    "trust": trust_controller,
    "balanced": balanced_controller,
    "balanced_sym": functools.partial(balanced_controller, symmetric=True),
}


def get_controller(name: str) -> Controller:
  """Looks up a DWC by name; KeyError listing the valid names on a miss."""
  try:
    return CONTROLLERS[name]
  except KeyError:
    raise KeyError(f"unknown dwld controller {name!r}; valid controllers: "
                   f"{sorted(CONTROLLERS)}") from None


def dwld_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
              alpha: float, beta: float, temperature: float,
              controller: str | Controller = "balanced_sym", kappa: float = 4.0,
              ignore_index: int = IGNORE_INDEX, axis_name: str | None = None,
              class_balance: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Dynamically-weighted logit distillation `τ²·mean_valid(w^t⊙TCLD + w^n⊙NCLD)` (DESIGN §2.3).

  The controller (a name in `CONTROLLERS` or a callable) is called as
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
  t = lax.stop_gradient(_at_least_f32(teacher_logits))
  confidence = jnp.max(jax.nn.softmax(t, axis=-1), axis=-1)
  keep = (labels != ignore_index) & (confidence >= threshold)
  targets = teacher_targets(t, keep, ignore_index=ignore_index)
  return cross_entropy(student_logits, targets, ignore_index=ignore_index, axis_name=axis_name)
