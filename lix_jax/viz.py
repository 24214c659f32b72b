"""Pictures: colour maps, prediction grids, DWC weight maps, CKA bars and result plots.

Every function returns an `[H, W, 3]` uint8 array and, given `path=`, also writes it as a PNG.
Figures are drawn with matplotlib's Agg canvas attached per figure (`Figure` +
`FigureCanvasAgg`, never `pyplot`), so nothing touches matplotlib's global backend or needs a
display; matplotlib and PIL are imported inside the functions.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = 255

# Cityscapes train-id colours (road, sidewalk, building, wall, fence, pole, traffic light,
# traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train, motorcycle,
# bicycle).
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32)], dtype=np.uint8)

X_MODALITIES = ("depth", "disparity", "normal")
_METRIC_LABELS = {"miou": "mIoU", "pixel_acc": "pixel accuracy", "fscore": "F-score"}


def _lut(palette: np.ndarray | None) -> np.ndarray:
  """A 256-entry colour table: the palette, then fixed pseudo-random colours, 255 black."""
  palette = CITYSCAPES_PALETTE if palette is None else np.asarray(palette, np.uint8)
  if palette.ndim != 2 or palette.shape[1] != 3:
    raise ValueError(f"palette must be [N, 3], got shape {palette.shape}")
  lut = np.random.default_rng(0).integers(40, 256, size=(256, 3)).astype(np.uint8)
  n = min(len(palette), IGNORE_INDEX)
  lut[:n] = palette[:n]
  lut[IGNORE_INDEX] = 0
  return lut


def colorize(label_map: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
  """Colours a label map.

  Args:
    label_map: `[H, W]` (or `[..., H, W]`) integer class ids; 255 = ignore.
    palette: `[N, 3]` uint8 colours for ids 0..N-1 (default: the 19 Cityscapes colours); ids
      beyond it get fixed pseudo-random colours.

  Returns:
    `[..., H, W, 3]` uint8; ignore pixels are black.
  """
  labels = np.asarray(label_map)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"label_map must hold integer ids, got dtype {labels.dtype}")
  if labels.size and (labels.min() < 0 or labels.max() > 255):
    raise ValueError(f"label ids must be in [0, 255], got [{labels.min()}, {labels.max()}]")
  return _lut(palette)[labels.astype(np.int64)]


def _colormap(values: np.ndarray, mask: np.ndarray, cmap: str, vmin: float | None,
              vmax: float | None) -> np.ndarray:
  import matplotlib  # pylint: disable=g-import-not-at-top
  valid = values[mask & np.isfinite(values)]
  lo = float(np.percentile(valid, 2)) if vmin is None and valid.size else (vmin or 0.0)
  hi = float(np.percentile(valid, 98)) if vmax is None and valid.size else (vmax or 1.0)
  scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
  rgb = (matplotlib.colormaps[cmap](np.nan_to_num(scaled))[..., :3] * 255).round()
  rgb = rgb.astype(np.uint8)
  rgb[~(mask & np.isfinite(values))] = 0
  return rgb


def depth_to_rgb(depth: np.ndarray, *, vmin: float | None = None, vmax: float | None = None,
                 cmap: str = "magma_r", missing_value: float | None = 0.0) -> np.ndarray:
  """Colours a depth map (near = bright with the default `magma_r`).

  Args:
    depth: `[H, W]` or `[H, W, 1]` depth.
    vmin, vmax: the colour range; default the 2nd and 98th percentiles of the valid pixels.
    cmap: a matplotlib colormap name.
    missing_value: pixels equal to it are black (None: no missing pixels).

  Returns:
    `[H, W, 3]` uint8.
  """
  d = np.asarray(depth, np.float64)
  if d.ndim == 3 and d.shape[-1] == 1:
    d = d[..., 0]
  if d.ndim != 2:
    raise ValueError(f"depth must be [H, W] or [H, W, 1], got shape {np.shape(depth)}")
  mask = np.ones(d.shape, bool) if missing_value is None else d != missing_value
  return _colormap(d, mask, cmap, vmin, vmax)


def x_to_rgb(x: np.ndarray, modality: str, **kwargs: Any) -> np.ndarray:
  """Pictures the X modality: depth / disparity through a colormap, normals as (n + 1) / 2.

  Args:
    x: `[H, W]` / `[H, W, 1]` depth or disparity, or `[H, W, 3]` unit normals.
    modality: one of `X_MODALITIES`.
    **kwargs: passed to `depth_to_rgb` (depth and disparity).

  Returns:
    `[H, W, 3]` uint8. Disparity is drawn bright where large (near); normals are clipped to
    [-1, 1] first.
  """
  if modality == "depth":
    return depth_to_rgb(x, **kwargs)
  if modality == "disparity":
    return depth_to_rgb(x, **{"cmap": "magma", **kwargs})
  if modality == "normal":
    n = np.asarray(x, np.float64)
    if n.ndim != 3 or n.shape[-1] != 3:
      raise ValueError(f"normals must be [H, W, 3], got shape {n.shape}")
    return ((np.clip(n, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8)
  raise KeyError(f"unknown x modality {modality!r}; valid: {', '.join(X_MODALITIES)}")


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes an `[H, W]`, `[H, W, 3]` or `[H, W, 4]` uint8 array as a PNG (creating folders)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  arr = np.asarray(array)
  if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3
                                                         and arr.shape[-1] not in (3, 4)):
    raise ValueError(f"{path}: expected uint8 [H, W], [H, W, 3] or [H, W, 4], "
                     f"got {arr.dtype} {arr.shape}")
  parent = os.path.dirname(os.fspath(path))
  if parent:
    os.makedirs(parent, exist_ok=True)
  Image.fromarray(arr).save(path)


def _maybe_save(arr: np.ndarray, path: str | os.PathLike | None) -> np.ndarray:
  if path is not None:
    save_png(path, arr)
  return arr


def _font(size: int):
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  try:
    return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType (>= 10.1)
  except TypeError:
    return ImageFont.load_default()


def class_legend(class_names: Sequence[str], palette: np.ndarray | None = None
                 ) -> list[tuple[str, tuple[int, int, int]]]:
  """`(name, colour)` per class as `colorize` paints it (for `prediction_grid(legend=...)`)."""
  lut = _lut(palette)
  return [(str(name), tuple(int(v) for v in lut[i])) for i, name in enumerate(class_names)]


def _legend_strip(legend: Sequence[tuple[str, Sequence[int]]], width: int, font_size: int):
  """A white `[h, width, 3]` strip of colour swatches, each followed by its class name, wrapped
  into as many lines as the width needs."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  font = _font(font_size)
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  box, pad, line_h = font_size, font_size // 2, font_size + 8
  items, x, y = [], pad, pad
  for name, colour in legend:
    item_w = box + 4 + int(measure.textlength(name, font=font)) + 2 * pad
    if x + item_w > width and x > pad:
      x, y = pad, y + line_h
    items.append((x, y, name, tuple(int(c) for c in colour)))
    x += item_w
  canvas = Image.new("RGB", (width, y + line_h + pad), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for x, y, name, colour in items:
    draw.rectangle([x, y, x + box - 1, y + box - 1], fill=colour, outline=(0, 0, 0))
    draw.text((x + box + 4, y + box / 2), name, fill=(0, 0, 0), font=font, anchor="lm")
  return np.asarray(canvas)


def prediction_grid(rows: Sequence[Mapping[str, np.ndarray]], columns: Sequence[str], *,
                    min_cell_width: int = 160, gap: int = 4,
                    legend: Sequence[tuple[str, Sequence[int]]] | None = None,
                    path: str | os.PathLike | None = None) -> np.ndarray:
  """Tiles images into a grid with a title above each column.

  Args:
    rows: one dict per example, column name -> `[H, W, 3]` (or `[H, W]`) uint8 image; every
      cell has the same H, W.
    columns: the column names, in order (e.g. RGB | X | ground truth | teacher | student |
      LIX student); each must be a key of every row.
    min_cell_width: small images are enlarged by an integer factor (nearest neighbour, so labels
      stay crisp) until at least this wide, so that titles fit.
    gap: white pixels between cells.
    legend: `(class name, rgb colour)` pairs (`class_legend`), drawn as swatches under the grid.
    path: also write the grid there as a PNG.

  Returns:
    `[H', W', 3]` uint8.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  if not rows or not columns:
    raise ValueError("prediction_grid needs at least one row and one column")
  cells = []
  for r, row in enumerate(rows):
    line = []
    for name in columns:
      if name not in row:
        raise KeyError(f"row {r} has no column {name!r}; it has {sorted(row)}")
      img = np.asarray(row[name])
      if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
      if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"row {r}, column {name!r}: expected uint8 [H, W, 3], "
                         f"got {img.dtype} {img.shape}")
      line.append(img)
    cells.append(line)
  h, w = cells[0][0].shape[:2]
  for r, line in enumerate(cells):
    for name, img in zip(columns, line):
      if img.shape[:2] != (h, w):
        raise ValueError(f"row {r}, column {name!r}: shape {img.shape[:2]} differs from {(h, w)}")
  scale = max(1, math.ceil(min_cell_width / w))
  ch, cw = h * scale, w * scale
  font_size = int(np.clip(cw // 10, 12, 22))
  title_h = font_size + 10
  grid = np.full((title_h + len(cells) * (ch + gap), len(columns) * (cw + gap) - gap, 3), 255,
                 np.uint8)
  for r, line in enumerate(cells):
    for c, img in enumerate(line):
      y0, x0 = title_h + r * (ch + gap), c * (cw + gap)
      grid[y0:y0 + ch, x0:x0 + cw] = img.repeat(scale, axis=0).repeat(scale, axis=1)
  canvas = Image.fromarray(grid)
  draw = ImageDraw.Draw(canvas)
  font = _font(font_size)
  for c, name in enumerate(columns):
    text = str(name)
    # Shorten titles that would spill over into the next column.
    while len(text) > 1 and draw.textlength(text, font=font) > cw:
      text = text[:-2] + "…"
    x = c * (cw + gap) + (cw - draw.textlength(text, font=font)) / 2
    draw.text((x, title_h / 2), text, fill=(0, 0, 0), font=font, anchor="lm")
  out = np.asarray(canvas)
  if legend:
    out = np.concatenate([out, _legend_strip(legend, out.shape[1], font_size)], axis=0)
  return _maybe_save(out, path)


# --------------------------------------------------------------------------------------------
# matplotlib figures.
# --------------------------------------------------------------------------------------------
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
  return _maybe_save(_render(fig), path)


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
  return _maybe_save(_render(fig), path)


def _read_curves(path: str | os.PathLike) -> list[dict[str, Any]]:
  """metrics.jsonl rows; a step logged twice (after a resume) keeps its last value."""
  from lix_jax.train.metrics import read_jsonl  # pylint: disable=g-import-not-at-top
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
  return _maybe_save(_render(fig), path)


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
    return _maybe_save(_horizontal_bars(labels, values, errors and errors[""], colors, metric,
                                        title), path)
  fig = _figure(max(4.5, 1.2 + 0.85 * len(rows)), 3.6)
  ax = fig.subplots()
  _bars(ax, labels, {"": values}, errors, fmt="{:.1f}", colors=colors)
  top = max(v + (e or 0) for v, e in zip(values, errors[""] if errors else [0] * len(values)))
  ax.set_ylim(0, min(100.0, top * 1.15 + 1))
  ax.set_ylabel(f"{_METRIC_LABELS.get(metric, metric)} (%)")
  ax.set_title(title)
  return _maybe_save(_render(fig), path)
