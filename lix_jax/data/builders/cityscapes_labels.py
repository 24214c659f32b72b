"""The official Cityscapes label table (cityscapesScripts `helpers/labels.py`), shared by builders.

Cityscapes `*_gtFine_labelIds.png` and KITTI semantics `training/semantic/*.png` both store these
label ids (0..33) as 8-bit grey PNGs. Training uses the 19 "train ids"; every other id maps to
IGNORE_INDEX (255). `license plate` (id -1) never occurs in label images and is not listed.
"""
from __future__ import annotations

import collections

import numpy as np

from lix_jax.data.builders.common import IGNORE_INDEX

Label = collections.namedtuple("Label", ["name", "id", "train_id", "color"])

LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, (0, 0, 0)),
    Label("ego vehicle", 1, 255, (0, 0, 0)),
    Label("rectification border", 2, 255, (0, 0, 0)),
    Label("out of roi", 3, 255, (0, 0, 0)),
    Label("static", 4, 255, (0, 0, 0)),
    Label("dynamic", 5, 255, (111, 74, 0)),
    Label("ground", 6, 255, (81, 0, 81)),
    Label("road", 7, 0, (128, 64, 128)),
    Label("sidewalk", 8, 1, (244, 35, 232)),
    Label("parking", 9, 255, (250, 170, 160)),
    Label("rail track", 10, 255, (230, 150, 140)),
    Label("building", 11, 2, (70, 70, 70)),
    Label("wall", 12, 3, (102, 102, 156)),
    Label("fence", 13, 4, (190, 153, 153)),
    Label("guard rail", 14, 255, (180, 165, 180)),
    Label("bridge", 15, 255, (150, 100, 100)),
    Label("tunnel", 16, 255, (150, 120, 90)),
    Label("pole", 17, 5, (153, 153, 153)),
    Label("polegroup", 18, 255, (153, 153, 153)),
    Label("traffic light", 19, 6, (250, 170, 30)),
    Label("traffic sign", 20, 7, (220, 220, 0)),
    Label("vegetation", 21, 8, (107, 142, 35)),
    Label("terrain", 22, 9, (152, 251, 152)),
    Label("sky", 23, 10, (70, 130, 180)),
    Label("person", 24, 11, (220, 20, 60)),
    Label("rider", 25, 12, (255, 0, 0)),
    Label("car", 26, 13, (0, 0, 142)),
    Label("truck", 27, 14, (0, 0, 70)),
    Label("bus", 28, 15, (0, 60, 100)),
    Label("caravan", 29, 255, (0, 0, 90)),
    Label("trailer", 30, 255, (0, 0, 110)),
    Label("train", 31, 16, (0, 80, 100)),
    Label("motorcycle", 32, 17, (0, 0, 230)),
    Label("bicycle", 33, 18, (119, 11, 32)),
)

NUM_CLASSES = 19

# Train id -> class name and display colour, in train-id order.
TRAIN_NAMES: tuple[str, ...] = tuple(
    l.name for l in sorted((l for l in LABELS if l.train_id != IGNORE_INDEX), key=lambda l: l.train_id))
TRAIN_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    l.color for l in sorted((l for l in LABELS if l.train_id != IGNORE_INDEX), key=lambda l: l.train_id))

# Train id of each name, for other datasets' class maps (e.g. "car" -> 13).
TRAIN_ID: dict[str, int] = {l.name: l.train_id for l in LABELS if l.train_id != IGNORE_INDEX}


def id_to_train_id_lut() -> np.ndarray:
  """Returns an int16 [256] lookup table: label id -> train id (255 ignore), -1 for unknown ids."""
  lut = np.full((256,), -1, np.int16)
  for l in LABELS:
    lut[l.id] = l.train_id
  return lut


def train_id_palette() -> np.ndarray:
  """Returns uint8 [256, 3] colours indexed by train id (ignore and unused ids are black)."""
  pal = np.zeros((256, 3), np.uint8)
  pal[:NUM_CLASSES] = np.asarray(TRAIN_COLORS, np.uint8)
  return pal
