"""KITTI semantic segmentation (KITTI 2015 "data_semantics") read from a local copy.

Layout under `manual_dir` (the folder that holds `training/`; a `data_semantics/training/` one
level down is found too):

  training/image_2/<stem>.png      8-bit RGB, e.g. 000000_10.png           (required)
  training/semantic/<stem>.png     8-bit Cityscapes label ids (0..33)      (required, one per image)
  training/depth/<stem>.png        optional, KITTI depth format: uint16, metres x 256, 0 = missing
  training/calib/<stem>.txt        optional, KITTI calibration with a `P2:` (or `P_rect_02:`) line

Labels map through the official Cityscapes table to the 19 train ids (255 = ignore); an id that
is not in the table is an error naming the file.

Depth: KITTI ships none for these images. If `training/depth/` exists, every image needs its depth
file (an error names the missing one); if it does not exist, depth is all 0 ("missing") and the
dataset serves only student (RGB-only) training and evaluation.

Intrinsics: from `training/calib/<stem>.txt` when that folder exists (every image then needs one):
fx = P[0], fy = P[5], cx = P[2], cy = P[6] of the 3x4 P2 matrix. Otherwise the KITTI colour
camera's usual values (fx = fy = 721.5377, cx = 609.5593, cy = 172.854, from the 2011_09_26
calibration, which the images of this benchmark are close to). Baseline: 0.54 m (KITTI stereo rig).

Splits: KITTI semantics has 200 labelled training images (its test images have no labels).
Images sorted by file name; index i (0-based) goes to `validation` when i % 5 == 4 (every 5th
image: 40 of 200) and to `train` otherwise (160 of 200).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from lix_jax.data.builders import cityscapes_labels as csl
from lix_jax.data.builders import image_io
from lix_jax.data.builders.common import LixBuilder, check_example

DEFAULT_INTRINSICS = (721.5377, 721.5377, 609.5593, 172.854)  # fx, fy, cx, cy (pixels)
BASELINE_M = 0.54
VALIDATION_EVERY = 5  # index % 5 == 4 -> validation

_EXPECTED = ("training/image_2/*.png and training/semantic/*.png (KITTI semantics, "
             "optionally training/depth/*.png and training/calib/*.txt)")


def parse_kitti_p2(path: str) -> tuple[float, float, float, float]:
  """Reads fx, fy, cx, cy from the `P2:` (or `P_rect_02:`) line of a KITTI calibration file."""
  for line in image_io.read_text(path).splitlines():
    key, _, values = line.partition(":")
    if key.strip() in ("P2", "P_rect_02"):
      try:
        p = [float(v) for v in values.split()]
      except ValueError as e:
        raise ValueError(f"{path}: malformed {key.strip()} line ({e})") from e
      if len(p) != 12:
        raise ValueError(f"{path}: {key.strip()} has {len(p)} values, expected 12 (a 3x4 matrix)")
      intr = (p[0], p[5], p[2], p[6])
      if not all(np.isfinite(intr)) or p[0] <= 0 or p[5] <= 0:
        raise ValueError(f"{path}: invalid intrinsics {intr}")
      return intr
  raise ValueError(f"{path}: no 'P2:' or 'P_rect_02:' line")


class KittiSemantics(LixBuilder):
  """KITTI semantics (200 labelled images) with optional user-made depth; see the module docstring."""

  name = "lix_kitti_semantics"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default", description="All labelled images.")]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  CLASS_NAMES = csl.TRAIN_NAMES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download `data_semantics.zip` from https://www.cvlibs.net/datasets/kitti/eval_semseg.php and
  extract it; pass the folder holding `training/` as manual_dir (--config.data.root). Optional:
  `training/depth/<stem>.png` (uint16, metres x 256, 0 = missing; e.g. projected LiDAR or stereo)
  to train a depth teacher, and `training/calib/<stem>.txt` with a KITTI `P2:` line.
  """

  def _split_generators(self, dl_manager):
    root = image_io.manual_root(dl_manager, self.name, _EXPECTED)
    if not os.path.isdir(os.path.join(root, "training")) and os.path.isdir(
        os.path.join(root, "data_semantics", "training")):
      root = os.path.join(root, "data_semantics")
    train_dir = os.path.join(root, "training")
    image_dir = os.path.join(train_dir, "image_2")
    if not os.path.isdir(image_dir):
      raise ValueError(f"{self.name}: {image_dir} not found; manual_dir {root} must hold {_EXPECTED}")
    stems = sorted(f[:-4] for f in os.listdir(image_dir) if f.endswith(".png"))
    if len(stems) < VALIDATION_EVERY:
      raise ValueError(f"{self.name}: {len(stems)} .png images in {image_dir}; at least "
                       f"{VALIDATION_EVERY} are needed for a non-empty validation split")
    if not os.path.isdir(os.path.join(train_dir, "depth")):
      logging.warning("%s: no %s; depth is all 0 (student-only use).", self.name,
                      os.path.join(train_dir, "depth"))
    val = [s for i, s in enumerate(stems) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    train = [s for i, s in enumerate(stems) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
    return {
        "train": self._generate_examples(train_dir, train),
        "validation": self._generate_examples(train_dir, val),
    }

  def _generate_examples(self, train_dir: str, stems: list[str]):
    """Yields (stem, example) for each image stem, in the given order."""
    lut = csl.id_to_train_id_lut()
    depth_dir = os.path.join(train_dir, "depth")
    calib_dir = os.path.join(train_dir, "calib")
    has_depth, has_calib = os.path.isdir(depth_dir), os.path.isdir(calib_dir)
    for stem in stems:
      image_path = os.path.join(train_dir, "image_2", stem + ".png")
      label_path = os.path.join(train_dir, "semantic", stem + ".png")
      image = image_io.read_rgb(image_path)
      hw = image.shape[:2]
      if not os.path.isfile(label_path):
        raise ValueError(f"{label_path}: label file missing for image {image_path}")
      ids = image_io.read_label_u8(label_path)
      image_io.check_same_size(image_path, hw, label_path, ids)
      label = image_io.map_ids(label_path, ids, lut)
      if has_depth:
        depth_path = os.path.join(depth_dir, stem + ".png")
        if not os.path.isfile(depth_path):
          raise ValueError(f"{depth_path}: depth file missing for image {image_path} "
                           f"({depth_dir} exists, so every image needs one)")
        depth = image_io.read_kitti_depth(depth_path)
        image_io.check_same_size(image_path, hw, depth_path, depth)
      else:
        depth = np.zeros(hw, np.float32)
      if has_calib:
        calib_path = os.path.join(calib_dir, stem + ".txt")
        if not os.path.isfile(calib_path):
          raise ValueError(f"{calib_path}: calibration file missing for image {image_path} "
                           f"({calib_dir} exists, so every image needs one)")
        intrinsics = parse_kitti_p2(calib_path)
      else:
        intrinsics = DEFAULT_INTRINSICS
      check_example(image_path, image, depth, label, csl.NUM_CLASSES)
      yield stem, {
          "image": image,
          "depth": depth,
          "label": label,
          "intrinsics": np.asarray(intrinsics, np.float32),
          "baseline": np.float32(BASELINE_M),
          "id": stem,
      }
