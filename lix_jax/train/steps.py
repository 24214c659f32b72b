"""Per-shard pure step functions: `(state, batch[, teacher_variables]) -> (state, metrics)`.

Each function sees one device's shard of the global batch. Collectives are named (`axis_name`):
every loss is a global mean (sums and counts `psum`-ed inside the loss functions, DESIGN §1),
BatchNorm statistics are synchronised by the models' `bn_axis_name`, and gradients are
`pmean`-ed. With `shard_map(check_vma=False)` the per-shard gradient of a globally reduced loss,
`pmean`-ed, is exactly the one-device gradient (tests/test_steps.py checks 8 devices == 1).

Padding is never a target (DESIGN §5). A train batch may carry `valid` (bool `[B, H, W]`, False on
the padding of a scaled crop) and, with unlabelled frames, `unlabeled_valid`; a missing mask means
every pixel is valid. Labels are set to 255 wherever `valid` is False (the pipeline already writes
255 there), the unlabelled targets are `teacher_targets(teacher_logits, unlabeled_valid)`, and the
feature losses get the masks of all images (resized by nearest neighbour to each tap). So CE and
every logit loss on labelled and unlabelled frames, and every feature loss at every tap, are the
losses of the valid pixels alone.

Static arguments (models, method, loss weights) are bound with `functools.partial` by the caller.
A step whose loss or gradient is not finite leaves the state unchanged and reports `nonfinite=1`
and which loss terms were bad, so the loop can stop with a message naming the term.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from lix_jax import losses
from lix_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]


def _guarded_update(state: TrainState, grads, batch_stats, terms: Mapping[str, jax.Array]):
  """Applies the update unless a loss term or the gradient is non-finite (then keeps `state`)."""
  grad_norm = optax.tree.norm(grads)
  finite_terms = {k: jnp.isfinite(v) for k, v in terms.items()}
  new_state, updates = state.apply_gradients(grads, batch_stats=batch_stats)
  # The update too: a finite gradient times a huge learning rate can still overflow to inf.
  finite_update = jax.tree.reduce(lambda ok, u: ok & jnp.all(jnp.isfinite(u)), updates,
                                  jnp.asarray(True))
  ok = (jnp.isfinite(grad_norm) & finite_update
        & jnp.all(jnp.stack(list(finite_terms.values()))))
  new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
  metrics = {
      "l2_grads": grad_norm,
      "l2_params": optax.tree.norm(state.params),
      "l2_updates": optax.tree.norm(updates),
      "nonfinite": 1 - ok.astype(jnp.int32),
      # One flag per term, so the loop can name the offending term.
      **{f"nonfinite/{k}": 1 - v.astype(jnp.int32) for k, v in finite_terms.items()},
  }
  return new_state, metrics


def _pixel_valid(batch: Batch, key: str, images: jax.Array) -> jax.Array:
  """`batch[key]` as a bool `[B, H, W]` mask, or all True when the batch has no such mask."""
  if key in batch:
    return batch[key].astype(bool)
  return jnp.ones(images.shape[:3], bool)


def _masked_labels(batch: Batch) -> jax.Array:
  """The labels with 255 wherever `valid` is False: padding never enters CE or a logit loss."""
  labels = batch["label"]
  if "valid" not in batch:
    return labels
  ignore = jnp.asarray(losses.IGNORE_INDEX, labels.dtype)
  return jnp.where(batch["valid"].astype(bool), labels, ignore)


def model_inputs(batch: Batch, uses_x: bool) -> tuple:
  """A network's positional inputs from a batch: `(image, x)` for a teacher, `(image,)` else."""
  return (batch["image"], batch["x"]) if uses_x else (batch["image"],)


def supervised_step(state: TrainState, batch: Batch, *, model, uses_x: bool,
                    axis_name: str | None = "data") -> tuple[TrainState, dict[str, jax.Array]]:
  """One cross-entropy step of a teacher (`uses_x=True`: RGB + X) or a plain student (RGB).

  `batch`: `image`, `x`, `label` and optionally `valid` (`[B, H, W]`, False on padding).
  """
  inputs = model_inputs(batch, uses_x)
  labels = _masked_labels(batch)

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    (logits, _), new_vars = model.apply(variables, *inputs, train=True, mutable=["batch_stats"])
    ce = losses.cross_entropy(logits, labels, axis_name=axis_name)
    return ce, new_vars["batch_stats"]

  (ce, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  state, metrics = _guarded_update(state, grads, batch_stats, {"ce": ce})
  return state, {"loss": ce, "ce": ce, **metrics}


def _split(tree, n: int):
  """Splits every leaf of `tree` on its leading axis into ([:n], [n:])."""
  return jax.tree.map(lambda a: a[:n], tree), jax.tree.map(lambda a: a[n:], tree)


def distill_step(state: TrainState, batch: Batch, teacher_variables: Mapping[str, Any], *,
                 student, teacher, adapters, distill_loss: losses.DistillLoss,
                 axis_name: str | None = "data") -> tuple[TrainState, dict[str, jax.Array]]:
  """One distillation step (DESIGN §2.5, §2.6): L = L_H + λ_L·(L_L + λ_U·L_L^u) + λ_F·L_F.

  Args:
    state: params {"student": ..., "adapters": ...}; batch_stats of the student.
    batch: `image`, `x`, `label` (labelled) and, when the config has an unlabelled stream,
      `unlabeled_image`, `unlabeled_x`. The unlabelled frames never carry labels: their DKD/DWLD
      target class is the teacher's argmax and they get no cross-entropy. Optional pixel masks
      `valid` and `unlabeled_valid` (bool `[B, H, W]`, False on padding; default all True)
      exclude pixels from every loss (module docstring).
    teacher_variables: the frozen teacher's {"params", "batch_stats"} (run in eval mode).
    student, teacher, adapters: flax modules; `adapters` maps student taps to teacher widths.
    distill_loss: the method's losses and weights, built once from the config
      (`losses.make_distill_loss`) and bound here with `functools.partial`.
  """
  spec = distill_loss.method
  n_labeled = batch["image"].shape[0]
  has_unlabeled = "unlabeled_image" in batch
  images, xs = batch["image"], batch["x"]
  labels = _masked_labels(batch)
  valid = _pixel_valid(batch, "valid", images)
  if has_unlabeled:
    u_valid = _pixel_valid(batch, "unlabeled_valid", batch["unlabeled_image"])
    images = jnp.concatenate([images, batch["unlabeled_image"]], axis=0)
    xs = jnp.concatenate([xs, batch["unlabeled_x"]], axis=0)
    valid = jnp.concatenate([valid, u_valid], axis=0)

  # The frozen teacher: eval-mode BatchNorm, outside the gradient.
  teacher_logits, teacher_taps = jax.lax.stop_gradient(
      teacher.apply(teacher_variables, images, xs, train=False))

  taps = distill_loss.taps
  lambda_l, lambda_f = distill_loss.lambda_l, distill_loss.lambda_f
  lambda_u = distill_loss.lambda_unlabeled

  def loss_fn(params):
    variables = {"params": params["student"], "batch_stats": state.batch_stats}
    # Labelled and unlabelled frames share one forward pass (and its BatchNorm statistics).
    (student_logits, student_taps), new_vars = student.apply(
        variables, images, train=True, mutable=["batch_stats"])
    s_logits, su_logits = _split(student_logits, n_labeled)
    t_logits, tu_logits = _split(teacher_logits, n_labeled)
    ce = losses.cross_entropy(s_logits, labels, axis_name=axis_name)
    terms = {"ce": ce}
    aux = {}
    if spec.logit and spec.logit_on_labeled:
      terms["logit"], aux_l = distill_loss.logit(s_logits, t_logits, labels, axis_name=axis_name)
      aux.update({f"{spec.logit}/{k}": v for k, v in aux_l.items()})
    if spec.logit and has_unlabeled:
      # The teacher's arg-max on the real pixels; 255 (no target) on the padding.
      targets = losses.teacher_targets(tu_logits, u_valid)
      terms["logit_unlabeled"], aux_u = distill_loss.logit(su_logits, tu_logits, targets,
                                                           axis_name=axis_name)
      aux.update({f"{spec.logit}_unlabeled/{k}": v for k, v in aux_u.items()})
    if taps:
      adapted = {name: student_taps[name] for name in taps}
      if spec.uses_adapters:
        adapted = adapters.apply({"params": params["adapters"]}, adapted)
      # Feature distillation needs no labels: it covers labelled and unlabelled frames alike, on
      # their real pixels (the masks are resized to each tap by nearest neighbour).
      terms["feature"], aux_f = distill_loss.feature(adapted, teacher_taps, valid_mask=valid,
                                                     axis_name=axis_name)
      aux.update(aux_f)
    total = (ce + lambda_l * (terms.get("logit", 0.0) + lambda_u * terms.get("logit_unlabeled", 0.0))
             + lambda_f * terms.get("feature", 0.0))
    return total, (terms, aux, new_vars["batch_stats"])

  (total, (terms, aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  state, metrics = _guarded_update(state, grads, batch_stats, {"loss": total, **terms})
  scalars = {k: v for k, v in aux.items() if jnp.ndim(v) == 0}
  return state, {"loss": total, **terms, **scalars, **metrics}


def eval_step(variables: Mapping[str, Any], batch: Batch, *, model, uses_x: bool, num_classes: int,
              axis_name: str | None = "data") -> jax.Array:
  """Returns the global confusion matrix [K, K] of one batch; padded rows (`valid`) are masked."""
  from lix_jax.train import metrics as metrics_lib  # Local: keeps steps importable without tensorboardX.

  logits, _ = model.apply(variables, *model_inputs(batch, uses_x), train=False)
  confmat = metrics_lib.confusion_matrix(logits, batch["label"], num_classes, valid=batch.get("valid"))
  if axis_name is not None:
    confmat = jax.lax.psum(confmat, axis_name)
  return confmat
