"""Rehearsal of the real formats (DESIGN §5): synthetic scenes written by `lix_jax.data.rehearse`
in each official layout at native size, read back by the real builders unchanged.

Expected records come from the generator and an independent copy of the class maps (Cityscapes
label id -> train id, the VKITTI2 categories), so the writer and the builder check each other.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lix_jax.data import get_source, rehearse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Synthetic class (road, sidewalk, terrain, building, wall, vegetation, pole, car, person, sky) ->
# Cityscapes train id (road 0, sidewalk 1, building 2, wall 3, pole 5, vegetation 8, terrain 9,
# sky 10, person 11, car 13), written independently of the library's table.
CS_TRAIN = np.array([0, 1, 9, 2, 3, 8, 5, 13, 11, 10], np.uint8)
# VKITTI2 has no sidewalk, wall or person: written as Road, Building and Misc (ignored).
VK_TRAIN = np.array([0, 0, 9, 2, 2, 8, 5, 13, 255, 10], np.uint8)
# nuImages: road (surface), car and person (objects); everything else unannotated.
NU_TRAIN = np.array([0, 255, 255, 255, 255, 255, 255, 13, 11, 255], np.uint8)


def expected_label(label: np.ndarray, table: np.ndarray) -> np.ndarray:
  return np.where(label == 255, 255, table[np.minimum(label, 9)]).astype(np.uint8)


def jpeg_round_trip(image: np.ndarray, quality: int = 95) -> np.ndarray:
  """The image as a quality-95 JPEG file decodes (the rehearsal writes its JPEGs so)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=quality)
  return np.asarray(Image.open(buf).convert("RGB"))


def cityscapes_disparity(ex: dict) -> tuple[float, np.ndarray, np.ndarray]:
  """fx B, and the disparity PNG values p = round(256 d) + 1 in [1, 65535] of d = fx B / Z pixels
  (cityscapesScripts; 0 = missing), in float64; plus a mask of the pixels whose 256 d lies within
  float32 rounding of a half (a writer computing d in float32 may round those either way)."""
  fx_b = float(ex["intrinsics"][0]) * float(ex["baseline"])
  depth = ex["depth"].astype(np.float64)
  scaled = 256.0 * fx_b / np.where(depth > 0, depth, 1.0)
  p = np.where(depth > 0, np.clip(np.round(scaled) + 1, 1, 65535), 0)
  tie = (np.abs(scaled - np.floor(scaled) - 0.5) < 2.5e-7 * scaled) & (p < 65535)
  return fx_b, p, tie


@pytest.mark.slow
@pytest.mark.parametrize("fmt,num,split,scene,table,depth_atol", [
    # KITTI: every 5th image is validation, so 5 make both splits.
    ("kitti_semantics", 5, "train", ("train", 0), CS_TRAIN, 1 / 512),
    ("cityscapes", 1, "validation", ("validation", 0), CS_TRAIN, None),
    ("vkitti2", 2, "train", ("train", 0), VK_TRAIN, 0.005 + 1e-6),
    ("nuimages", 2, "train", ("train", 0), NU_TRAIN, 1 / 512),
])
def test_rehearsal_reads_back_through_the_real_builder(fmt, num, split, scene, table, depth_atol,
                                                       tmp_path):
  root = tmp_path / "root"
  keys = rehearse.write(fmt, str(root), num=num)
  assert keys
  src = get_source(fmt, split, data_dir=str(tmp_path / "data"), manual_dir=str(root))
  record = min((src[i] for i in range(len(src))), key=lambda r: r["id"])
  hw = rehearse.NATIVE_HW[fmt]
  ex = rehearse.scene(*scene, hw)
  assert record["image"].shape == (*hw, 3)
  if fmt in ("vkitti2", "nuimages"):  # JPEG, as the official files: the scene's own JPEG round trip
    np.testing.assert_array_equal(record["image"], jpeg_round_trip(ex["image"]))
  else:
    np.testing.assert_array_equal(record["image"], ex["image"])
  np.testing.assert_array_equal(record["label"], expected_label(ex["label"], table))
  valid = ex["depth"] > 0
  assert np.array_equal(record["depth"] > 0, valid)
  if depth_atol is not None:
    np.testing.assert_allclose(record["depth"][valid], ex["depth"][valid], atol=depth_atol)
  else:  # Cityscapes: Z = fx B / ((p - 1) / 256) exactly (p / 256 would be off by 1 / (p - 1))
    fx_b, p, tie = cityscapes_disparity(ex)
    decode = lambda p: fx_b / ((p[valid] - 1) / 256.0)  # noqa: E731
    got = record["depth"][valid]
    exact = ~tie[valid]
    assert exact.mean() > 0.9
    np.testing.assert_allclose(got[exact], decode(p)[exact], rtol=1e-6)
    near = np.any([np.isclose(got, decode(p + k), rtol=1e-6) for k in (-1, 0, 1)], axis=0)
    assert np.all(near | exact)  # Ties: p one step either way.
  np.testing.assert_allclose(record["intrinsics"], ex["intrinsics"], rtol=1e-5)


def test_unknown_format_lists_the_valid_ones(tmp_path):
  with pytest.raises(KeyError, match="kitti_semantics"):
    rehearse.write("kitti", str(tmp_path), 1)
  proc = subprocess.run([sys.executable, "-m", "lix_jax.data.rehearse", "--format=kitti",
                         f"--out={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "kitti_semantics" in proc.stderr
