"""Pictures made of arrays: colour maps, label and X-modality colouring, prediction grids, PNGs.

Entry points: `colorize` (label maps), `depth_to_rgb` / `x_to_rgb` (the X modality), `class_legend`
and `prediction_grid` (an image table with titles and a class legend), `save_png`. Each returns an
`[H, W, 3]` uint8 array; given `path=`, `prediction_grid` also writes it as a PNG. NumPy and
Pillow (imported inside the functions), plus matplotlib's colormap table for depth; the
matplotlib figures (weight maps, CKA bars, curves, result charts) are in `lix_jax.plots`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lix_jax import IGNORE_INDEX  # noqa: F401  (re-exported; defined once in lix_jax/__init__.py)

# Cityscapes train-id colours (road, sidewalk, building, wall, fence, pole, traffic light,
# traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train, motorcycle,
# bicycle).
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32)], dtype=np.uint8)

X_MODALITIES = ("depth", "disparity", "normal")


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


def maybe_save(arr: np.ndarray, path: str | os.PathLike | None) -> np.ndarray:
  """Returns `arr`, written first as a PNG to `path` unless `path` is None."""
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
  return maybe_save(out, path)
