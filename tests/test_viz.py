"""Tests of lix_jax.viz and lix_jax.plots: colour maps against their definitions, grid layout,
figures render."""
from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pytest
from PIL import Image

from lix_jax import plots, viz


def test_colorize_palette_and_ignore():
  labels = np.array([[0, 1, 18], [255, 13, 40]], np.int32)
  rgb = viz.colorize(labels)
  assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
  cityscapes = {0: (128, 64, 128), 1: (244, 35, 232), 13: (0, 0, 142), 18: (119, 11, 32)}
  for (i, j), label in np.ndenumerate(labels):
    if label in cityscapes:
      assert tuple(rgb[i, j]) == cityscapes[label]
  assert tuple(rgb[1, 0]) == (0, 0, 0)          # ignore -> black
  assert rgb[1, 2].max() > 0                    # beyond the palette: some colour, not black
  np.testing.assert_array_equal(viz.colorize(labels), rgb)  # deterministic
  custom = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
  got = viz.colorize(np.array([[1, 0, 255]]), palette=custom)
  np.testing.assert_array_equal(got[0], [[40, 50, 60], [10, 20, 30], [0, 0, 0]])
  assert viz.colorize(np.zeros((2, 4, 5), np.uint8)).shape == (2, 4, 5, 3)
  with pytest.raises(ValueError, match="ids"):
    viz.colorize(np.array([[-1]]))


def test_x_to_rgb_depth_and_normals():
  depth = np.array([[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]], np.float32)
  got = viz.x_to_rgb(depth[..., None], "depth", vmin=2.0, vmax=10.0)
  want = matplotlib.colormaps["magma_r"](np.clip((depth - 2.0) / 8.0, 0, 1))[..., :3]
  want = (want * 255).round().astype(np.uint8)
  want[0, 0] = 0  # depth 0 = missing
  np.testing.assert_array_equal(got, want)
  auto = viz.depth_to_rgb(depth)
  assert auto.shape == (2, 3, 3) and auto.dtype == np.uint8 and tuple(auto[0, 0]) == (0, 0, 0)

  n = np.random.default_rng(0).uniform(-1, 1, (4, 5, 3))
  np.testing.assert_array_equal(viz.x_to_rgb(n, "normal"),
                                np.round((n + 1) / 2 * 255).astype(np.uint8))
  assert viz.x_to_rgb(depth, "disparity").shape == (2, 3, 3)
  with pytest.raises(KeyError, match="depth, disparity, normal"):
    viz.x_to_rgb(depth, "lidar")


def test_prediction_grid_layout(tmp_path):
  h, w, gap = 6, 32, 4
  rng = np.random.default_rng(0)
  columns = ["RGB", "X", "ground truth", "teacher", "student", "LIX student"]
  rows = [{c: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for c in columns} for _ in range(2)]
  rows[1]["X"] = rng.integers(0, 255, (h, w), dtype=np.uint8)  # grey cells are accepted
  grid = viz.prediction_grid(rows, columns, min_cell_width=160, gap=gap, path=tmp_path / "g.png")
  scale = math.ceil(160 / w)
  ch, cw = h * scale, w * scale
  assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
  assert grid.shape[1] == len(columns) * cw + (len(columns) - 1) * gap
  title_h = grid.shape[0] - 2 * (ch + gap)
  assert title_h > 10
  # The last row's cells sit at the bottom, enlarged by nearest neighbour.
  y0 = title_h + ch + gap
  for c, name in enumerate(columns):
    cell = rows[1][name] if rows[1][name].ndim == 3 else np.repeat(rows[1][name][..., None], 3, -1)
    x0 = c * (cw + gap)
    np.testing.assert_array_equal(grid[y0:y0 + ch, x0:x0 + cw],
                                  np.kron(cell, np.ones((scale, scale, 1), np.uint8)))
    title = grid[:title_h, x0:x0 + cw]
    assert (title < 128).any(), f"no title text above column {name!r}"
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), grid)
  # A legend adds a strip of class-colour swatches under the grid, the cells unchanged.
  legend = viz.class_legend(["road", "sidewalk", "car"])
  assert legend[0] == ("road", tuple(int(v) for v in viz.colorize(np.zeros((1, 1), np.uint8))[0, 0]))
  with_legend = viz.prediction_grid(rows, columns, min_cell_width=160, gap=gap, legend=legend)
  assert with_legend.shape[1] == grid.shape[1] and with_legend.shape[0] > grid.shape[0]
  np.testing.assert_array_equal(with_legend[:grid.shape[0]], grid)
  strip = with_legend[grid.shape[0]:]
  for name, colour in legend:
    assert (strip == np.array(colour, np.uint8)).all(-1).sum() >= 25, name  # a filled swatch
  with pytest.raises(KeyError, match="teacher"):
    viz.prediction_grid([{"RGB": rows[0]["RGB"]}], ["RGB", "teacher"])
  with pytest.raises(ValueError, match="student"):
    viz.prediction_grid([{"RGB": rows[0]["RGB"], "student": rows[0]["RGB"][:3]}],
                        ["RGB", "student"])


def _check_picture(img, path=None):
  assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
  assert img.shape[0] > 100 and img.shape[1] > 100
  assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # something was drawn
  if path is not None:
    np.testing.assert_array_equal(np.asarray(Image.open(path))[..., :3], img)


def test_figures_render(tmp_path):
  rng = np.random.default_rng(0)
  img = plots.weight_map_figure(rng.random((16, 48)), rng.random((16, 48)),
                              rng.integers(0, 255, (16, 48, 3), dtype=np.uint8),
                              title="DWC", path=tmp_path / "w.png")
  _check_picture(img, tmp_path / "w.png")
  with pytest.raises(ValueError, match="w_n"):
    plots.weight_map_figure(np.ones((4, 4)), np.ones((4, 5)))

  _check_picture(plots.cka_bars({"stage2": 0.5, "stage3": 0.8}))
  _check_picture(plots.cka_bars({"stage2": {"kd": 0.5, "lix": 0.7}, "stage3": {"kd": 0.6}}))

  log = tmp_path / "metrics.jsonl"
  with open(log, "w") as f:
    for s in range(5):
      f.write(json.dumps({"step": s, "train/loss": 1.0 / (s + 1)}) + "\n")
    f.write(json.dumps({"step": 4, "eval/miou": 0.5}) + "\n")
  _check_picture(plots.training_curves(log, ["train/loss", "eval/miou"], path=tmp_path / "c.png"),
                 tmp_path / "c.png")
  _check_picture(plots.training_curves({"a": log, "b": log}, ["train/loss"]))
  with pytest.raises(KeyError, match="train/nope"):
    plots.training_curves(log, ["train/nope"])

  rows = [{"method": "teacher", "miou": 0.78}, {"method": "kd", "miou": 0.6, "std": 0.01},
          {"method": "lix", "miou": 0.7, "std": 0.02}]
  _check_picture(plots.results_bar_chart(rows, path=tmp_path / "r.png"), tmp_path / "r.png")
  with pytest.raises(KeyError, match="miou"):
    plots.results_bar_chart([{"method": "kd"}])
  # A long table turns horizontal: it grows downwards with its rows, not sideways.
  many = [{"method": "teacher", "miou": 0.78}] + [
      {"label": f"a long row label number {i} (lix_jax's own)", "miou": 0.5 + i / 100, "std": 0.01}
      for i in range(plots.HORIZONTAL_BARS_FROM + 8)]
  tall, taller = plots.results_bar_chart(many[:-8]), plots.results_bar_chart(many)
  _check_picture(taller)
  assert tall.shape[1] == taller.shape[1] and taller.shape[0] > tall.shape[0] > tall.shape[1] / 3
  # So does a short table with a label too long to sit under a vertical bar; short labels do not.
  short = plots.results_bar_chart(rows)
  assert short.shape[0] > short.shape[1] / 2
  long_label = plots.results_bar_chart(
      rows + [dict(many[1], label="x" * (plots.VERTICAL_LABEL_MAX_CHARS + 1))])
  assert long_label.shape[0] < long_label.shape[1] / 2
