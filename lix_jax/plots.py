"""Matplotlib figures: DWC weight maps, CKA bars, training curves and result bar charts.

Entry points: `weight_map_figure`, `cka_bars`, `training_curves` (with `read_jsonl`, the reader of
the `metrics.jsonl` that the trainer's `MetricWriter` writes) and `results_bar_chart`. Each returns
an `[H, W, 3]` uint8 array and, given `path=`, also writes it as a PNG (`viz.save_png`).
Figures are drawn with matplotlib's Agg canvas attached per figure (`Figure` + `FigureCanvasAgg`,
never `pyplot`), so nothing touches matplotlib's global backend or needs a display; matplotlib is
imported inside the functions. Split from `viz` so that pictures made of arrays need no plotting.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lix_jax.viz import maybe_save

_METRIC_LABELS = {"miou": "mIoU", "pixel_acc": "pixel accuracy", "fscore": "F-score"}


def _figure(width_in: float, height_in: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _render(fig) -> np.ndarray:
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _as_2d(name: str, x: np.ndarray) -> np.ndarray:
  a = np.asarray(x, np.float64)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim != 2:
    raise ValueError(f"{name} must be [H, W], got shape {np.shape(x)}")
  return a


def weight_map_figure(w_t: np.ndarray, w_n: np.ndarray, image: np.ndarray | None = None, *,
                      title: str | None = None,
                      path: str | os.PathLike | None = None) -> np.ndarray:
  """Draws the DWC's per-pixel weights (DESIGN §2.3) next to the input image.

  Args:
    w_t: `[H, W]` target-class weights w^t (mean α over valid pixels; 0 on invalid ones).
    w_n: `[H, W]` non-target weights w^n.
    image: optional `[H, W, 3]` uint8 RGB image shown first.
    title: optional figure title.
    path: also write the picture there as a PNG.

  Returns:
    `[H', W', 3]` uint8.
  """
  panels = [("target weight $w^t$", _as_2d("w_t", w_t)),
            ("non-target weight $w^n$", _as_2d("w_n", w_n))]
  if panels[0][1].shape != panels[1][1].shape:
    raise ValueError(f"w_t {panels[0][1].shape} and w_n {panels[1][1].shape} differ in shape")
  h, w = panels[0][1].shape
  n = len(panels) + (image is not None)
  fig = _figure(3.6 * n, 3.6 * h / w + 0.9)
  axes = fig.subplots(1, n, squeeze=False)[0]
  if image is not None:
    axes[0].imshow(np.asarray(image))
    axes[0].set_title("image")
    axes[0].set_axis_off()
  for ax, (name, values) in zip(axes[n - 2:], panels):
    im = ax.imshow(values, cmap="viridis", interpolation="nearest")
    ax.set_title(name)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.8)
  if title:
    fig.suptitle(title)
  return maybe_save(_render(fig), path)


def _bars(ax, labels: Sequence[str], series: Mapping[str, Sequence[float]],
          errors: Mapping[str, Sequence[float]] | None = None, fmt: str = "{:.2f}",
          colors: Sequence[str] | None = None) -> None:
  """Grouped bars with value labels: one group per label, one bar per series."""
  x = np.arange(len(labels))
  width = 0.8 / max(len(series), 1)
  for i, (name, values) in enumerate(series.items()):
    err = None if errors is None else errors.get(name)
    bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, yerr=err,
                  capsize=3 if err is not None else 0, label=name if len(series) > 1 else None,
                  color=colors if len(series) == 1 and colors is not None else None)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=8)
  ax.set_xticks(x, labels, rotation=30 if len(labels) > 4 else 0,
                ha="right" if len(labels) > 4 else "center")
  if len(series) > 1:
    ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)


def cka_bars(cka_per_tap: Mapping[str, float | Mapping[str, float]], *,
             title: str = "student–teacher CKA per tap",
             path: str | os.PathLike | None = None) -> np.ndarray:
  """Bar chart of CKA similarity at each feature tap.

  Args:
    cka_per_tap: tap -> CKA in [0, 1], or tap -> {series (e.g. method) -> CKA} for grouped bars.
    title: the plot's title.
    path: also write the chart there as a PNG.

  Returns:
    `[H, W, 3]` uint8.
  """
  if not cka_per_tap:
    raise ValueError("cka_per_tap is empty")
  taps = [str(t) for t in cka_per_tap]
  if all(isinstance(v, Mapping) for v in cka_per_tap.values()):
    names = list(dict.fromkeys(k for v in cka_per_tap.values() for k in v))
    series = {s: [float(v.get(s, np.nan)) for v in cka_per_tap.values()] for s in names}
  else:
    series = {"CKA": [float(v) for v in cka_per_tap.values()]}
  fig = _figure(max(4.0, 1.0 + 0.9 * len(taps) * max(1, len(series) / 2)), 3.4)
  ax = fig.subplots()
  _bars(ax, taps, series)
  ax.set_ylim(0, 1.1)
  ax.set_xlabel("feature tap")
  ax.set_ylabel("linear CKA")
  ax.set_title(title)
  return maybe_save(_render(fig), path)



def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a `metrics.jsonl` file into a list of dicts (`null` values come back as NaN)."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows.append({k: (math.nan if v is None else v) for k, v in row.items()})
  return rows


def _read_curves(path: str | os.PathLike) -> list[dict[str, Any]]:
  """metrics.jsonl rows; a step logged twice (after a resume) keeps its last value."""
  by_step: dict[int, dict[str, Any]] = {}
  for row in read_jsonl(path):
    by_step.setdefault(int(row["step"]), {}).update(row)
  return [by_step[s] for s in sorted(by_step)]


def training_curves(metrics_jsonl_path: str | os.PathLike | Mapping[str, str | os.PathLike],
                    keys: Sequence[str], *, title: str | None = None,
                    path: str | os.PathLike | None = None) -> np.ndarray:
  """One subplot per key (x = step) from `metrics.jsonl`, optionally several runs overlaid.

  Args:
    metrics_jsonl_path: a `metrics.jsonl` path, or run label -> path to overlay runs.
    keys: metric names to plot (e.g. `"train/loss"`, `"eval/miou"`); a key found in no file
      raises KeyError listing the available ones.
    title: optional figure title.
    path: also write the figure there as a PNG.

  Returns:
    `[H, W, 3]` uint8.
  """
  runs = (dict(metrics_jsonl_path) if isinstance(metrics_jsonl_path, Mapping)
          else {"": metrics_jsonl_path})
  data = {label: _read_curves(p) for label, p in runs.items()}
  available = sorted({k for rows in data.values() for r in rows for k in r} - {"step"})
  for key in keys:
    if key not in available:
      raise KeyError(f"metric {key!r} is not in {list(runs.values())}; available: {available}")
  cols = min(len(keys), 3)
  nrows = math.ceil(len(keys) / cols)
  fig = _figure(4.2 * cols, 3.0 * nrows + (0.3 if title else 0))
  axes = fig.subplots(nrows, cols, squeeze=False).ravel()
  for ax, key in zip(axes, keys):
    for label, rows in data.items():
      pts = [(r["step"], r[key]) for r in rows if key in r]
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, ms=3, label=label or None)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(data) > 1:
      ax.legend(fontsize=8)
  for ax in axes[len(keys):]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  return maybe_save(_render(fig), path)


# From this many rows on, or with a label longer than fits under a vertical bar, `results_bar_chart`
# draws horizontal bars, so every label reads in full.
HORIZONTAL_BARS_FROM = 12
VERTICAL_LABEL_MAX_CHARS = 16


def _horizontal_bars(labels, values, errors, colors, metric, title):
  """One bar per row, top to bottom in the given order, labels in full on the left."""
  longest = max(len(label) for label in labels)
  fig = _figure(min(16.0, 4.0 + 0.075 * longest), 0.8 + 0.27 * len(labels))
  ax = fig.subplots()
  y = np.arange(len(labels))
  bars = ax.barh(y, values, 0.75, xerr=errors, capsize=2 if errors else 0, color=colors)
  ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], padding=3, fontsize=7)
  ax.set_yticks(y, labels, fontsize=7)
  ax.invert_yaxis()
  top = max(v + e for v, e in zip(values, errors or [0.0] * len(values)))
  ax.set_xlim(0, min(100.0, top * 1.1 + 1))
  ax.set_xlabel(f"{_METRIC_LABELS.get(metric, metric)} (%)")
  ax.set_title(title, fontsize=9)
  ax.grid(axis="x", alpha=0.3)
  return _render(fig)


def results_bar_chart(rows: Sequence[Mapping[str, Any]], *, metric: str = "miou",
                      title: str = "test mIoU by method",
                      path: str | os.PathLike | None = None) -> np.ndarray:
  """Bar chart of a score per method, in percent, with optional ± std error bars.

  Args:
    rows: dicts with `method` (or `label`, shown instead), `metric` as a fraction in [0, 1], and
      optionally `std` (same units).
    metric: the key holding the score.
    title: the chart's title.
    path: also write the chart there as a PNG.

  Returns:
    `[H, W, 3]` uint8.
  """
  if not rows:
    raise ValueError("results_bar_chart needs at least one row")
  for i, row in enumerate(rows):
    if metric not in row or ("method" not in row and "label" not in row):
      raise KeyError(f"row {i} needs 'method' (or 'label') and {metric!r}; it has {sorted(row)}")
  labels = [str(r.get("label", r.get("method"))) for r in rows]
  values = [100.0 * float(r[metric]) for r in rows]
  has_std = any("std" in r for r in rows)
  errors = {"": [100.0 * float(r.get("std", 0.0)) for r in rows]} if has_std else None
  # The teacher is a reference, not a competitor: grey.
  colors = ["0.6" if "teacher" in str(r.get("method")).split(":") else "C0" for r in rows]
  if len(rows) >= HORIZONTAL_BARS_FROM or max(map(len, labels)) > VERTICAL_LABEL_MAX_CHARS:
    return maybe_save(_horizontal_bars(labels, values, errors and errors[""], colors, metric,
                                        title), path)
  fig = _figure(max(4.5, 1.2 + 0.85 * len(rows)), 3.6)
  ax = fig.subplots()
  _bars(ax, labels, {"": values}, errors, fmt="{:.1f}", colors=colors)
  top = max(v + (e or 0) for v, e in zip(values, errors[""] if errors else [0] * len(values)))
  ax.set_ylim(0, min(100.0, top * 1.15 + 1))
  ax.set_ylabel(f"{_METRIC_LABELS.get(metric, metric)} (%)")
  ax.set_title(title)
  return maybe_save(_render(fig), path)
