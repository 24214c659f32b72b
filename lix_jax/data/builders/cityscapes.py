"""Cityscapes (fine annotations + disparity) read from a local copy in the official layout.

Layout under `manual_dir` (the packages leftImg8bit_trainvaltest, gtFine_trainvaltest,
disparity_trainvaltest and camera_trainvaltest extracted into one folder):

  leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   8-bit RGB
  gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png    8-bit label ids (0..33)
  disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png       uint16 p
  camera/<split>/<city>/<city>_<seq>_<frame>_camera.json            {"extrinsic": {"baseline"},
                                                                     "intrinsic": {"fx","fy","u0","v0"}}

Disparity d = (p - 1) / 256 pixels for p > 0, p = 0 invalid (cityscapesScripts README); depth in
metres = fx * baseline / d where d > 0, else 0 ("missing"). Intrinsics = (fx, fy, u0, v0),
baseline from the camera file. Labels map through the official table to 19 train ids, 255 ignore.

Splits: `train` (<- train, required), `validation` (<- val) and `test` (<- test, whose official
labels are all void, so its label is all 255) are built when their `leftImg8bit/<split>` folder
exists; `unlabeled` is built from `leftImg8bit/train_extra` (+ its disparity and camera files, no
labels: label all 255) when that folder exists — RGB-X frames for infusion (DESIGN §2.6). Every
image of a built split needs its label (except `unlabeled`), disparity and camera file.
"""
from __future__ import annotations

import math
import os

import numpy as np
import tensorflow_datasets as tfds

from lix_jax.data.builders import cityscapes_labels as csl
from lix_jax.data.builders import image_io
from lix_jax.data.builders.common import IGNORE_INDEX, LixBuilder, check_example

# lix_jax split -> (Cityscapes folder name, has fine labels)
SPLITS = {
    "train": ("train", True),
    "validation": ("val", True),
    "test": ("test", True),
    "unlabeled": ("train_extra", False),
}
_SUFFIX = "_leftImg8bit.png"
_EXPECTED = ("leftImg8bit/, gtFine/, disparity/ and camera/ folders in the official Cityscapes layout "
             "(<folder>/<split>/<city>/<city>_<seq>_<frame>_<type>.<ext>)")


def read_camera(path: str) -> tuple[tuple[float, float, float, float], float]:
  """Reads a Cityscapes `*_camera.json`. Returns ((fx, fy, cx, cy), baseline_m)."""
  cam = image_io.read_json(path)
  try:
    intr = cam["intrinsic"]
    intrinsics = tuple(float(intr[k]) for k in ("fx", "fy", "u0", "v0"))
    baseline = float(cam["extrinsic"]["baseline"])
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: expected extrinsic.baseline and intrinsic.fx/fy/u0/v0 ({e!r})") from e
  if not all(math.isfinite(v) for v in (*intrinsics, baseline)) or min(
      intrinsics[0], intrinsics[1], baseline) <= 0:
    raise ValueError(f"{path}: invalid camera intrinsics {intrinsics} or baseline {baseline}")
  return intrinsics, baseline


def disparity_to_depth(p: np.ndarray, fx: float, baseline: float) -> np.ndarray:
  """Cityscapes disparity PNG values (uint16 [H, W]) -> depth float32 [H, W] metres, 0 = missing."""
  d = (p.astype(np.float64) - 1.0) / 256.0
  valid = (p > 0) & (d > 0)
  depth = np.zeros(p.shape, np.float64)
  depth[valid] = fx * baseline / d[valid]
  return depth.astype(np.float32)


class LixCityscapes(LixBuilder):
  """Cityscapes fine labels with disparity-derived depth; see the module docstring."""

  name = "lix_cityscapes"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default", description="Fine labels + disparity.")]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  CLASS_NAMES = csl.TRAIN_NAMES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  From https://www.cityscapes-dataset.com/downloads/ get leftImg8bit_trainvaltest.zip,
  gtFine_trainvaltest.zip, disparity_trainvaltest.zip and camera_trainvaltest.zip (optionally the
  train_extra packages for the `unlabeled` split) and extract them into one folder, so that it
  holds leftImg8bit/, gtFine/, disparity/ and camera/. Pass that folder as manual_dir
  (--config.data.root).
  """

  def _split_generators(self, dl_manager):
    root = image_io.manual_root(dl_manager, self.name, _EXPECTED)
    train_dir = os.path.join(root, "leftImg8bit", "train")
    if not os.path.isdir(train_dir):
      raise ValueError(f"{self.name}: {train_dir} not found; manual_dir {root} must hold {_EXPECTED}")
    return {
        split: self._generate_examples(root, folder, labelled)
        for split, (folder, labelled) in SPLITS.items()
        if os.path.isdir(os.path.join(root, "leftImg8bit", folder))
    }

  def _generate_examples(self, root: str, folder: str, labelled: bool):
    """Yields (id, example) for every image of `leftImg8bit/<folder>`, cities and files sorted."""
    lut = csl.id_to_train_id_lut()
    image_root = os.path.join(root, "leftImg8bit", folder)
    found = False
    for city in sorted(os.listdir(image_root)):
      city_dir = os.path.join(image_root, city)
      if not os.path.isdir(city_dir):
        continue
      for fname in sorted(f for f in os.listdir(city_dir) if f.endswith(_SUFFIX)):
        found = True
        stem = fname[:-len(_SUFFIX)]
        yield stem, self._example(root, folder, city, stem, labelled, lut)
    if not found:
      raise ValueError(f"{self.name}: no *{_SUFFIX} images under {image_root}")

  def _example(self, root: str, folder: str, city: str, stem: str, labelled: bool,
               lut: np.ndarray) -> dict:
    """Reads and checks one record."""
    def path(kind: str, suffix: str) -> str:
      return os.path.join(root, kind, folder, city, stem + suffix)

    image_path = path("leftImg8bit", _SUFFIX)
    image = image_io.read_rgb(image_path)
    hw = image.shape[:2]
    if labelled:
      label_path = path("gtFine", "_gtFine_labelIds.png")
      if not os.path.isfile(label_path):
        raise ValueError(f"{label_path}: label file missing for image {image_path}")
      ids = image_io.read_label_u8(label_path)
      image_io.check_same_size(image_path, hw, label_path, ids)
      label = image_io.map_ids(label_path, ids, lut)
    else:
      label = np.full(hw, IGNORE_INDEX, np.uint8)
    camera_path = path("camera", "_camera.json")
    if not os.path.isfile(camera_path):
      raise ValueError(f"{camera_path}: camera file missing for image {image_path}")
    intrinsics, baseline = read_camera(camera_path)
    disp_path = path("disparity", "_disparity.png")
    if not os.path.isfile(disp_path):
      raise ValueError(f"{disp_path}: disparity file missing for image {image_path}")
    disp = image_io.read_png_u16(disp_path)
    image_io.check_same_size(image_path, hw, disp_path, disp)
    depth = disparity_to_depth(disp, intrinsics[0], baseline)
    check_example(image_path, image, depth, label, csl.NUM_CLASSES)
    return {
        "image": image,
        "depth": depth,
        "label": label,
        "intrinsics": np.asarray(intrinsics, np.float32),
        "baseline": np.float32(baseline),
        "id": stem,
    }
