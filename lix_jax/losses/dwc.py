"""Dynamic weight controllers (DESIGN §2.3): the per-pixel weights `(w_t, w_n)` of DWLD.

`CONTROLLERS` maps a name to a controller: `fixed` (DWLD ≡ DKD), `dynamic`, `trust`, and lix_jax's
own `balanced` and `balanced_sym` (the default); `get_controller(name)` looks one up.
`logit.dwld_loss` calls the controller (its docstring gives the call) and weights TCLD and NCLD.
Split from `logit` so that the losses and the weighting schemes read apart.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from lix_jax import IGNORE_INDEX
from lix_jax.losses import pixel

# A controller maps (student_logits, teacher_logits, labels, *, alpha, beta, temperature, **kw) to
# per-pixel weights (w_t, w_n), each [B, H, W]; see `logit.dwld_loss` for the keyword arguments in
# **kw.
Controller = Callable[..., tuple[jax.Array, jax.Array]]


def _class_counts(classes: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
  """int32 `[K]`: the number of valid pixels of each class in `classes` (`[B, H, W]`, in [0, K)).

  The one-hot is built class-major (`[K, pixels]`) so the count is a reduction over its minor
  axis; summing a `[.., K]` one-hot over its major axes was 3x slower on XLA:CPU.
  """
  flat = jnp.where(valid, classes, num_classes).reshape(-1)
  return jnp.sum((jnp.arange(num_classes)[:, None] == flat[None, :]).astype(jnp.int32), axis=1)


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
  mean = pixel.masked_mean(u, valid, axis_name)
  mean = jnp.where(mean > 0, mean, jnp.ones((), mean.dtype))
  return lax.stop_gradient(jnp.where(valid, scale * (u / mean), jnp.zeros((), u.dtype)))


def fixed_controller(student_logits, teacher_logits, labels, *, alpha, beta, temperature,
                     valid, tcld, **kw) -> tuple[jax.Array, jax.Array]:
  """`w_t = α`, `w_n = β` on valid pixels (0 elsewhere): DWLD ≡ DKD."""
  del student_logits, teacher_logits, labels, temperature, kw
  v = valid.astype(tcld.dtype)
  return alpha * v, beta * v


def dynamic_controller(student_logits, teacher_logits, labels, *, alpha, beta, temperature,
                       tcld, ncld, valid, kappa, axis_name=None,
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
  _, target, one_hot = pixel.one_hot_targets(labels, teacher_logits.shape[-1], ignore_index)
  t = lax.stop_gradient(pixel.at_least_f32(teacher_logits))
  # log softmax(t)[y] = −softplus(lse_n − t_y): the same reductions as DKD's at τ = 1 (XLA then
  # computes them once), and never a [.., K] log-softmax.
  t_y, lse_n, _, _ = pixel.nontarget_stats(t, one_hot, target)
  log_rho = -jax.nn.softplus(lse_n - t_y)
  tcld, ncld = lax.stop_gradient(tcld), lax.stop_gradient(ncld)
  log_u_t, log_u_n = log_rho + tcld * inv_kappa, ncld * inv_kappa
  if log_prior is not None:
    log_u_t, log_u_n = log_u_t + log_prior, log_u_n + log_prior
  w_t = _normalised_weights(log_u_t, valid, alpha, axis_name)
  w_n = _normalised_weights(log_u_n, valid, beta, axis_name)
  return w_t, w_n


def balanced_controller(student_logits, teacher_logits, labels, *, alpha, beta, temperature,
                        valid, class_balance, axis_name=None, ignore_index=IGNORE_INDEX,
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
  log_counts = jnp.log(jnp.maximum(pixel.psum(counts, axis_name), 1).astype(jnp.float32))
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
