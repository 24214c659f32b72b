"""mode=predict: a folder of RGB images (teachers: RGB + depth) -> colourised label PNGs.

Inputs: `predict.input_dir/*.png|*.jpg`. A teacher (`eval.role=teacher`) also reads
`<stem>_depth.png` (uint16, metres x 256, 0 = missing: the KITTI depth format) and, for the
disparity and normal modalities, the intrinsics `predict.intrinsics` (fx, fy, cx, cy) and
`predict.baseline`. Outputs: `<output_dir>/<stem>.png` (default `<workdir>/predictions`).

Two sources of the network:
  * the workdir's newest good checkpoint (`predict_folder`; a distilled student needs no teacher);
  * an exported artifact, `predict.exported=PATH` (`predict_exported`): jax, numpy and Pillow
    only — this path imports neither flax nor `lix_jax.models` (nor the trainer), and colours the
    labels with the palette of the artifact's `meta.json`. A `PATH.onnx` runs with onnxruntime,
    numpy and Pillow (no jax).

This module imports only NumPy and Pillow at the top; each path imports what it needs.
"""
from __future__ import annotations

import glob
import logging
import os

import numpy as np
from PIL import Image

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


def _read_depth_png(path: str, hw: tuple[int, int]) -> np.ndarray:
  """A KITTI-format depth PNG (uint16, metres x 256, 0 = missing) -> float32 metres [H, W]."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: a teacher needs the depth map next to each image")
  try:
    with Image.open(path) as img:
      img.load()
      depth = np.asarray(img)
  except OSError as e:
    raise ValueError(f"{path}: unreadable depth PNG ({e})") from e
  if depth.ndim != 2 or depth.dtype not in (np.uint16, np.int32, np.uint8):
    raise ValueError(f"{path}: expected a 16-bit single-channel PNG, got {depth.dtype} {depth.shape}")
  if depth.shape != hw:
    raise ValueError(f"{path}: depth of size {depth.shape} does not match its image {hw}")
  return depth.astype(np.float32) / np.float32(256.0)


def _image_files(config) -> tuple[str, list[str], str]:
  """(input_dir, image paths, output_dir) of a predict run; errors name the folder."""
  input_dir = config.predict.input_dir
  if not input_dir or not os.path.isdir(input_dir):
    raise FileNotFoundError(f"predict.input_dir={input_dir!r} is not a directory")
  files = sorted(f for f in glob.glob(os.path.join(input_dir, "*"))
                 if f.lower().endswith((".png", ".jpg", ".jpeg")) and not f.endswith("_depth.png"))
  if not files:
    raise FileNotFoundError(f"{input_dir}: no *.png / *.jpg images")
  return input_dir, files, config.predict.output_dir


def _save_png(path: str, rgb: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(rgb).save(path)


def predict_folder(config, workdir: str) -> dict[str, int]:
  """Predicts with the newest good checkpoint of the `eval.role` run in `workdir`."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from lix_jax import viz  # noqa: PLC0415
  from lix_jax.data import pipeline as input_pipeline  # noqa: PLC0415
  from lix_jax.data.builders import image_io  # noqa: PLC0415
  from lix_jax.train import steps, task as task_lib  # noqa: PLC0415

  input_dir, files, output_dir = _image_files(config)
  role = config.eval.role
  output_dir = output_dir or os.path.join(workdir, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  model, variables = task_lib.load_variables(config, workdir, role)
  uses_x = role == "teacher"

  @jax.jit
  def predict(image, x):
    logits, _ = model.apply(variables, *steps.model_inputs({"image": image, "x": x}, uses_x),
                            train=False)
    return jnp.argmax(logits, -1)

  intrinsics = np.asarray(config.predict.get("intrinsics", (0.0, 0.0, 0.0, 0.0)), np.float32)
  for path in files:
    image = _read_rgb(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    depth = np.zeros(image.shape[:2], np.float32)
    if uses_x:
      depth_path = os.path.join(input_dir, f"{stem}_depth.png")
      if not os.path.exists(depth_path):
        raise FileNotFoundError(f"{depth_path}: a teacher needs the depth map next to each image")
      depth = image_io.read_kitti_depth(depth_path)  # Same format; errors name the file.
      if depth.shape != image.shape[:2]:
        raise ValueError(f"{depth_path}: depth of size {depth.shape} does not match its image "
                         f"{image.shape[:2]}")
    if uses_x and config.data.x_modality != "depth" and not intrinsics.any():
      raise ValueError(f"data.x_modality={config.data.x_modality!r} needs predict.intrinsics")
    example = {"image": image, "depth": depth, "label": np.zeros(image.shape[:2], np.uint8),
               "intrinsics": intrinsics, "baseline": np.float32(config.predict.get("baseline", 0.54)),
               "id": stem}
    inputs = input_pipeline.process_example(example, None, x_modality=config.data.x_modality, labeled=False)
    pred = np.asarray(predict(inputs["image"][None], inputs["x"][None]))[0]
    viz.save_png(os.path.join(output_dir, f"{stem}.png"), viz.colorize(pred))
  logging.info("Wrote %d predictions to %s", len(files), output_dir)
  return {"num_predictions": len(files)}


def _raw_x(config, meta, depth: np.ndarray) -> np.ndarray:
  """The exported teacher's X input (raw modality, 0 = missing) from a depth map in metres."""
  if meta["x_modality"] == "depth":
    return np.where(depth > 0, depth, 0)[..., None].astype(np.float32)
  intrinsics = np.asarray(config.predict.intrinsics, np.float32)
  if not intrinsics.any():
    raise ValueError(f"x_modality={meta['x_modality']!r} needs predict.intrinsics")
  # Disparity / normals from depth: the data package's geometry (NumPy; still no flax).
  from lix_jax.data import pipeline as input_pipeline  # noqa: PLC0415
  return input_pipeline.compute_x({"depth": depth, "intrinsics": intrinsics,
                             "baseline": np.float32(config.predict.baseline)}, meta["x_modality"])


def predict_exported(config, workdir: str) -> dict[str, int]:
  """Predicts with the artifact `predict.exported` (jax, numpy and Pillow only; a `.onnx` file:
  onnxruntime, numpy and Pillow).

  Images of any size: `export.segment` pads them to multiples of the artifact's stride and crops
  the labels back. PNG colours: the artifact's `meta.json` palette.
  """
  from lix_jax.experiments import export  # noqa: PLC0415  (numpy; jax or onnxruntime to load)

  input_dir, files, output_dir = _image_files(config)
  output_dir = output_dir or os.path.join(workdir, "predictions")
  artifact = export.load(config.predict.exported)
  meta = artifact.meta
  for path in files:
    image = _read_rgb(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    x = None
    if meta.get("x_modality"):
      depth = _read_depth_png(os.path.join(input_dir, f"{stem}_depth.png"), image.shape[:2])
      x = _raw_x(config, meta, depth)
    labels, _ = export.segment(artifact, image, x)
    _save_png(os.path.join(output_dir, f"{stem}.png"), artifact.colorize(labels))
  logging.info("Wrote %d predictions from %s to %s", len(files), config.predict.exported, output_dir)
  return {"num_predictions": len(files)}
