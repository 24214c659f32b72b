"""Virtual KITTI 2 (v2.0.3) read from a local copy in the official layout.

Layout under `manual_dir` (the official tarballs extracted side by side):

  vkitti_2.0.3_rgb/SceneXX/<variation>/frames/rgb/Camera_0/rgb_NNNNN.jpg
  vkitti_2.0.3_depth/SceneXX/<variation>/frames/depth/Camera_0/depth_NNNNN.png        uint16 cm
  vkitti_2.0.3_classSegmentation/SceneXX/<variation>/frames/classSegmentation/Camera_0/classgt_NNNNN.png
  vkitti_2.0.3_textgt/SceneXX/<variation>/colors.txt      "Category r g b" then "Terrain 210 0 200" ...
  vkitti_2.0.3_textgt/SceneXX/<variation>/intrinsic.txt   "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"

Only the left camera (Camera_0) is read. Depth: metres = value / 100; 65535 (sky / beyond 655 m)
and 0 become 0 ("missing"). Intrinsics per frame from intrinsic.txt (camera 0); baseline
0.532725 m (the VKITTI2 stereo rig). Labels: each classgt colour -> category via that scene's
colors.txt -> a Cityscapes train id via `CATEGORY_TO_TRAIN_ID` below; a colour absent from
colors.txt, or a category absent from the table, is an error naming the file.

Splits by scene (no frame of a scene is in two splits of one config): `train` = Scene01, Scene02,
Scene06, Scene18; `validation` = Scene20; `test` = Scene20 as well — VKITTI2 has only five scenes,
so the held-out scene serves both (validation and test are identical in the default configs).
Builder configs choose the variations: `clone` (default) and each of the other nine
(`15_deg_left` reads folder `15-deg-left`, etc.), or `all` (all ten, ids keep the variation).
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from lix_jax.data.builders import cityscapes_labels as csl
from lix_jax.data.builders import image_io
from lix_jax.data.builders.common import IGNORE_INDEX, LixBuilder, check_example

BASELINE_M = 0.532725
DEPTH_SKY = 65535
PREFIX = "vkitti_2.0.3_"
CAMERA = "Camera_0"

# VKITTI2 category -> Cityscapes train id. Tree and Vegetation are both Cityscapes "vegetation";
# Van is "car" (Cityscapes labels vans as cars). GuardRail is ignored as in Cityscapes' own table
# (id 14 "guard rail" -> 255); Misc and Undefined have no Cityscapes counterpart.
CATEGORY_TO_TRAIN_ID: dict[str, int] = {
    "Terrain": csl.TRAIN_ID["terrain"],
    "Sky": csl.TRAIN_ID["sky"],
    "Tree": csl.TRAIN_ID["vegetation"],
    "Vegetation": csl.TRAIN_ID["vegetation"],
    "Building": csl.TRAIN_ID["building"],
    "Road": csl.TRAIN_ID["road"],
    "GuardRail": IGNORE_INDEX,
    "TrafficSign": csl.TRAIN_ID["traffic sign"],
    "TrafficLight": csl.TRAIN_ID["traffic light"],
    "Pole": csl.TRAIN_ID["pole"],
    "Misc": IGNORE_INDEX,
    "Truck": csl.TRAIN_ID["truck"],
    "Car": csl.TRAIN_ID["car"],
    "Van": csl.TRAIN_ID["car"],
    "Undefined": IGNORE_INDEX,
}

VARIATIONS = ("clone", "15-deg-left", "15-deg-right", "30-deg-left", "30-deg-right", "fog",
              "morning", "overcast", "rain", "sunset")
_EXPECTED = (f"{PREFIX}rgb/, {PREFIX}depth/, {PREFIX}classSegmentation/ and {PREFIX}textgt/ folders "
             "in the official Virtual KITTI 2 layout (SceneXX/<variation>/...)")


@dataclasses.dataclass
class VKitti2Config(tfds.core.BuilderConfig):
  """Which variations and scenes make each split."""
  variations: tuple[str, ...] = ("clone",)
  train_scenes: tuple[str, ...] = ("Scene01", "Scene02", "Scene06", "Scene18")
  validation_scenes: tuple[str, ...] = ("Scene20",)
  test_scenes: tuple[str, ...] = ("Scene20",)


def _configs() -> list[VKitti2Config]:
  configs = [VKitti2Config(name=v.replace("-", "_"), variations=(v,),
                           description=f"Variation {v!r}, Camera_0.") for v in VARIATIONS]
  configs.append(VKitti2Config(name="all", variations=VARIATIONS, description="All ten variations."))
  return configs


def read_colors(path: str) -> dict[int, str]:
  """Parses colors.txt. Returns packed colour (r << 16 | g << 8 | b) -> category name."""
  colors = {}
  for n, line in enumerate(image_io.read_text(path).splitlines()):
    parts = line.split()
    if not parts or (n == 0 and parts[0] == "Category"):
      continue
    try:
      if len(parts) != 4:
        raise ValueError(f"expected 'Category r g b', got {line!r}")
      r, g, b = (int(v) for v in parts[1:])
      if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour out of range in {line!r}")
    except ValueError as e:
      raise ValueError(f"{path}: line {n + 1}: {e}") from e
    if parts[0] not in CATEGORY_TO_TRAIN_ID:
      raise ValueError(f"{path}: line {n + 1}: category {parts[0]!r} is not in the class map "
                       f"{sorted(CATEGORY_TO_TRAIN_ID)}")
    colors[(r << 16) | (g << 8) | b] = parts[0]
  if not colors:
    raise ValueError(f"{path}: no colours")
  return colors


def read_intrinsics(path: str, camera: int = 0) -> dict[int, tuple[float, float, float, float]]:
  """Parses intrinsic.txt. Returns frame -> (fx, fy, cx, cy) for `camera`."""
  out = {}
  for n, line in enumerate(image_io.read_text(path).splitlines()):
    parts = line.split()
    if not parts or parts[0] == "frame":
      continue
    try:
      if len(parts) != 6:
        raise ValueError(f"expected 'frame cameraID fx fy cx cy', got {line!r}")
      frame, cam = int(parts[0]), int(parts[1])
      intr = tuple(float(v) for v in parts[2:])
      if not all(np.isfinite(intr)) or intr[0] <= 0 or intr[1] <= 0:
        raise ValueError(f"invalid intrinsics {intr}")
    except ValueError as e:
      raise ValueError(f"{path}: line {n + 1}: {e}") from e
    if cam == camera:
      out[frame] = intr
  return out


def colors_to_train_ids(path: str, rgb: np.ndarray, colors: dict[int, str]) -> np.ndarray:
  """Maps a classgt RGB image (uint8 [H, W, 3]) to train ids (uint8 [H, W]) via colors.txt."""
  packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
  uniq, inv = np.unique(packed, return_inverse=True)
  unknown = [int(c) for c in uniq if int(c) not in colors]
  if unknown:
    shown = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:8]]
    raise ValueError(f"{path}: label colours {shown} are not in colors.txt")
  ids = np.asarray([CATEGORY_TO_TRAIN_ID[colors[int(c)]] for c in uniq], np.uint8)
  return ids[inv.reshape(packed.shape)]


def read_vkitti_depth(path: str) -> np.ndarray:
  """Reads a VKITTI2 depth PNG (uint16 cm). Returns float32 [H, W] metres, 0 = missing/sky."""
  p = image_io.read_png_u16(path)
  depth = p.astype(np.float64) / 100.0
  depth[p == DEPTH_SKY] = 0.0
  return depth.astype(np.float32)


class VirtualKitti2(LixBuilder):
  """Virtual KITTI 2, Camera_0, scene-wise splits; see the module docstring."""

  name = "lix_vkitti2"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_BUILDER_CONFIG_NAME = "clone"
  CLASS_NAMES = csl.TRAIN_NAMES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  From https://europe.naverlabs.com/research/computer-vision/proxy-virtual-worlds-vkitti-2/ get
  vkitti_2.0.3_rgb.tar, vkitti_2.0.3_depth.tar, vkitti_2.0.3_classSegmentation.tar and
  vkitti_2.0.3_textgt.tar.gz and extract them into one folder, which then holds
  vkitti_2.0.3_rgb/, vkitti_2.0.3_depth/, vkitti_2.0.3_classSegmentation/ and vkitti_2.0.3_textgt/.
  Pass that folder as manual_dir (--config.data.root).
  """

  def _split_generators(self, dl_manager):
    root = image_io.manual_root(dl_manager, self.name, _EXPECTED)
    for kind in ("rgb", "depth", "classSegmentation", "textgt"):
      if not os.path.isdir(os.path.join(root, PREFIX + kind)):
        raise ValueError(f"{self.name}: {os.path.join(root, PREFIX + kind)} not found; manual_dir "
                         f"{root} must hold {_EXPECTED}")
    cfg = self.builder_config
    return {
        "train": self._generate_examples(root, cfg.train_scenes, cfg.variations),
        "validation": self._generate_examples(root, cfg.validation_scenes, cfg.variations),
        "test": self._generate_examples(root, cfg.test_scenes, cfg.variations),
    }

  def _generate_examples(self, root: str, scenes: tuple[str, ...], variations: tuple[str, ...]):
    """Yields ("SceneXX/<variation>/NNNNN", example) for every Camera_0 frame, in sorted order."""
    for scene in scenes:
      for variation in variations:
        yield from self._scene(root, scene, variation)

  def _scene(self, root: str, scene: str, variation: str):
    def frames_dir(kind: str) -> str:
      return os.path.join(root, PREFIX + kind, scene, variation, "frames", kind, CAMERA)

    rgb_dir = frames_dir("rgb")
    if not os.path.isdir(rgb_dir):
      raise ValueError(f"{self.name}: {rgb_dir} not found (scene {scene}, variation {variation})")
    frames = sorted(m.group(1) for f in os.listdir(rgb_dir) if (m := re.fullmatch(r"rgb_(\d+)\.jpg", f)))
    if not frames:
      raise ValueError(f"{self.name}: no rgb_NNNNN.jpg frames in {rgb_dir}")
    text_dir = os.path.join(root, PREFIX + "textgt", scene, variation)
    colors_path = os.path.join(text_dir, "colors.txt")
    intr_path = os.path.join(text_dir, "intrinsic.txt")
    colors = read_colors(colors_path)
    intrinsics = read_intrinsics(intr_path)
    for frame in frames:
      image_path = os.path.join(rgb_dir, f"rgb_{frame}.jpg")
      image = image_io.read_rgb(image_path)
      hw = image.shape[:2]
      depth_path = os.path.join(frames_dir("depth"), f"depth_{frame}.png")
      label_path = os.path.join(frames_dir("classSegmentation"), f"classgt_{frame}.png")
      for p, what in ((label_path, "label"), (depth_path, "depth")):
        if not os.path.isfile(p):
          raise ValueError(f"{p}: {what} file missing for image {image_path}")
      label_rgb = image_io.read_rgb(label_path)
      image_io.check_same_size(image_path, hw, label_path, label_rgb)
      label = colors_to_train_ids(label_path, label_rgb, colors)
      depth = read_vkitti_depth(depth_path)
      image_io.check_same_size(image_path, hw, depth_path, depth)
      if int(frame) not in intrinsics:
        raise ValueError(f"{intr_path}: no intrinsics for frame {int(frame)} of camera 0 "
                         f"(needed by {image_path})")
      check_example(image_path, image, depth, label, csl.NUM_CLASSES)
      record_id = f"{scene}/{variation}/{frame}"
      yield record_id, {
          "image": image,
          "depth": depth,
          "label": label,
          "intrinsics": np.asarray(intrinsics[int(frame)], np.float32),
          "baseline": np.float32(BASELINE_M),
          "id": record_id,
      }
