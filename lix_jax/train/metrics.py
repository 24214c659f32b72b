"""Segmentation metrics, the metric writer (JSONL + TensorBoard) and progress bars.

* `confusion_matrix` runs on device inside a jitted eval step; accumulate the [K, K] matrices over
  the whole evaluation set (sum them, `lax.psum` them over the data axis), then call
  `segmentation_metrics` once on the host (scenic's segmentation model does the same).
* `MetricWriter` writes `<workdir>/metrics.jsonl` and TensorBoard event files in `<workdir>/tb/`
  with tensorboardX (no TensorFlow). Only the chief process (process 0) writes anything.
* `progress` wraps tqdm; it is silent on non-chief processes and when stderr is not a terminal.

tensorboardX and tqdm are imported lazily, so importing this module for `confusion_matrix` needs
only jax and numpy.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lix_jax import IGNORE_INDEX  # noqa: F401  (re-exported; defined once in lix_jax/__init__.py)


# --------------------------------------------------------------------------------------------
# Confusion matrix and scores.
# --------------------------------------------------------------------------------------------
def confusion_matrix(logits_or_preds: jax.Array, labels: jax.Array, num_classes: int, *,
                     ignore_index: int = IGNORE_INDEX,
                     valid: jax.Array | None = None) -> jax.Array:
  """Confusion matrix of one batch, computed on device (jittable, no host round-trip).

  Args:
    logits_or_preds: logits `[B, H, W, K]` (argmax over the last axis is taken) or integer
      predictions `[B, H, W]` (any shape equal to `labels.shape`).
    labels: `[B, H, W]` integer ground truth; `ignore_index` and any id outside
      `[0, num_classes)` are not counted.
    num_classes: K (static).
    ignore_index: label id that is never counted.
    valid: optional `[B]` bool, False for padded rows of the last evaluation batch; those rows
      are not counted.

  Returns:
    `[K, K]` int32; entry `[g, p]` counts pixels with ground truth g predicted as p (rows = ground
    truth, columns = prediction). Under `shard_map`, `lax.psum` it over the data axis.
  """
  k = int(num_classes)
  labels = jnp.asarray(labels)
  preds = jnp.asarray(logits_or_preds)
  if preds.ndim == labels.ndim + 1:
    if preds.shape[-1] != k:
      raise ValueError(f"logits have {preds.shape[-1]} classes, num_classes is {k} "
                       f"(logits shape {preds.shape})")
    preds = jnp.argmax(preds, axis=-1)
  if preds.shape != labels.shape:
    raise ValueError(f"predictions shape {preds.shape} does not match labels shape {labels.shape}")
  gt = labels.astype(jnp.int32)
  preds = preds.astype(jnp.int32)
  mask = (gt != ignore_index) & (gt >= 0) & (gt < k) & (preds >= 0) & (preds < k)
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.shape != labels.shape[:1]:
      raise ValueError(f"valid must be [B] = {labels.shape[:1]}, got shape {valid.shape}")
    mask = mask & valid.reshape((-1,) + (1,) * (labels.ndim - 1))
  # One scatter-add into K*K bins; masked pixels go to bin 0 with weight 0.
  index = jnp.where(mask, gt * k + preds, 0).reshape(-1)
  counts = jnp.bincount(index, weights=mask.reshape(-1).astype(jnp.int32), length=k * k)
  return counts.reshape(k, k).astype(jnp.int32)


def segmentation_metrics(confmat: np.ndarray,
                         class_names: Sequence[str] | None = None) -> dict[str, Any]:
  """Scores from an accumulated confusion matrix (rows = ground truth, columns = prediction).

  Args:
    confmat: `[K, K]` counts (any integer or float array; a jax array is copied to the host).
    class_names: K names for the per-class entries; default `"0"`, `"1"`, ...

  Returns:
    A dict with
      `miou`: mean IoU over the classes whose union (ground truth or prediction) is non-empty;
      `iou`: `[K]` float64 per-class IoU, **NaN for classes with an empty union** (absent from
        both ground truth and prediction, so they say nothing either way);
      `pixel_acc`: correct pixels / counted pixels;
      `fscore`: mean per-class F1 = 2·TP / (2·TP + FP + FN) over the same classes as `miou`;
      `f1`: `[K]` per-class F1 (NaN where the union is empty);
      `iou/<name>`: each class's IoU as a float;
      `confusion`: the `[K, K]` matrix itself (int64 when given integer counts), so that a results
        file can say which classes are confused with which.
    Every score is NaN when nothing was counted.
  """
  cm = np.asarray(confmat, dtype=np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f"confmat must be a square [K, K] matrix, got shape {cm.shape}")
  k = cm.shape[0]
  if class_names is None:
    class_names = [str(i) for i in range(k)]
  class_names = list(class_names)
  if len(class_names) != k:
    raise ValueError(f"class_names has {len(class_names)} names, confmat has {k} classes")
  tp = np.diag(cm)
  gt_count = cm.sum(axis=1)
  pred_count = cm.sum(axis=0)
  union = gt_count + pred_count - tp
  present = union > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(present, tp / np.where(present, union, 1.0), np.nan)
    f1 = np.where(present, 2 * tp / np.where(present, gt_count + pred_count, 1.0), np.nan)
  total = cm.sum()
  out: dict[str, Any] = {
      "miou": float(np.mean(iou[present])) if present.any() else math.nan,
      "iou": iou,
      "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
      "fscore": float(np.mean(f1[present])) if present.any() else math.nan,
      "f1": f1,
  }
  for name, value in zip(class_names, iou):
    out[f"iou/{name}"] = float(value)
  counts = np.asarray(confmat)
  out["confusion"] = counts.astype(np.int64 if np.issubdtype(counts.dtype, np.integer) else np.float64)
  return out


# --------------------------------------------------------------------------------------------
# Writer.
# --------------------------------------------------------------------------------------------
def _as_float(key: str, value: Any) -> float:
  if np.ndim(value) != 0:
    raise ValueError(f"metric {key!r} is not a scalar (shape {np.shape(value)}); write per-class "
                     "values as separate keys, e.g. segmentation_metrics' 'iou/<name>'")
  try:
    return float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"metric {key!r} is not a number: {value!r}") from e


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard events in `<workdir>/tb/`.

  `metrics.jsonl` gets one JSON object per `write_scalars` call: `{"step": int, key: float, ...}`
  with the keys exactly as given (e.g. `"train/loss"`); non-finite values are written as `null`
  so that every line is strict JSON. The file is opened in append mode, so a resumed run keeps
  its history (steps may then repeat; readers should keep the last value per step, as
  `lix_jax.plots.training_curves` does). TensorBoard gets `add_scalar(key, value, step)` per key
  (not `add_scalars`, which makes a sub-run per key).

  On non-chief processes (`is_chief=False`) every method is a no-op and nothing is created.
  """

  def __init__(self, workdir: str | os.PathLike, *, is_chief: bool = True):
    self.workdir = os.fspath(workdir)
    self.is_chief = bool(is_chief)
    self._jsonl = None
    self._tb = None
    if not self.is_chief:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    os.makedirs(self.workdir, exist_ok=True)
    self.jsonl_path = os.path.join(self.workdir, "metrics.jsonl")
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    self._tb = SummaryWriter(logdir=os.path.join(self.workdir, "tb"))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one JSONL line and one TensorBoard scalar per key.

    Args:
      step: the global step.
      scalars: name -> scalar (Python/NumPy/JAX number). A non-scalar raises ValueError naming
        the key.
    """
    values = {str(k): _as_float(str(k), v) for k, v in scalars.items()}
    if not self.is_chief:
      return
    record = {"step": int(step)}
    record.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()  # A crash loses at most the line being written.
    for k, v in values.items():
      self._tb.add_scalar(k, v, global_step=int(step))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Writes images to TensorBoard.

    Args:
      step: the global step.
      images: tag -> `[H, W, 3]` or `[H, W]` uint8 image.
    """
    checked = {}
    for tag, img in images.items():
      img = np.asarray(img)
      if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3
                                                             and img.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"image {tag!r} must be uint8 [H, W], [H, W, 3] or [H, W, 4], "
                         f"got {img.dtype} {img.shape}")
      checked[tag] = img
    if not self.is_chief:
      return
    for tag, img in checked.items():
      self._tb.add_image(tag, img, global_step=int(step),
                         dataformats="HW" if img.ndim == 2 else "HWC")

  def flush(self) -> None:
    if self.is_chief:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.is_chief and self._tb is not None:
      self._jsonl.close()
      self._tb.close()
      self._tb = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# --------------------------------------------------------------------------------------------
# Progress bar.
# --------------------------------------------------------------------------------------------
class Progress:
  """A tqdm bar with a `loss=…, img/s=…` postfix; tqdm's own bar shows the ETA.

  Iterate over it (when built from an iterable) or call `update()`; `set_metrics(loss=...)`
  refreshes the postfix, where images/s = tqdm's smoothed steps/s × `batch_size`.
  """

  def __init__(self, bar: Any, batch_size: int | None):
    self._bar = bar
    self._batch_size = batch_size

  def __iter__(self):
    return iter(self._bar)

  def update(self, n: int = 1, **metrics: float) -> None:
    self._bar.update(n)
    if metrics:
      self.set_metrics(**metrics)

  def set_metrics(self, **metrics: float) -> None:
    if self._bar.disable:
      return
    postfix = {k: f"{float(v):.4g}" for k, v in metrics.items()}
    fd = self._bar.format_dict
    # tqdm's smoothed rate, or the mean since the start before tqdm has one.
    rate = fd.get("rate") or ((fd["n"] - fd.get("initial", 0)) / fd["elapsed"]
                              if fd.get("elapsed") else None)
    if self._batch_size and rate:
      postfix["img/s"] = f"{rate * self._batch_size:.1f}"
    self._bar.set_postfix(postfix, refresh=False)

  def set_postfix(self, **values: Any) -> None:
    """Sets the postfix as given (tqdm's `set_postfix`)."""
    if not self._bar.disable:
      self._bar.set_postfix(values, refresh=False)

  @property
  def n(self) -> int:
    return self._bar.n

  def close(self) -> None:
    self._bar.close()

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def progress(iterable_or_total: Iterable[Any] | int, desc: str, *, batch_size: int | None = None,
             initial: int = 0, is_chief: bool = True, enabled: bool = True,
             force: bool = False, file: Any = None, leave: bool = True) -> Progress:
  """A progress bar for long loops.

  Args:
    iterable_or_total: an iterable to wrap, or the total number of steps (then call `update`).
    desc: the bar's label.
    batch_size: global images per step; when given the postfix shows images/s.
    initial: the starting count (e.g. the step a resumed run starts from).
    is_chief: False on processes other than 0: the bar is disabled.
    enabled: False disables the bar (e.g. a config switch).
    force: show the bar even when `file` is not a terminal (e.g. in CI logs).
    file: the stream to draw on (default stderr).
    leave: keep the finished bar on screen.

  Returns:
    A `Progress`; disabled bars cost next to nothing.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  file = sys.stderr if file is None else file
  is_tty = bool(getattr(file, "isatty", lambda: False)())
  disable = (not is_chief) or (not enabled) or not (force or is_tty)
  if isinstance(iterable_or_total, int):
    bar = tqdm(total=iterable_or_total, desc=desc, initial=initial, disable=disable, file=file,
               leave=leave, dynamic_ncols=True)
  else:
    total = len(iterable_or_total) if hasattr(iterable_or_total, "__len__") else None
    bar = tqdm(iterable_or_total, total=total, desc=desc, initial=initial, disable=disable,
               file=file, leave=leave, dynamic_ncols=True)
  return Progress(bar, batch_size)
