"""nuImages (v1.0) read from a local copy: official JSON tables + COCO-RLE masks -> semantic labels.

Layout under `manual_dir` (the metadata and sample tarballs extracted into one folder):

  v1.0-{train,val,mini}/sample.json, sample_data.json, object_ann.json, surface_ann.json,
                        category.json, calibrated_sensor.json
  samples/CAM_*/<name>.jpg                 the key-frame images (sample_data `filename`)
  depth/<sample_data token>.png            optional, uint16 metres x 256, 0 = missing

Records: the key frames only (`sample_data.is_key_frame`, which is each sample's
`key_camera_token`). The label is rendered as the official devkit's `get_segmentation` does:
surface masks first (file order), then object masks on top sorted by annotation token; pixels no
mask covers are 255 (ignore). Masks are COCO run-length encodings whose `counts` are base64
encoded; they are decoded with `pycocotools.mask.decode` (pycocotools: the maintained reference
implementation of COCO RLE, a small NumPy-only wheel; nuscenes-devkit would pull in matplotlib,
OpenCV, Shapely and more just to call the same function). Categories map to the Cityscapes train
ids by `CATEGORY_TO_TRAIN_ID` below; a category name not in that table is an error.

Depth: nuImages ships none. If `depth/` exists, every key frame of a built split needs its file;
otherwise depth is all 0 and the dataset serves only student (RGB-only) training and evaluation.
Intrinsics (fx, fy, cx, cy) come from the frame's `calibrated_sensor.camera_intrinsic`; baseline
is 0 (monocular). The id is "<CAM_CHANNEL>/<sample_data token>".

Splits: config `default`: `train` <- v1.0-train (required), `validation` <- v1.0-val (if present).
Config `mini`: v1.0-mini's key frames sorted by token, every 5th (index % 5 == 4) -> `validation`,
the rest -> `train`. A token that points to no record (a dangling token), a mask whose size
differs from its image, or a missing file is a ValueError naming the record or file.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import warnings

import numpy as np
import tensorflow_datasets as tfds

from lix_jax.data.builders import cityscapes_labels as csl
from lix_jax.data.builders import image_io
from lix_jax.data.builders.common import IGNORE_INDEX, LixBuilder, check_example

_T = csl.TRAIN_ID
# nuImages category -> Cityscapes train id. Ego vehicle, trailers and construction vehicles are
# ignored as in Cityscapes (ego vehicle, trailer -> 255); police cars are cars, ambulances and
# people on scooters/strollers/wheelchairs have no Cityscapes class; movable and static objects
# (barrier, cone, debris, bike rack) are ignored rather than forced into fence/pole.
CATEGORY_TO_TRAIN_ID: dict[str, int] = {
    "animal": IGNORE_INDEX,
    "flat.driveable_surface": _T["road"],
    "human.pedestrian.adult": _T["person"],
    "human.pedestrian.child": _T["person"],
    "human.pedestrian.construction_worker": _T["person"],
    "human.pedestrian.personal_mobility": IGNORE_INDEX,
    "human.pedestrian.police_officer": _T["person"],
    "human.pedestrian.stroller": IGNORE_INDEX,
    "human.pedestrian.wheelchair": IGNORE_INDEX,
    "movable_object.barrier": IGNORE_INDEX,
    "movable_object.debris": IGNORE_INDEX,
    "movable_object.pushable_pullable": IGNORE_INDEX,
    "movable_object.trafficcone": IGNORE_INDEX,
    "static_object.bicycle_rack": IGNORE_INDEX,
    "vehicle.bicycle": _T["bicycle"],
    "vehicle.bus.bendy": _T["bus"],
    "vehicle.bus.rigid": _T["bus"],
    "vehicle.car": _T["car"],
    "vehicle.construction": IGNORE_INDEX,
    "vehicle.ego": IGNORE_INDEX,
    "vehicle.emergency.ambulance": IGNORE_INDEX,
    "vehicle.emergency.police": _T["car"],
    "vehicle.motorcycle": _T["motorcycle"],
    "vehicle.trailer": IGNORE_INDEX,
    "vehicle.truck": _T["truck"],
}
TABLES = ("sample", "sample_data", "object_ann", "surface_ann", "category", "calibrated_sensor")
VALIDATION_EVERY = 5
_EXPECTED = "v1.0-train/ (and v1.0-val/ or v1.0-mini/) JSON tables and samples/CAM_*/*.jpg (nuImages)"


@dataclasses.dataclass
class NuImagesConfig(tfds.core.BuilderConfig):
  """`versions` maps split -> metadata folder; a single folder is split every 5th key frame."""
  versions: tuple[tuple[str, str], ...] = (("train", "v1.0-train"), ("validation", "v1.0-val"))


def decode_mask(mask: dict, where: str) -> np.ndarray:
  """Decodes a nuImages mask ({"size": [h, w], "counts": base64 COCO RLE}) to uint8 [h, w]."""
  from pycocotools import mask as coco_mask  # imported here: only nuImages needs it
  try:
    rle = {"size": [int(v) for v in mask["size"]], "counts": base64.b64decode(mask["counts"])}
    with warnings.catch_warnings():
      # pycocotools' Cython array wrapper predates NumPy 2's `copy` keyword; the result is right.
      warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*copy keyword.*")
      return coco_mask.decode(rle)
  except Exception as e:  # pycocotools raises assorted types on corrupt input
    raise ValueError(f"{where}: undecodable mask ({type(e).__name__}: {e})") from e


def load_tables(meta_dir: str) -> dict[str, list[dict]]:
  """Reads the JSON tables of one nuImages version folder."""
  tables = {}
  for t in TABLES:
    rows = image_io.read_json(os.path.join(meta_dir, t + ".json"))
    if not isinstance(rows, list):
      raise ValueError(f"{os.path.join(meta_dir, t + '.json')}: expected a JSON list of records")
    tables[t] = rows
  return tables


def _lookup(index: dict, token: str, table: str, meta_dir: str, referrer: str) -> dict:
  if token not in index:
    raise ValueError(f"{referrer}: dangling token {token!r}, not in "
                     f"{os.path.join(meta_dir, table + '.json')}")
  return index[token]


class NuImages(LixBuilder):
  """nuImages key frames with rendered semantic labels; see the module docstring."""

  name = "lix_nuimages"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      NuImagesConfig(name="default", description="v1.0-train -> train, v1.0-val -> validation."),
      NuImagesConfig(name="mini", versions=(("*", "v1.0-mini"),),
                     description="v1.0-mini split every 5th key frame (smoke tests)."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  CLASS_NAMES = csl.TRAIN_NAMES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  From https://www.nuscenes.org/nuimages get the nuImages v1.0 metadata (all) and samples
  archives and extract them into one folder, which then holds v1.0-train/, v1.0-val/ (or
  v1.0-mini/) and samples/. Optional: depth/<sample_data token>.png (uint16, metres x 256,
  0 = missing) to train a depth teacher. Pass the folder as manual_dir (--config.data.root).
  """

  def _split_generators(self, dl_manager):
    root = image_io.manual_root(dl_manager, self.name, _EXPECTED)
    versions = dict(self.builder_config.versions)
    if "*" in versions:  # one folder, split deterministically by token
      meta_dir = os.path.join(root, versions["*"])
      frames = self._key_frames(meta_dir)
      tokens = sorted(frames[0])
      val = {t for i, t in enumerate(tokens) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1}
      return {
          "train": self._generate_examples(root, meta_dir, frames, [t for t in tokens if t not in val]),
          "validation": self._generate_examples(root, meta_dir, frames, sorted(val)),
      }
    out = {}
    for split, folder in versions.items():
      meta_dir = os.path.join(root, folder)
      if split != "train" and not os.path.isdir(meta_dir):
        continue  # optional split (documented): only train is required
      frames = self._key_frames(meta_dir)
      out[split] = self._generate_examples(root, meta_dir, frames, sorted(frames[0]))
    return out

  def _key_frames(self, meta_dir: str):
    """Indexes one version folder. Returns (key frames by token, surfaces, objects, categories, cams)."""
    if not os.path.isdir(meta_dir):
      raise ValueError(f"{self.name}: {meta_dir} not found; manual_dir must hold {_EXPECTED}")
    tab = load_tables(meta_dir)
    samples = {s["token"]: s for s in tab["sample"]}
    sds = {d["token"]: d for d in tab["sample_data"]}
    cats = {c["token"]: c for c in tab["category"]}
    cams = {c["token"]: c for c in tab["calibrated_sensor"]}
    sd_file = os.path.join(meta_dir, "sample_data.json")
    for c in tab["category"]:
      if c["name"] not in CATEGORY_TO_TRAIN_ID:
        raise ValueError(f"{os.path.join(meta_dir, 'category.json')}: category {c['name']!r} is not "
                         f"in the class map {sorted(CATEGORY_TO_TRAIN_ID)}")
    key = {}
    for s in tab["sample"]:
      sd = _lookup(sds, s["key_camera_token"], "sample_data", meta_dir,
                   f"{os.path.join(meta_dir, 'sample.json')} record {s['token']}")
      key[sd["token"]] = sd
    for sd in key.values():
      _lookup(samples, sd["sample_token"], "sample", meta_dir, f"{sd_file} record {sd['token']}")
      _lookup(cams, sd["calibrated_sensor_token"], "calibrated_sensor", meta_dir,
              f"{sd_file} record {sd['token']}")
    surfaces, objects = {}, {}
    for table, group in (("surface_ann", surfaces), ("object_ann", objects)):
      for a in tab[table]:
        where = f"{os.path.join(meta_dir, table + '.json')} record {a['token']}"
        _lookup(sds, a["sample_data_token"], "sample_data", meta_dir, where)
        _lookup(cats, a["category_token"], "category", meta_dir, where)
        if a["sample_data_token"] in key:
          group.setdefault(a["sample_data_token"], []).append(a)
    return key, surfaces, objects, cats, cams

  def _generate_examples(self, root: str, meta_dir: str, frames, tokens: list[str]):
    """Yields (id, example) for the key frames `tokens`."""
    key, surfaces, objects, cats, cams = frames
    depth_dir = os.path.join(root, "depth")
    has_depth = os.path.isdir(depth_dir)
    for token in tokens:
      sd = key[token]
      image_path = os.path.join(root, sd["filename"])
      image = image_io.read_rgb(image_path)
      hw = image.shape[:2]
      if hw != (int(sd["height"]), int(sd["width"])):
        raise ValueError(f"{image_path}: size {hw} differs from sample_data record {token} "
                         f"({sd['height']}, {sd['width']})")
      label = np.full(hw, IGNORE_INDEX, np.uint8)
      ordered = [("surface_ann", a) for a in surfaces.get(token, [])] + [
          ("object_ann", a) for a in sorted(objects.get(token, []), key=lambda a: a["token"])]
      for table, ann in ordered:
        if ann.get("mask") is None:
          continue  # the devkit skips annotations without a mask (boxes only)
        where = f"{os.path.join(meta_dir, table + '.json')} record {ann['token']}"
        mask = decode_mask(ann["mask"], where)
        if mask.shape != hw:
          raise ValueError(f"{where}: mask size {mask.shape} differs from image {image_path} {hw}")
        label[mask == 1] = CATEGORY_TO_TRAIN_ID[cats[ann["category_token"]]["name"]]
      k = np.asarray(cams[sd["calibrated_sensor_token"]].get("camera_intrinsic") or [], np.float64)
      if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"{os.path.join(meta_dir, 'calibrated_sensor.json')} record "
                         f"{sd['calibrated_sensor_token']}: camera_intrinsic must be a 3x3 camera matrix")
      if has_depth:
        depth_path = os.path.join(depth_dir, token + ".png")
        if not os.path.isfile(depth_path):
          raise ValueError(f"{depth_path}: depth file missing for image {image_path} "
                           f"({depth_dir} exists, so every key frame needs one)")
        depth = image_io.read_png_u16(depth_path).astype(np.float32) / np.float32(256.0)
        image_io.check_same_size(image_path, hw, depth_path, depth)
      else:
        depth = np.zeros(hw, np.float32)
      check_example(image_path, image, depth, label, csl.NUM_CLASSES)
      channel = os.path.basename(os.path.dirname(sd["filename"]))
      record_id = f"{channel}/{token}"
      yield record_id, {
          "image": image,
          "depth": depth,
          "label": label,
          "intrinsics": np.asarray([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], np.float32),
          "baseline": np.float32(0.0),
          "id": record_id,
      }
