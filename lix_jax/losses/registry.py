"""Registry of distillation methods, and the one builder of their losses (DESIGN §2.5, §7).

A method is a `Method(logit, feature, uses_adapters)`: the name of a logit loss in `LOGIT_LOSSES`
(or None), the name of a feature loss in `FEATURE_LOSSES` (or None), and whether the student needs
1×1 adapters to the teacher's widths at the feature taps.

`make_distill_loss(method, distill_config)` is called once, outside the traced step: it reads every
hyper-parameter the method uses from the `distill` config (a Mapping or ConfigDict; its defaults
live in `lix_jax.config.base_config`, nowhere else — a missing key is a KeyError naming it) and
binds them, so the step receives a `DistillLoss` of ready functions:
- `logit(student_logits, teacher_logits, labels, *, axis_name) -> (loss, aux)`;
- `feature(student_feats, teacher_feats, *, valid_mask, axis_name) -> (L_F, aux)`, the tap-weighted
  sum over `distill.taps`;
and the weights λ_L, λ_F, λ_U. The trainer combines them as
`L_H + λ_L·(L_L + λ_U·L_L^u) + λ_F·L_F`; `DistillLoss.terms` evaluates both parts for one batch.

For unlabelled frames (DESIGN §2.6) pass `labels = logit.teacher_targets(teacher_logits, valid)`:
DKD/DWLD then use the teacher's arg-max as target class and pseudo_label/kd/cwd only read the mask.

Padding is never a target (DESIGN §5): `terms(..., valid_mask=...)` sets the labels to 255 where
the mask (resized to the logits) is False, so every logit loss skips those pixels, and gives the
mask to every feature loss, which resizes it to each tap by nearest neighbour. Each loss then
equals the same loss computed on the valid pixels alone.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from lix_jax import IGNORE_INDEX
from lix_jax.losses import dwc, feature
from lix_jax.losses import logit

Aux = dict[str, jax.Array]
LogitLoss = Callable[..., tuple[jax.Array, Aux]]
FeatureLoss = Callable[..., tuple[jax.Array, Aux]]


class _Keys:
  """Reads `distill` config keys by name; a missing key is a KeyError naming `distill.<key>`."""

  def __init__(self, cfg: Mapping[str, Any] | Any, method: str):
    self._cfg, self._method = cfg, method

  def __getitem__(self, key: str) -> Any:
    if self._cfg is None or key not in self._cfg:
      raise KeyError(f"distill.{key} is missing from the config of method {self._method!r} "
                     "(lix_jax.config.base_config holds every key with its default)")
    return self._cfg[key]


def _no_aux(fn: Callable[..., jax.Array]) -> LogitLoss:
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    return fn(*args, **kwargs), {}
  return wrapped


# --- Logit losses: name -> builder(keys) -> fn(s, t, labels, *, axis_name) -> (loss, aux) --------


def _cwd(c: _Keys) -> LogitLoss:
  # CWD's own temperature when set (> 0), else the KD temperature.
  temperature = c["cwd_temperature"] or c["temperature"]

  def fn(s, t, labels, *, axis_name=None):
    return feature.cwd_loss(s, t, temperature=temperature, valid_mask=labels != IGNORE_INDEX,
                            axis_name=axis_name), {}
  return fn


LOGIT_LOSSES: dict[str, Callable[[_Keys], LogitLoss]] = {
    "kd": lambda c: _no_aux(functools.partial(logit.kd_loss, temperature=c["temperature"])),
    "dkd": lambda c: _no_aux(functools.partial(
        logit.dkd_loss, alpha=c["alpha"], beta=c["beta"], temperature=c["temperature"])),
    "dwld": lambda c: functools.partial(
        logit.dwld_loss, alpha=c["alpha"], beta=c["beta"], temperature=c["temperature"],
        controller=c["controller"], kappa=c["kappa"], class_balance=c["class_balance"]),
    "cwd": _cwd,
    "pseudo_label": lambda c: _no_aux(functools.partial(logit.pseudo_label_loss,
                                                        threshold=c["pl_threshold"])),
}

# --- Feature losses, per tap: name -> builder(keys) -> fn(s, t, *, valid_mask, axis_name) --------


def _arfd(lambda_kr: float | None, lambda_cka: float | None) -> Callable[[_Keys], FeatureLoss]:
  """ARFD with λ_KR / λ_CKA from the config, or pinned (0 switches a part off: the ablations)."""
  def build(c: _Keys) -> FeatureLoss:
    return functools.partial(  # arfd_loss returns (loss, aux) itself.
        feature.arfd_loss, sigma=c["sigma"], mix=c["mix"],
        lambda_kr=c["lambda_kr"] if lambda_kr is None else lambda_kr,
        lambda_cka=c["lambda_cka"] if lambda_cka is None else lambda_cka,
        kernel=c["kernel"], stride=c["stride"], block_size=c["kr_block_size"],
        kr_impl=c["kr_impl"], cka_max_pixels=c["cka_max_pixels"])
  return build


FEATURE_LOSSES: dict[str, Callable[[_Keys], FeatureLoss]] = {
    "fitnet": lambda c: _no_aux(feature.fitnet_loss),
    "at": lambda c: _no_aux(functools.partial(feature.at_loss, p=c["at_p"])),
    "arfd": _arfd(None, None),
    "kr": _arfd(None, 0.0),
    "cka": _arfd(0.0, None),
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


def _tap_weights(c: _Keys, feature_name: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
  taps = tuple(c["taps"] or ())
  if not taps:
    raise KeyError(f"feature loss {feature_name!r} needs taps but distill.taps is empty; "
                   "set distill.taps, e.g. ['stage3', 'decoder']")
  weights = tuple(float(w) for w in c["tap_weights"])
  if len(weights) != len(taps):
    raise ValueError(f"distill.tap_weights has {len(weights)} entries for {len(taps)} taps {taps}")
  return taps, weights


def _check_feats(taps, student_feats, teacher_feats) -> None:
  for tap in taps:
    for side, feats in (("student", student_feats), ("teacher", teacher_feats)):
      if feats is None or tap not in feats:
        raise KeyError(f"tap {tap!r} missing from {side}_feats; available: {sorted(feats or {})}")


@dataclasses.dataclass(frozen=True)
class DistillLoss:
  """A method's losses with the config's hyper-parameters bound (`make_distill_loss`).

  `logit` / `feature` are None when the method has no such part; `taps` are the feature taps
  (empty without a feature part). Built once on the host; its functions are traced in the step.
  """
  name: str
  method: Method
  logit: LogitLoss | None
  feature_name: str | None
  feature_fn: FeatureLoss | None
  taps: tuple[str, ...]
  tap_weights: tuple[float, ...]
  lambda_l: float
  lambda_f: float
  lambda_unlabeled: float

  def feature(self, student_feats: Mapping[str, jax.Array], teacher_feats: Mapping[str, jax.Array],
              *, valid_mask: jax.Array | None = None, axis_name: str | None = None
              ) -> tuple[jax.Array, Aux]:
    """`L_F = Σ_l w_l·loss_l` over the taps; aux under "<loss>/<tap>/<key>" and "<loss>/<tap>/loss".

    `valid_mask`: `[B, H', W']` bool (False on padding), resized by nearest neighbour to every tap
    inside the loss; None = every pixel is valid.
    """
    _check_feats(self.taps, student_feats, teacher_feats)
    aux: Aux = {}
    total = jnp.zeros((), jnp.float32)
    for tap, weight in zip(self.taps, self.tap_weights):
      loss, sub = self.feature_fn(student_feats[tap], teacher_feats[tap], valid_mask=valid_mask,
                                  axis_name=axis_name)
      total = total + weight * loss
      aux[f"{self.feature_name}/{tap}/loss"] = loss
      aux.update({f"{self.feature_name}/{tap}/{k}": v for k, v in sub.items()})
    return total, aux

  def terms(self, *, student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
            student_feats: Mapping[str, jax.Array] | None = None,
            teacher_feats: Mapping[str, jax.Array] | None = None,
            valid_mask: jax.Array | None = None, axis_name: str | None = None
            ) -> tuple[dict[str, jax.Array], Aux]:
    """Distillation terms of one batch.

    Args:
      student_logits, teacher_logits: `[B, H, W, K]` (teacher stop-gradient inside every loss).
      labels: `[B, H, W]` int32, 255 = ignored (unlabelled frames: `logit.teacher_targets`; its
        `valid` argument should be the same mask as `valid_mask`).
      student_feats, teacher_feats: tap name → `[B, h, w, C]`; student features already mapped to
        the teacher's width by the adapters when `method.uses_adapters`. Read only with a feature
        part.
      valid_mask: `[B, H', W']` bool pixel mask, False on padding (any resolution: resized by
        nearest neighbour to the logits, where labels become 255, and to each feature tap); None =
        every pixel counts (ARFD runs on all images, DESIGN §2.6).
      axis_name: data axis for global sums/counts, or None.

    Returns:
      `(terms, aux)`: terms = {"logit": L_L, "feature": L_F} (float32 0.0 for a missing part); aux
      = per-loss aux under "<loss>/<key>" (logit) and "<loss>/<tap>/<key>" (feature; plus
      "<loss>/<tap>/loss"). "dwld/w_t" and "dwld/w_n" are `[B, H, W]` maps, every other aux entry
      is a scalar.
    """
    if self.feature_fn is not None:  # Checked before anything is computed.
      _check_feats(self.taps, student_feats, teacher_feats)
    aux: Aux = {}
    logit_term = jnp.zeros((), jnp.float32)
    feature_term = jnp.zeros((), jnp.float32)
    if self.logit is not None:
      if valid_mask is not None:
        keep = feature.resize_mask(valid_mask, labels.shape)
        labels = jnp.where(keep, labels, jnp.asarray(IGNORE_INDEX, labels.dtype))
      logit_term, sub = self.logit(student_logits, teacher_logits, labels, axis_name=axis_name)
      aux.update({f"{self.method.logit}/{k}": v for k, v in sub.items()})
    if self.feature_fn is not None:
      feature_term, sub = self.feature(student_feats, teacher_feats, valid_mask=valid_mask,
                                       axis_name=axis_name)
      aux.update(sub)
    return {"logit": logit_term, "feature": feature_term}, aux


def make_distill_loss(method: str, distill_config: Mapping[str, Any] | Any) -> DistillLoss:
  """The losses of `method` with every hyper-parameter read from `distill_config` (the config's
  `distill` section) and bound: called once, outside the traced step. Unknown names (method,
  controller, loss) and missing keys raise here, before anything is traced."""
  spec = get_method(method)
  c = _Keys(distill_config, method)
  logit_fn = None
  if spec.logit is not None:
    logit_fn = _lookup(LOGIT_LOSSES, spec.logit, "logit loss")(c)
    if spec.logit == "dwld":
      dwc.get_controller(c["controller"])
  feature_fn, taps, weights = None, (), ()
  if spec.feature is not None:
    feature_fn = _lookup(FEATURE_LOSSES, spec.feature, "feature loss")(c)
    taps, weights = _tap_weights(c, spec.feature)
  return DistillLoss(name=method, method=spec, logit=logit_fn, feature_name=spec.feature,
                     feature_fn=feature_fn, taps=taps, tap_weights=weights,
                     lambda_l=float(c["lambda_l"]), lambda_f=float(c["lambda_f"]),
                     lambda_unlabeled=float(c["lambda_unlabeled"]))


def distill_losses(method: str, *, cfg: Mapping[str, Any] | Any, **inputs
                   ) -> tuple[dict[str, jax.Array], Aux]:
  """`make_distill_loss(method, cfg).terms(**inputs)`: build and evaluate in one call."""
  return make_distill_loss(method, cfg).terms(**inputs)
