"""Registry of distillation methods: one entry per method, no if-ladders in the trainer (§2.5).

A method is a `Method(logit, feature, uses_adapters)`: the name of a logit loss in `LOGIT_LOSSES`
(or None), the name of a feature loss in `FEATURE_LOSSES` (or None), and whether the student needs
1×1 adapters to the teacher's widths at the feature taps. `distill_losses` evaluates both parts for
one batch; the trainer combines them as `L_H + λ_L·terms["logit"] + λ_F·terms["feature"]`.

Every loss entry has a uniform signature and returns `(loss, aux)`:
- logit: `fn(student_logits, teacher_logits, labels, *, cfg, axis_name)`;
- feature: `fn(student_feats, teacher_feats, *, cfg, valid_mask, axis_name)`.
`cfg` is a Mapping or `ml_collections.ConfigDict` (the `distill` section). Keys read, with the
defaults of `DEFAULTS` where missing: alpha, beta, temperature, controller, kappa, class_balance
(dwld, dkd, kd),
pl_threshold (pseudo_label), cwd_temperature (cwd; falls back to temperature), sigma, mix,
lambda_kr, lambda_cka, kernel, stride, kr_block_size, kr_impl, cka_max_pixels (arfd, kr, cka), at_p (at), taps and
tap_weights (`distill_losses`).

For unlabelled frames (DESIGN §2.6) pass `labels = logit.teacher_targets(teacher_logits, valid)`:
DKD/DWLD then use the teacher's arg-max as target class and pseudo_label/kd/cwd only read the mask.

Padding is never a target (DESIGN §5): `distill_losses(..., valid_mask=...)` sets the labels to 255
where the mask (resized to the logits) is False, so every logit loss skips those pixels, and gives
the mask to every feature loss, which resizes it to each tap by nearest neighbour. Each loss then
equals the same loss computed on the valid pixels alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from lix_jax.losses import feature
from lix_jax.losses import logit

Aux = dict[str, jax.Array]
LogitLoss = Callable[..., tuple[jax.Array, Aux]]
FeatureLoss = Callable[..., tuple[jax.Array, Aux]]

# Fallbacks for keys missing from the `distill` config.
DEFAULTS: dict[str, Any] = {
    "alpha": 1.0,
    "beta": 1.0,
    "temperature": 1.0,
    "controller": "balanced_sym",
    "kappa": 4.0,
    "class_balance": 1.0,
    "pl_threshold": 0.0,
    "cwd_temperature": None,  # None: use `temperature`.
    "sigma": 1.0,
    "mix": 0.5,
    "lambda_kr": 0.0,
    "lambda_cka": 1.0,
    "kernel": "linear",
    "stride": 1,
    "kr_block_size": 256,
    "kr_impl": "auto",
    "cka_max_pixels": 1024,
    "at_p": 2,
    "taps": None,
    "tap_weights": None,
}


def cfg_get(cfg: Mapping[str, Any] | Any | None, key: str) -> Any:
  """`cfg[key]`, or `DEFAULTS[key]` when cfg is None or lacks the key (dict or ConfigDict)."""
  default = DEFAULTS[key]
  if cfg is None:
    return default
  value = cfg.get(key, default)
  return default if value is None else value


# --- Logit losses ---------------------------------------------------------------------------------


def _kd(s, t, labels, *, cfg, axis_name):
  return logit.kd_loss(s, t, labels, temperature=cfg_get(cfg, "temperature"),
                       axis_name=axis_name), {}


def _dkd(s, t, labels, *, cfg, axis_name):
  return logit.dkd_loss(s, t, labels, alpha=cfg_get(cfg, "alpha"), beta=cfg_get(cfg, "beta"),
                        temperature=cfg_get(cfg, "temperature"), axis_name=axis_name), {}


def _dwld(s, t, labels, *, cfg, axis_name):
  return logit.dwld_loss(s, t, labels, alpha=cfg_get(cfg, "alpha"), beta=cfg_get(cfg, "beta"),
                         temperature=cfg_get(cfg, "temperature"),
                         controller=cfg_get(cfg, "controller"), kappa=cfg_get(cfg, "kappa"),
                         class_balance=cfg_get(cfg, "class_balance"), axis_name=axis_name)


def _cwd(s, t, labels, *, cfg, axis_name):
  temperature = cfg_get(cfg, "cwd_temperature") or cfg_get(cfg, "temperature")
  return feature.cwd_loss(s, t, temperature=temperature, valid_mask=labels != logit.IGNORE_INDEX,
                          axis_name=axis_name), {}


def _pseudo_label(s, t, labels, *, cfg, axis_name):
  return logit.pseudo_label_loss(s, t, labels, threshold=cfg_get(cfg, "pl_threshold"),
                                 axis_name=axis_name), {}


LOGIT_LOSSES: dict[str, LogitLoss] = {
    "kd": _kd,
    "dkd": _dkd,
    "dwld": _dwld,
    "cwd": _cwd,
    "pseudo_label": _pseudo_label,
}

# --- Feature losses -------------------------------------------------------------------------------


def _fitnet(s, t, *, cfg, valid_mask, axis_name):
  del cfg
  return feature.fitnet_loss(s, t, valid_mask=valid_mask, axis_name=axis_name), {}


def _at(s, t, *, cfg, valid_mask, axis_name):
  return feature.at_loss(s, t, p=cfg_get(cfg, "at_p"), valid_mask=valid_mask,
                         axis_name=axis_name), {}


def _arfd_variant(lambda_kr: float | None, lambda_cka: float | None) -> FeatureLoss:
  """ARFD with λ_KR / λ_CKA from cfg, or pinned (0 switches a part off: the KR/CKA ablations)."""

  def fn(s, t, *, cfg, valid_mask, axis_name):
    return feature.arfd_loss(
        s, t, sigma=cfg_get(cfg, "sigma"), mix=cfg_get(cfg, "mix"),
        lambda_kr=cfg_get(cfg, "lambda_kr") if lambda_kr is None else lambda_kr,
        lambda_cka=cfg_get(cfg, "lambda_cka") if lambda_cka is None else lambda_cka,
        kernel=cfg_get(cfg, "kernel"), stride=cfg_get(cfg, "stride"),
        block_size=cfg_get(cfg, "kr_block_size"), kr_impl=cfg_get(cfg, "kr_impl"),
        cka_max_pixels=cfg_get(cfg, "cka_max_pixels"), valid_mask=valid_mask,
        axis_name=axis_name)

  return fn


FEATURE_LOSSES: dict[str, FeatureLoss] = {
    "fitnet": _fitnet,
    "at": _at,
    "arfd": _arfd_variant(None, None),
    "kr": _arfd_variant(None, 0.0),
    "cka": _arfd_variant(0.0, None),
}

# --- Methods --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
  """A distillation method: logit loss name, feature loss name, whether adapters are needed.

  `logit_on_labeled=False` applies the logit loss to unlabelled frames only (pseudo-labelling:
  on labelled images the ground truth already gives the cross-entropy, DESIGN §2.6).
  """
  logit: str | None
  feature: str | None
  uses_adapters: bool
  logit_on_labeled: bool = True


METHODS: dict[str, Method] = {
    "none": Method(None, None, False),
    "kd": Method("kd", None, False),
    "dkd": Method("dkd", None, False),
    "dwld": Method("dwld", None, False),
    "cwd": Method("cwd", None, False),
    "fitnet": Method(None, "fitnet", True),
    "at": Method(None, "at", False),  # Attention maps are channel-pooled: widths may differ.
    "arfd": Method(None, "arfd", True),
    "lix": Method("dwld", "arfd", True),
    "pseudo_label": Method("pseudo_label", None, False, logit_on_labeled=False),
    "kr_only": Method(None, "kr", True),
    "cka_only": Method(None, "cka", True),
}


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
  try:
    return table[name]
  except KeyError:
    raise KeyError(f"unknown {what} {name!r}; valid names: {sorted(table)}") from None


def get_method(name: str) -> Method:
  """The `Method` registered under `name`; KeyError listing the valid names on a miss."""
  return _lookup(METHODS, name, "distillation method")


def _check_taps(feature_name: str, cfg, student_feats, teacher_feats) -> tuple[list[str], list[float]]:
  taps = list(cfg_get(cfg, "taps") or [])
  if not taps:
    raise KeyError(f"feature loss {feature_name!r} needs taps but cfg.taps is empty; "
                   "set distill.taps, e.g. ['stage3', 'decoder']")
  weights = cfg_get(cfg, "tap_weights")
  weights = [1.0] * len(taps) if weights is None else list(weights)
  if len(weights) != len(taps):
    raise ValueError(f"cfg.tap_weights has {len(weights)} entries for {len(taps)} taps {taps}")
  for tap in taps:
    for side, feats in (("student", student_feats), ("teacher", teacher_feats)):
      if feats is None or tap not in feats:
        raise KeyError(f"tap {tap!r} missing from {side}_feats; available: {sorted(feats or {})}")
  return taps, weights


def feature_distill_loss(
    feature_name: str, student_feats: Mapping[str, jax.Array], teacher_feats: Mapping[str, jax.Array],
    *, cfg: Mapping[str, Any] | Any | None = None, valid_mask: jax.Array | None = None,
    axis_name: str | None = None) -> tuple[jax.Array, Aux]:
  """`L_F = Σ_l w_l·loss_l` of feature loss `feature_name` over `cfg.taps` (weights `cfg.tap_weights`).

  `valid_mask`: `[B, H', W']` bool (False on padding), resized by nearest neighbour to every tap
  inside the loss; None = every pixel is valid.

  Returns:
    `(L_F, aux)` with aux under "<loss>/<tap>/<key>" and "<loss>/<tap>/loss".
  """
  feature_fn = _lookup(FEATURE_LOSSES, feature_name, "feature loss")
  taps, weights = _check_taps(feature_name, cfg, student_feats, teacher_feats)
  aux: Aux = {}
  total = jnp.zeros((), jnp.float32)
  for tap, weight in zip(taps, weights):
    loss, sub = feature_fn(student_feats[tap], teacher_feats[tap], cfg=cfg,
                           valid_mask=valid_mask, axis_name=axis_name)
    total = total + weight * loss
    aux[f"{feature_name}/{tap}/loss"] = loss
    aux.update({f"{feature_name}/{tap}/{k}": v for k, v in sub.items()})
  return total, aux


def distill_losses(
    method: str | Method, *, student_logits: jax.Array, teacher_logits: jax.Array,
    labels: jax.Array, student_feats: Mapping[str, jax.Array] | None = None,
    teacher_feats: Mapping[str, jax.Array] | None = None,
    cfg: Mapping[str, Any] | Any | None = None,
    valid_mask: jax.Array | None = None,
    axis_name: str | None = None) -> tuple[dict[str, jax.Array], Aux]:
  """Distillation terms of one batch for a method.

  Args:
    method: a name in `METHODS` or a `Method`.
    student_logits, teacher_logits: `[B, H, W, K]` (teacher stop-gradient inside every loss).
    labels: `[B, H, W]` int32, 255 = ignored (unlabelled frames: `logit.teacher_targets`; its
      `valid` argument should be the same mask as `valid_mask`).
    student_feats, teacher_feats: tap name → `[B, h, w, C]`; student features already mapped to the
      teacher's width by the adapters when `uses_adapters`. Only read when the method has a
      feature loss.
    cfg: the `distill` config (see module docstring); `taps` (list of tap names) is required for
      feature methods, `tap_weights` (same length) defaults to 1 per tap.
    valid_mask: `[B, H', W']` bool pixel mask, False on padding (any resolution: resized by
      nearest neighbour to the logits, where labels become 255, and to each feature tap); None =
      every pixel counts (ARFD runs on all images, DESIGN §2.6).
    axis_name: data axis for global sums/counts, or None.

  Returns:
    `(terms, aux)`: terms = {"logit": L_L, "feature": L_F} (float32 0.0 for a missing part), with
    `L_F = Σ_l w_l·loss_l`; aux = per-loss aux under "<loss>/<key>" (logit) and
    "<loss>/<tap>/<key>" (feature; plus "<loss>/<tap>/loss"). "dwld/w_t" and "dwld/w_n" are
    `[B, H, W]` maps, every other aux entry is a scalar.
  """
  m = method if isinstance(method, Method) else get_method(method)
  # Resolve and check everything before computing anything, so a bad config fails fast.
  logit_fn = None if m.logit is None else _lookup(LOGIT_LOSSES, m.logit, "logit loss")
  if m.feature is not None:
    _lookup(FEATURE_LOSSES, m.feature, "feature loss")
    _check_taps(m.feature, cfg, student_feats, teacher_feats)
  aux: Aux = {}
  logit_term = jnp.zeros((), jnp.float32)
  feature_term = jnp.zeros((), jnp.float32)
  if logit_fn is not None and valid_mask is not None:
    keep = feature.resize_mask(valid_mask, labels.shape)
    labels = jnp.where(keep, labels, jnp.asarray(logit.IGNORE_INDEX, labels.dtype))
  if logit_fn is not None:
    logit_term, sub = logit_fn(student_logits, teacher_logits, labels, cfg=cfg,
                               axis_name=axis_name)
    aux.update({f"{m.logit}/{k}": v for k, v in sub.items()})
  if m.feature is not None:
    feature_term, sub = feature_distill_loss(m.feature, student_feats, teacher_feats, cfg=cfg,
                                             valid_mask=valid_mask, axis_name=axis_name)
    aux.update(sub)
  return {"logit": logit_term, "feature": feature_term}, aux
