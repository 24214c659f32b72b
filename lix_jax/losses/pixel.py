"""Per-pixel building blocks shared by the logit losses (`logit`) and the DWC controllers (`dwc`).

`masked_mean` is the global valid-pixel mean of DESIGN §1 (a sum and a count, each `lax.psum`-ed
over the data axis); `one_hot_targets` gives a label map's valid mask, targets and one-hot;
`pick` / `gather` take `x[..., y]`; `nontarget_stats` are the reductions over the non-target
classes that DKD and the controllers' teacher reliability share. Shapes and dtypes follow
`logit`'s conventions. Split out so that `logit` can import `dwc` while both build on these,
without an import cycle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def at_least_f32(x: jax.Array) -> jax.Array:
  """Promotes bf16/f16 to float32; float64 (x64 tests) stays float64."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def psum(x: jax.Array, axis_name: str | None) -> jax.Array:
  """`lax.psum(x, axis_name)`, or `x` itself when `axis_name` is None."""
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
  total = psum(jnp.sum(jnp.where(valid, x, jnp.zeros((), x.dtype))), axis_name)
  # Counting in int32 stays exact beyond 2^24 pixels, where a float32 count would not.
  count = psum(jnp.sum(jnp.broadcast_to(valid, x.shape).astype(jnp.int32)), axis_name)
  return total / jnp.maximum(count, 1).astype(total.dtype)


def one_hot_targets(labels: jax.Array, num_classes: int,
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


def pick(x: jax.Array, one_hot: jax.Array) -> jax.Array:
  """x[..., y] for a one-hot mask over the last axis (differentiable without a scatter)."""
  return jnp.sum(jnp.where(one_hot, x, jnp.zeros((), x.dtype)), axis=-1)


def gather(x: jax.Array, target: jax.Array) -> jax.Array:
  """x[..., y] for int targets `[...]` in [0, K): a gather, no `[.., K]` temporary. Only where no
  gradient flows back through it (its transpose is a scatter)."""
  return jnp.take_along_axis(x, target[..., None], axis=-1, mode="promise_in_bounds")[..., 0]


def nontarget_stats(z: jax.Array, one_hot: jax.Array, target: jax.Array):
  """For scaled logits z `[..., K]` and target classes `[...]` (their one-hot `one_hot`):
  (z_y, lse_n, e, sum_e), the reductions DKD needs. No gradient flows through it (custom VJP or
  stop-gradient at every caller).

  lse_n = logsumexp of the K − 1 non-target logits = m + log(sum_e), with m their max and
  e = exp(z − m) (exactly 0 at the target), so p̂_k = e_k / sum_e is the softmax over the
  non-target classes. With d = z_y − lse_n: log p_y = −softplus(−d), log(1 − p_y) = −softplus(d),
  exact and finite for any logits (a confident teacher's 1 − p_y never underflows to log 0); the
  full-softmax logsumexp is never formed.
  """
  z_y = gather(z, target)
  masked = jnp.where(one_hot, -jnp.inf, z)
  m = lax.stop_gradient(jnp.max(masked, axis=-1))  # finite for K ≥ 2
  e = jnp.exp(masked - m[..., None])
  sum_e = jnp.sum(e, axis=-1)
  return z_y, m + jnp.log(sum_e), e, sum_e
