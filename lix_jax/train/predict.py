"""mode=predict: a folder of RGB images (teachers: RGB + depth) -> colourised label PNGs.

Inputs: `predict.input_dir/*.png|*.jpg`. A teacher (`eval.role=teacher`) also reads
`<stem>_depth.png` (uint16, metres x 256, 0 = missing: the KITTI depth format) and, for the
disparity and normal modalities, the intrinsics `predict.intrinsics` (fx, fy, cx, cy) and
`predict.baseline`. Outputs: `<output_dir>/<stem>.png` (default `<workdir>/predictions`).
"""
from __future__ import annotations

import glob
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from lix_jax import viz
from lix_jax.data import pipeline
from lix_jax.data.builders import kitti_semantics
from lix_jax.train import experiment

MIN_SIZE = 32


def _read_rgb(path: str) -> np.ndarray:
  try:
    with Image.open(path) as img:
      img.load()
      mode, array = img.mode, np.asarray(img)
  except OSError as e:
    raise ValueError(f"{path}: unreadable image ({e})") from e
  if mode not in ("RGB", "RGBA") or array.ndim != 3:
    raise ValueError(f"{path}: expected an RGB image with 3 channels, got PIL mode {mode!r} "
                     f"with shape {array.shape}")
  if min(array.shape[:2]) < MIN_SIZE:
    raise ValueError(f"{path}: image of size {array.shape[:2]} is smaller than {MIN_SIZE}x{MIN_SIZE}")
  return array[..., :3]


def _read_depth(path: str, hw: tuple[int, int]) -> np.ndarray:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: a teacher needs the depth map next to each image")
  depth = kitti_semantics.read_kitti_depth(path)  # Same format; errors name the file.
  if depth.shape != hw:
    raise ValueError(f"{path}: depth of size {depth.shape} does not match its image {hw}")
  return depth


def predict_folder(config, workdir: str) -> dict[str, int]:
  input_dir = config.predict.input_dir
  if not input_dir or not os.path.isdir(input_dir):
    raise FileNotFoundError(f"predict.input_dir={input_dir!r} is not a directory")
  files = sorted(f for f in glob.glob(os.path.join(input_dir, "*"))
                 if f.lower().endswith((".png", ".jpg", ".jpeg")) and not f.endswith("_depth.png"))
  if not files:
    raise FileNotFoundError(f"{input_dir}: no *.png / *.jpg images")
  role = config.eval.role
  output_dir = config.predict.output_dir or os.path.join(workdir, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  model, variables = experiment.load_variables(config, workdir, role)
  uses_x = role == "teacher"

  @jax.jit
  def predict(image, x):
    logits, _ = model.apply(variables, *((image, x) if uses_x else (image,)), train=False)
    return jnp.argmax(logits, -1)

  intrinsics = np.asarray(config.predict.get("intrinsics", (0.0, 0.0, 0.0, 0.0)), np.float32)
  for path in files:
    image = _read_rgb(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    depth = (_read_depth(os.path.join(input_dir, f"{stem}_depth.png"), image.shape[:2]) if uses_x
             else np.zeros(image.shape[:2], np.float32))
    if uses_x and config.data.x_modality != "depth" and not intrinsics.any():
      raise ValueError(f"data.x_modality={config.data.x_modality!r} needs predict.intrinsics")
    example = {"image": image, "depth": depth, "label": np.zeros(image.shape[:2], np.uint8),
               "intrinsics": intrinsics, "baseline": np.float32(config.predict.get("baseline", 0.54)),
               "id": stem}
    inputs = pipeline.process_example(example, None, x_modality=config.data.x_modality, labeled=False)
    pred = np.asarray(predict(inputs["image"][None], inputs["x"][None]))[0]
    viz.save_png(os.path.join(output_dir, f"{stem}.png"), viz.colorize(pred))
  logging.info("Wrote %d predictions to %s", len(files), output_dir)
  return {"num_predictions": len(files)}
