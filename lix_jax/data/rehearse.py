r"""Rehearsal of the real formats: `synthetic_driving` scenes written in a real dataset's layout.

  python -m lix_jax.data.rehearse --format=kitti_semantics --out=/tmp/kitti --num=20
  python -m lix_jax.main --config=configs/kitti_semantics.py --workdir=/tmp/kitti_run \
      --config.data.root=/tmp/kitti [--config.train.num_steps=... to shrink]

Each writer renders scenes with the `synthetic_driving` generator at the dataset's native size
and lays the files out exactly as the official download does (the folders, file names, PNG bit
depths, JPEG, JSON and text files that `lix_jax/data/builders/<format>.py` reads), so a shipped
real config runs end to end, unchanged, as a user runs it on the real data (DESIGN §5). The
builders read these folders with no special case. Nothing is downloaded.

Classes: the ten synthetic classes are written as the dataset's own ids. KITTI and Cityscapes
store Cityscapes label ids, which have all ten. Virtual KITTI 2 has no sidewalk, wall or person
category: sidewalk is written as `Road`, wall as `Building`, person as `Misc` (ignored by the
builder). nuImages annotates only some classes: road as the `flat.driveable_surface` surface, car
and person as `vehicle.car` / `human.pedestrian.adult` objects (one per connected class region is
not needed: one mask per class and frame); every other pixel is unannotated (255).

Depth is written in each format's own encoding (KITTI and nuImages: uint16 metres x 256 in the
optional `depth/` folders users add; Virtual KITTI 2: uint16 centimetres with 65535 for no return;
Cityscapes: disparity PNG p = 256 d + 1 with d = fx B / Z, 0 = invalid, plus `camera/*.json`),
and intrinsics in theirs (KITTI `calib/*.txt` P2; VKITTI2 `intrinsic.txt`; nuImages
`calibrated_sensor.camera_intrinsic`).
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from lix_jax.data.builders import cityscapes_labels as csl
from lix_jax.data.builders import synthetic_render, synthetic_scene, vkitti2

SYNTHETIC = synthetic_scene.CLASS_NAMES  # road, sidewalk, terrain, building, wall, ...
IGNORE = synthetic_render.IGNORE

# Native image sizes (height, width) of each format.
NATIVE_HW = {"kitti_semantics": (375, 1242), "vkitti2": (375, 1242),
             "cityscapes": (1024, 2048), "nuimages": (900, 1600)}

# Generator split ids (as `synthetic_driving`'s, so rehearsal splits never share a scene).
_SPLIT_IDS = {"train": 0, "unlabeled": 1, "validation": 2, "test": 3}

_CS_ID = {l.name: l.id for l in csl.LABELS}
# Synthetic class -> Cityscapes label id (what KITTI semantics and Cityscapes files store).
CITYSCAPES_IDS = np.array([_CS_ID[name] for name in SYNTHETIC] + [0], np.uint8)  # last: ignore
# Synthetic class -> Virtual KITTI 2 category.
VKITTI_CATEGORY = {"road": "Road", "sidewalk": "Road", "terrain": "Terrain", "building": "Building",
                   "wall": "Building", "vegetation": "Vegetation", "pole": "Pole", "car": "Car",
                   "person": "Misc", "sky": "Sky"}
# colors.txt of Virtual KITTI 2 v2.0.3, in file order.
VKITTI_COLORS = (
    ("Terrain", (210, 0, 200)), ("Sky", (90, 200, 255)), ("Tree", (0, 199, 0)),
    ("Vegetation", (90, 240, 0)), ("Building", (140, 140, 140)), ("Road", (100, 60, 100)),
    ("GuardRail", (250, 100, 255)), ("TrafficSign", (255, 255, 0)), ("TrafficLight", (200, 200, 0)),
    ("Pole", (255, 130, 0)), ("Misc", (80, 80, 80)), ("Truck", (160, 60, 60)),
    ("Car", (255, 127, 80)), ("Van", (0, 139, 139)), ("Undefined", (0, 0, 0)),
)
# nuImages: synthetic class -> (table, category) of the annotation that carries it.
NUIMAGES_ANNOTATION = {"road": ("surface_ann", "flat.driveable_surface"),
                       "car": ("object_ann", "vehicle.car"),
                       "person": ("object_ann", "human.pedestrian.adult")}


def scene(split: str, index: int, hw: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
  """One rendered scene: image uint8 [H, W, 3], depth float32 m [H, W], label [H, W] (synthetic
  train ids, 255 ignore), intrinsics (fx, fy, cx, cy), baseline."""
  return synthetic_render.generate_example(seed, _SPLIT_IDS[split], index, *hw)


def write_png(path: str, array: np.ndarray) -> None:
  """uint8 [H, W] (8-bit grey), uint8 [H, W, 3] (RGB) or uint16 [H, W] (16-bit grey) PNG."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format="PNG")


def write_jpg(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format="JPEG", quality=95)


def write_text(path: str, content: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(content)


def _depth_u16(depth_m: np.ndarray, scale: float, missing: int = 0) -> np.ndarray:
  """Metres -> uint16 `round(depth * scale)`; 0 (no return) -> `missing`."""
  raw = np.clip(np.round(depth_m * scale), 0, 65535).astype(np.uint16)
  return np.where(depth_m > 0, raw, np.uint16(missing)).astype(np.uint16)


def _cityscapes_ids(label: np.ndarray) -> np.ndarray:
  return CITYSCAPES_IDS[np.where(label == IGNORE, len(SYNTHETIC), label)]


def write_kitti_semantics(out: str, num: int, seed: int = 0) -> list[str]:
  """`training/{image_2,semantic,depth,calib}/<stem>` at 375x1242; the builder makes every 5th
  image `validation`. Returns the stems."""
  hw, stems = NATIVE_HW["kitti_semantics"], []
  for i in range(num):
    ex, stem = scene("train", i, hw, seed), f"{i:06d}_10"
    write_png(os.path.join(out, "training", "image_2", stem + ".png"), ex["image"])
    write_png(os.path.join(out, "training", "semantic", stem + ".png"), _cityscapes_ids(ex["label"]))
    write_png(os.path.join(out, "training", "depth", stem + ".png"), _depth_u16(ex["depth"], 256.0))
    fx, fy, cx, cy = (float(v) for v in ex["intrinsics"])
    p2 = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    lines = [f"P{k}: " + " ".join(f"{v:.12e}" for v in p2) for k in range(4)]
    write_text(os.path.join(out, "training", "calib", stem + ".txt"), "\n".join(lines) + "\n")
    stems.append(stem)
  return stems


def write_cityscapes(out: str, num: int, seed: int = 0) -> list[str]:
  """`leftImg8bit`, `gtFine` label ids, `disparity`, `camera` for `num` train images and
  max(1, num // 4) val and test images each (city `rehearsal`), at 1024x2048."""
  hw, stems = NATIVE_HW["cityscapes"], []
  for split, folder, n in (("train", "train", num), ("validation", "val", max(1, num // 4)),
                           ("test", "test", max(1, num // 4))):
    for i in range(n):
      ex = scene(split, i, hw, seed)
      stem = f"rehearsal_{i:06d}_000019"
      path = lambda kind, suffix: os.path.join(out, kind, folder, "rehearsal", stem + suffix)  # noqa: E731
      write_png(path("leftImg8bit", "_leftImg8bit.png"), ex["image"])
      write_png(path("gtFine", "_gtFine_labelIds.png"), _cityscapes_ids(ex["label"]))
      fx, fy, cx, cy = (float(v) for v in ex["intrinsics"])
      baseline = float(ex["baseline"])
      depth = ex["depth"]
      disparity = np.where(depth > 0, fx * baseline / np.maximum(depth, 1e-6), 0.0)
      raw = np.where(depth > 0, np.clip(np.round(disparity * 256.0) + 1, 1, 65535), 0)
      write_png(path("disparity", "_disparity.png"), raw.astype(np.uint16))
      write_text(path("camera", "_camera.json"), json.dumps({
          "extrinsic": {"baseline": baseline, "pitch": 0.0, "roll": 0.0, "x": 1.7, "y": 0.0,
                        "yaw": 0.0, "z": synthetic_scene.CAMERA_HEIGHT},
          "intrinsic": {"fx": fx, "fy": fy, "u0": cx, "v0": cy}}, indent=4))
      stems.append(f"{folder}/{stem}")
  return stems


def write_vkitti2(out: str, num: int, seed: int = 0) -> list[str]:
  """The `clone` variation of the default config's scenes (train: Scene01/02/06/18, validation and
  test: Scene20): `num` frames spread over the train scenes (at least one each: the builder needs
  every scene) and max(1, num // 4) in Scene20."""
  hw, keys = NATIVE_HW["vkitti2"], []
  colours = dict(VKITTI_COLORS)
  lut = np.array([colours[VKITTI_CATEGORY[name]] for name in SYNTHETIC] + [colours["Undefined"]],
                 np.uint8)
  cfg = vkitti2.VKitti2Config(name="clone")
  train = list(cfg.train_scenes)
  frames = {s: max(1, len(range(i, num, len(train)))) for i, s in enumerate(train)}
  frames[cfg.validation_scenes[0]] = max(1, num // 4)
  index = 0
  for scene_name, n in frames.items():
    split = "train" if scene_name in train else "validation"
    tdir = os.path.join(out, vkitti2.PREFIX + "textgt", scene_name, "clone")
    write_text(os.path.join(tdir, "colors.txt"), "Category r g b\n" + "".join(
        f"{k} {r} {g} {b}\n" for k, (r, g, b) in VKITTI_COLORS))
    intrinsics = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
    for f in range(n):
      ex = scene(split, index, hw, seed)
      index += 1
      fx, fy, cx, cy = (float(v) for v in ex["intrinsics"])
      intrinsics += [f"{f} 0 {fx} {fy} {cx} {cy}", f"{f} 1 {fx} {fy} {cx} {cy}"]
      frame = lambda kind: os.path.join(out, vkitti2.PREFIX + kind, scene_name, "clone",  # noqa: E731
                                        "frames", kind, vkitti2.CAMERA)
      write_jpg(os.path.join(frame("rgb"), f"rgb_{f:05d}.jpg"), ex["image"])
      write_png(os.path.join(frame("depth"), f"depth_{f:05d}.png"),
           _depth_u16(ex["depth"], 100.0, missing=vkitti2.DEPTH_SKY))
      label = np.where(ex["label"] == IGNORE, len(SYNTHETIC), ex["label"])
      write_png(os.path.join(frame("classSegmentation"), f"classgt_{f:05d}.png"), lut[label])
      keys.append(f"{scene_name}/clone/{f:05d}")
    write_text(os.path.join(tdir, "intrinsic.txt"), "\n".join(intrinsics) + "\n")
  return keys


def write_nuimages(out: str, num: int, seed: int = 0) -> list[str]:
  """`v1.0-train` (`num` key frames) and `v1.0-val` (max(1, num // 4)) JSON tables, key-frame
  JPEGs under `samples/CAM_FRONT/`, and `depth/<token>.png`, at 900x1600."""
  from pycocotools import mask as coco_mask  # noqa: PLC0415  (as the nuImages builder)
  hw, tokens = NATIVE_HW["nuimages"], []
  counter = iter(range(10**9))
  token = lambda: f"{seed:08x}{next(counter):024x}"  # noqa: E731  (32 hex digits, deterministic)

  def rle(mask: np.ndarray) -> dict:
    enc = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in enc["size"]],
            "counts": base64.b64encode(enc["counts"]).decode("ascii")}

  for split, version, n in (("train", "v1.0-train", num),
                            ("validation", "v1.0-val", max(1, num // 4))):
    categories = {c: token() for _, c in NUIMAGES_ANNOTATION.values()}
    tables = {"sample": [], "sample_data": [], "object_ann": [], "surface_ann": [],
              "calibrated_sensor": [],
              "category": [{"token": t, "name": c, "description": c} for c, t in categories.items()]}
    for i in range(n):
      ex = scene(split, i, hw, seed)
      sample, key_frame, sensor = token(), token(), token()
      fx, fy, cx, cy = (float(v) for v in ex["intrinsics"])
      tables["calibrated_sensor"].append({
          "token": sensor, "sensor_token": token(), "translation": [1.7, 0.0, 1.65],
          "rotation": [0.5, -0.5, 0.5, -0.5], "camera_distortion": [0.0] * 5,
          "camera_intrinsic": [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]})
      tables["sample"].append({"token": sample, "timestamp": 1000 * i, "log_token": token(),
                               "key_camera_token": key_frame})
      filename = f"samples/CAM_FRONT/rehearsal-{version}-{i:04d}__CAM_FRONT__{1000 * i}.jpg"
      tables["sample_data"].append({
          "token": key_frame, "sample_token": sample, "ego_pose_token": token(),
          "calibrated_sensor_token": sensor, "timestamp": 1000 * i, "fileformat": "jpg",
          "is_key_frame": True, "height": hw[0], "width": hw[1], "filename": filename,
          "prev": "", "next": ""})
      write_jpg(os.path.join(out, filename), ex["image"])
      for name, (table, category) in NUIMAGES_ANNOTATION.items():
        mask = ex["label"] == SYNTHETIC.index(name)
        if not mask.any():
          continue
        ann = {"token": token(), "sample_data_token": key_frame,
               "category_token": categories[category], "mask": rle(mask)}
        if table == "object_ann":
          ys, xs = np.nonzero(mask)
          ann.update(attribute_tokens=[],
                     bbox=[int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())])
        tables[table].append(ann)
      write_png(os.path.join(out, "depth", key_frame + ".png"), _depth_u16(ex["depth"], 256.0))
      tokens.append(key_frame)
    for name, rows in tables.items():
      write_text(os.path.join(out, version, name + ".json"), json.dumps(rows))
  return tokens


WRITERS: dict[str, Callable[[str, int, int], list[str]]] = {
    "kitti_semantics": write_kitti_semantics, "vkitti2": write_vkitti2,
    "cityscapes": write_cityscapes, "nuimages": write_nuimages,
}


def write(fmt: str, out: str, num: int, seed: int = 0) -> list[str]:
  """Writes a rehearsal copy of format `fmt` into `out`; returns the record keys written."""
  if fmt not in WRITERS:
    raise KeyError(f"Unknown rehearsal format {fmt!r}. Available formats are: {sorted(WRITERS)}")
  if num < 1:
    raise ValueError(f"--num={num}: write at least one image")
  return WRITERS[fmt](out, num, seed)


def main(argv) -> None:
  del argv
  from absl import flags  # noqa: PLC0415
  f = flags.FLAGS
  keys = write(f.format, f.out, f.num, f.seed)
  print(f"{f.format}: {len(keys)} images at {NATIVE_HW[f.format][0]}x{NATIVE_HW[f.format][1]} "
        f"in {f.out}; run e.g. python -m lix_jax.main --config=configs/{f.format}.py "
        f"--config.data.root={f.out} --workdir=...")


if __name__ == "__main__":
  from absl import app, flags  # noqa: PLC0415
  flags.DEFINE_enum("format", None, sorted(WRITERS), "Dataset layout to write.")
  flags.DEFINE_string("out", None, "Folder to write (the config's data.root).")
  flags.DEFINE_integer("num", 20, "Number of (training) images.")
  flags.DEFINE_integer("seed", 0, "Scene seed.")
  flags.mark_flags_as_required(["format", "out"])
  app.run(main)
