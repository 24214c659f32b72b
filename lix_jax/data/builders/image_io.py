"""File reading for the real-format builders: PIL + NumPy only, every error names the file.

All readers raise `ValueError(f"{path}: ...")` for a missing, unreadable, truncated or wrongly
encoded file, so that a bad file in a dataset of thousands is found from the message alone.

Encodings (checked with Pillow 13):
  * 8-bit RGB PNG/JPEG opens in mode "RGB" -> uint8 [H, W, 3].
  * 8-bit grey PNG opens in mode "L" -> uint8 [H, W]; a palette PNG ("P") gives its indices.
  * 16-bit grey PNG opens in mode "I;16" (Pillow >= 10; older versions gave "I", int32)
    -> uint16 [H, W]. Both are accepted; an 8-bit file where 16 bits are expected is an error,
    because its values would be silently 256x too small.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

PathLike = str | os.PathLike


def _open(path: PathLike) -> Image.Image:
  """Opens and fully decodes an image (a truncated file fails here, not later)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"{path}: file not found")
  img = None
  try:
    img = Image.open(path)
    img.load()  # PIL closes a path-opened single-frame file after a successful load
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    if img is not None:
      img.close()
    raise ValueError(f"{path}: unreadable or truncated image ({type(e).__name__}: {e})") from e
  return img


def read_rgb(path: PathLike) -> np.ndarray:
  """Reads an RGB image. Returns uint8 [H, W, 3]. Grey, palette and RGBA files are converted."""
  img = _open(path)
  if img.mode not in ("RGB", "RGBA", "L", "P"):
    raise ValueError(f"{os.fspath(path)}: expected an 8-bit colour image, got PIL mode {img.mode!r}")
  if img.mode != "RGB":
    img = img.convert("RGB")
  return np.asarray(img, dtype=np.uint8)


def read_label_u8(path: PathLike) -> np.ndarray:
  """Reads an 8-bit single-channel id map (e.g. Cityscapes `*_labelIds.png`). Returns uint8 [H, W]."""
  img = _open(path)
  if img.mode not in ("L", "P"):
    raise ValueError(f"{os.fspath(path)}: expected an 8-bit single-channel id image (PIL mode 'L'), "
                     f"got mode {img.mode!r}")
  return np.asarray(img, dtype=np.uint8)


def read_png_u16(path: PathLike) -> np.ndarray:
  """Reads a 16-bit single-channel PNG (KITTI depth, VKITTI2 depth, Cityscapes disparity).

  Returns:
    uint16 [H, W], the raw stored values.
  """
  img = _open(path)
  if img.mode in ("I;16", "I;16L", "I;16B"):
    return np.asarray(img).astype(np.uint16)
  if img.mode == "I":  # older Pillow decodes 16-bit PNG as 32-bit signed ints
    arr = np.asarray(img)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
      raise ValueError(f"{os.fspath(path)}: values outside the uint16 range in a 16-bit image")
    return arr.astype(np.uint16)
  raise ValueError(f"{os.fspath(path)}: expected a 16-bit single-channel PNG, got PIL mode {img.mode!r}")


def read_kitti_depth(path: str) -> np.ndarray:
  """Reads a KITTI-format depth PNG (uint16, metres x 256, 0 = missing). Returns float32 [H, W] m."""
  return read_png_u16(path).astype(np.float32) / np.float32(256.0)


def read_text(path: PathLike) -> str:
  """Reads a text file, raising ValueError naming it when missing or not UTF-8."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"{path}: file not found")
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: unreadable text file ({e})") from e


def read_json(path: PathLike) -> Any:
  """Reads a JSON file, raising ValueError naming it when missing or malformed."""
  text = read_text(path)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{os.fspath(path)}: malformed JSON ({e})") from e


def check_same_size(image_path: PathLike, hw: tuple[int, ...], other_path: PathLike,
                    other: np.ndarray) -> None:
  """Raises ValueError naming `other_path` when `other`'s [H, W] differs from the image's."""
  if tuple(other.shape[:2]) != tuple(hw):
    raise ValueError(f"{os.fspath(other_path)}: size {tuple(other.shape[:2])} (H, W) does not match "
                     f"the image {os.fspath(image_path)} of size {tuple(hw)}")


def map_ids(path: PathLike, ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
  """Maps an id image through a 256-entry lookup table; entries < 0 mark ids not in the class map.

  Args:
    path: the label file (named in the error).
    ids: uint8 [H, W] raw ids.
    lut: int [256]; lut[i] is the train id of raw id i, or -1 when i is not a known id.

  Returns:
    uint8 [H, W] train ids (255 = ignore).
  """
  out = lut[ids]
  if np.any(out < 0):
    bad = sorted(np.unique(ids[out < 0]).tolist())
    raise ValueError(f"{os.fspath(path)}: label ids {bad} are not in the class map")
  return out.astype(np.uint8)


def manual_root(dl_manager: tfds.download.DownloadManager, dataset: str, expected: str) -> str:
  """Returns the manual_dir as a string, or raises ValueError naming it and what it should hold.

  TFDS itself raises an AssertionError for a missing or empty folder; a ValueError with the
  expected layout is clearer and matches lix_jax's error convention.
  """
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError as e:
    path = getattr(dl_manager, "_manual_dir", None)
    raise ValueError(f"{dataset}: manual_dir {os.fspath(path) if path else '(not set)'} does not exist "
                     f"or is empty; it must hold {expected}") from e
