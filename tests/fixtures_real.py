"""Writers of tiny real-format datasets (KITTI semantics, Virtual KITTI 2, Cityscapes) for tests,
and torchvision-layout ResNet state dicts (random ImageNet-style weights under torchvision's names).

Each writer lays files out exactly as the official download does (folders, file names, 8-bit vs
16-bit PNG, JPEG, JSON fields, text files) and returns the raw arrays it wrote, so that tests can
compute the expected records independently from the documented formulas.
"""
from __future__ import annotations

import json
import os

import numpy as np
from lix_jax.data import rehearse
from lix_jax.data.rehearse import write_jpg, write_png, write_text

H, W = 24, 40

# Cityscapes label ids that occur in label images (0..33).
CS_IDS = np.arange(34)

# Virtual KITTI 2 colors.txt (v2.0.3), in file order (the expected train ids of each category are
# written out independently in test_real_builders.py).
VKITTI_COLORS = rehearse.VKITTI_COLORS


# The file writers are the rehearsal's (`lix_jax.data.rehearse`): folders made, PNG / JPEG / text.
png, jpg, text = write_png, write_jpg, write_text


def png_bit_depth(path: str) -> int:
  """The bit depth byte of a PNG's IHDR chunk (to prove a fixture is really 16-bit)."""
  with open(path, "rb") as f:
    return f.read(25)[24]


def smooth_rgb(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
  """A smooth colour image (JPEG reproduces it within a few grey levels)."""
  y, x = np.mgrid[0:h, 0:w]
  base = rng.uniform(40, 200, size=3)
  slope = rng.uniform(-2, 2, size=(2, 3))
  img = base + y[..., None] * slope[0] + x[..., None] * slope[1]
  return np.clip(img, 0, 255).astype(np.uint8)


def blocky(rng: np.random.Generator, values: np.ndarray, h: int = H, w: int = W) -> np.ndarray:
  """A map of 4x4 blocks each drawn from `values` (every value likely present)."""
  blocks = rng.choice(values, size=(h // 4 + 1, w // 4 + 1))
  return np.repeat(np.repeat(blocks, 4, 0), 4, 1)[:h, :w]


def write_kitti(root: str, n: int, seed: int = 0, depth: bool = True, calib: bool = True) -> dict:
  """Writes `n` KITTI semantics training images. Returns stem -> dict of what was written."""
  rng = np.random.default_rng(seed)
  out = {}
  for i in range(n):
    stem = f"{i:06d}_10"
    rec = {"image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
           "ids": blocky(rng, CS_IDS).astype(np.uint8)}
    png(os.path.join(root, "training", "image_2", stem + ".png"), rec["image"])
    png(os.path.join(root, "training", "semantic", stem + ".png"), rec["ids"])
    if depth:
      raw = rng.integers(0, 65536, (H, W)).astype(np.uint16)
      raw[rng.random((H, W)) < 0.3] = 0
      rec["depth_raw"] = raw
      png(os.path.join(root, "training", "depth", stem + ".png"), raw)
    if calib:
      p2 = rng.uniform(1, 900, size=12)
      rec["P2"] = p2
      lines = ["P0: " + " ".join(["0.0"] * 12), "P1: " + " ".join(["0.0"] * 12),
               "P2: " + " ".join(f"{v:.6e}" for v in p2), "P3: " + " ".join(["1.0"] * 12)]
      text(os.path.join(root, "training", "calib", stem + ".txt"), "\n".join(lines) + "\n")
    out[stem] = rec
  return out


def write_cityscapes(root: str, layout: dict[str, list[tuple[str, int, int]]], seed: int = 0,
                     labelled: tuple[str, ...] = ("train", "val", "test")) -> dict:
  """Writes Cityscapes files. `layout` maps folder split -> [(city, seq, frame)].

  Returns stem -> dict(image, ids (or None), disp_raw, fx, fy, u0, v0, baseline).
  """
  rng = np.random.default_rng(seed)
  out = {}
  for split, items in layout.items():
    for city, seq, frame in items:
      stem = f"{city}_{seq:06d}_{frame:06d}"
      d = lambda kind, suffix: os.path.join(root, kind, split, city, stem + suffix)  # noqa: E731
      rec = {"image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "ids": None}
      png(d("leftImg8bit", "_leftImg8bit.png"), rec["image"])
      if split in labelled:
        rec["ids"] = blocky(rng, CS_IDS).astype(np.uint8)
        png(d("gtFine", "_gtFine_labelIds.png"), rec["ids"])
      raw = rng.integers(0, 30000, (H, W)).astype(np.uint16)
      raw[0, :5] = [0, 1, 2, 257, 65535]  # invalid, zero disparity, tiny, 1 px, largest
      rec["disp_raw"] = raw
      png(d("disparity", "_disparity.png"), raw)
      cam = {"fx": float(rng.uniform(2000, 2300)), "fy": float(rng.uniform(2000, 2300)),
             "u0": float(rng.uniform(900, 1100)), "v0": float(rng.uniform(400, 600)),
             "baseline": float(rng.uniform(0.2, 0.23))}
      rec.update(cam)
      text(d("camera", "_camera.json"), json.dumps({
          "extrinsic": {"baseline": cam["baseline"], "pitch": 0.038, "roll": 0.0, "x": 1.7,
                        "y": 0.1, "yaw": -0.0195, "z": 1.18},
          "intrinsic": {"fx": cam["fx"], "fy": cam["fy"], "u0": cam["u0"], "v0": cam["v0"]}},
          indent=4))
      out[stem] = rec
  return out


def write_vkitti(root: str, scenes: dict[str, int], variations: tuple[str, ...] = ("clone",),
                 seed: int = 0) -> dict:
  """Writes Virtual KITTI 2 files. `scenes` maps SceneXX -> number of frames.

  Returns "SceneXX/<variation>/NNNNN" -> dict(image, categories [H,W] of names, depth_raw,
  intrinsics (fx, fy, cx, cy) of camera 0).
  """
  rng = np.random.default_rng(seed)
  names = np.array([n for n, _ in VKITTI_COLORS])
  colours = {n: c for n, c in VKITTI_COLORS}
  pre = "vkitti_2.0.3_"
  out = {}
  for scene, n in scenes.items():
    for var in variations:
      tdir = os.path.join(root, pre + "textgt", scene, var)
      text(os.path.join(tdir, "colors.txt"),
           "Category r g b\n" + "".join(f"{k} {r} {g} {b}\n" for k, (r, g, b) in VKITTI_COLORS))
      intr_lines = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
      for f in range(n):
        key = f"{scene}/{var}/{f:05d}"
        k0 = tuple(float(v) for v in np.round(rng.uniform(500, 800, 4), 4))
        intr_lines.append(f"{f} 0 {k0[0]} {k0[1]} {k0[2]} {k0[3]}")
        intr_lines.append(f"{f} 1 1.0 2.0 3.0 4.0")  # the right camera: must not be used
        cats = names[blocky(rng, np.arange(len(names)))]
        label_rgb = np.array([[colours[c] for c in row] for row in cats], np.uint8)
        raw = rng.integers(1, 65535, (H, W)).astype(np.uint16)
        raw[rng.random((H, W)) < 0.2] = 65535
        fdir = lambda kind: os.path.join(root, pre + kind, scene, var, "frames", kind,  # noqa: E731
                                         "Camera_0")
        image = smooth_rgb(rng)
        jpg(os.path.join(fdir("rgb"), f"rgb_{f:05d}.jpg"), image)
        png(os.path.join(fdir("depth"), f"depth_{f:05d}.png"), raw)
        png(os.path.join(fdir("classSegmentation"), f"classgt_{f:05d}.png"), label_rgb)
        out[key] = {"image": image, "categories": cats, "depth_raw": raw, "intrinsics": k0}
      text(os.path.join(tdir, "intrinsic.txt"), "\n".join(intr_lines) + "\n")
  return out


NUIMAGES_CATEGORIES = ("flat.driveable_surface", "vehicle.ego", "vehicle.car", "human.pedestrian.adult",
                       "vehicle.truck", "movable_object.barrier", "vehicle.bicycle")


def write_nuimages(root: str, version: str, n_samples: int, seed: int = 0,
                   depth: bool = False) -> dict:
  """Writes a nuImages version folder (JSON tables, base64 COCO-RLE masks, JPEG key frames).

  Each sample has a key frame (with image, 1-2 surface and 0-3 object masks, one of them
  sometimes without a mask) and a non-key sweep without an image file. Returns key-frame token ->
  dict(image, filename, surfaces [(category, mask)], objects [(token, category, mask)],
  intrinsics (fx, fy, cx, cy), depth_raw or None).
  """
  from pycocotools import mask as coco_mask
  import base64
  rng = np.random.default_rng(seed)
  tok = lambda: "".join(rng.choice(list("0123456789abcdef"), 32))  # noqa: E731

  def rle(mask):
    enc = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(enc["size"]), "counts": base64.b64encode(enc["counts"]).decode("ascii")}

  def rect_mask():
    m = np.zeros((H, W), np.uint8)
    y0, x0 = rng.integers(0, H - 4), rng.integers(0, W - 4)
    m[y0:y0 + rng.integers(3, H // 2), x0:x0 + rng.integers(3, W // 2)] = 1
    return m

  cats = [{"token": tok(), "name": n, "description": n} for n in NUIMAGES_CATEGORIES]
  cat_tok = {c["name"]: c["token"] for c in cats}
  tables = {"sample": [], "sample_data": [], "object_ann": [], "surface_ann": [],
            "category": cats, "calibrated_sensor": [], "sensor": [], "log": [], "ego_pose": []}
  out = {}
  for i in range(n_samples):
    channel = ("CAM_FRONT", "CAM_BACK_LEFT")[i % 2]
    s_tok, key_tok, sweep_tok, cs_tok = tok(), tok(), tok(), tok()
    k = np.round(rng.uniform(500, 1500, 4), 3)
    tables["calibrated_sensor"].append({
        "token": cs_tok, "sensor_token": tok(), "translation": [1.0, 0.0, 1.5],
        "rotation": [0.5, -0.5, 0.5, -0.5], "camera_distortion": [0.0] * 5,
        "camera_intrinsic": [[k[0], 0.0, k[2]], [0.0, k[1], k[3]], [0.0, 0.0, 1.0]]})
    tables["sample"].append({"token": s_tok, "timestamp": 1000 * i, "log_token": tok(),
                             "key_camera_token": key_tok})
    fname = f"samples/{channel}/n008-{version}-{seed}-{i:04d}__{channel}__{1000 * i}.jpg"
    for sd_tok, is_key in ((key_tok, True), (sweep_tok, False)):
      tables["sample_data"].append({
          "token": sd_tok, "sample_token": s_tok, "ego_pose_token": tok(),
          "calibrated_sensor_token": cs_tok, "timestamp": 1000 * i + (0 if is_key else 50),
          "fileformat": "jpg", "is_key_frame": is_key, "height": H, "width": W,
          "filename": fname if is_key else fname.replace("samples/", "sweeps/"),
          "prev": "", "next": ""})
    image = smooth_rgb(rng)
    jpg(os.path.join(root, fname), image)
    rec = {"image": image, "filename": fname, "surfaces": [], "objects": [],
           "intrinsics": (k[0], k[1], k[2], k[3]), "depth_raw": None}
    road = np.zeros((H, W), np.uint8)
    road[H // 2:] = 1
    surf = [("flat.driveable_surface", road)] + ([("vehicle.ego", rect_mask())] if i % 2 else [])
    for name, m in surf:
      tables["surface_ann"].append({"token": tok(), "sample_data_token": key_tok,
                                    "category_token": cat_tok[name], "mask": rle(m)})
      rec["surfaces"].append((name, m))
    for j in range(int(rng.integers(1, 4))):
      name = NUIMAGES_CATEGORIES[2 + int(rng.integers(0, len(NUIMAGES_CATEGORIES) - 2))]
      m = rect_mask()
      a_tok = tok()
      no_mask = j == 2  # a box-only annotation
      tables["object_ann"].append({"token": a_tok, "sample_data_token": key_tok,
                                   "category_token": cat_tok[name], "attribute_tokens": [],
                                   "bbox": [0, 0, 1, 1], "mask": None if no_mask else rle(m)})
      if not no_mask:
        rec["objects"].append((a_tok, name, m))
    # An annotation on the sweep must not be drawn on anything.
    tables["object_ann"].append({"token": tok(), "sample_data_token": sweep_tok,
                                 "category_token": cat_tok["vehicle.car"], "attribute_tokens": [],
                                 "bbox": [0, 0, 1, 1], "mask": rle(np.ones((H, W), np.uint8))})
    if depth:
      raw = rng.integers(0, 65536, (H, W)).astype(np.uint16)
      rec["depth_raw"] = raw
      png(os.path.join(root, "depth", key_tok + ".png"), raw)
    out[key_tok] = rec
  for name, rows in tables.items():
    text(os.path.join(root, version, name + ".json"), json.dumps(rows))
  return out


# torchvision's ResNet definitions: (block, blocks per layer, expansion).
ARCHS = {"resnet18": ("basic", (2, 2, 2, 2), 1), "resnet50": ("bottleneck", (3, 4, 6, 3), 4)}
PLANES = (64, 128, 256, 512)


def torchvision_layout(arch):
  """Yields (prefix, block kind, inplanes, planes, stride, has_downsample) as torchvision builds
  `layer1..layer4` (`ResNet._make_layer`)."""
  kind, layers, expansion = ARCHS[arch]
  inplanes = 64
  for li, (planes, n) in enumerate(zip(PLANES, layers), start=1):
    for b in range(n):
      stride = 2 if li > 1 and b == 0 else 1
      downsample = b == 0 and (stride != 1 or inplanes != planes * expansion)
      yield f"layer{li}.{b}.", kind, inplanes, planes, stride, downsample
      inplanes = planes * expansion


def torchvision_state_dict(arch, seed=0):
  """Random weights under torchvision's names, with running statistics (positive variances)."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, o, i, k):
    std = np.sqrt(2.0 / (i * k * k))  # He-normal, fan-in
    sd[f"{name}.weight"] = rng.normal(0, std, (o, i, k, k)).astype(np.float32)

  def bn(name, c, last=False):
    # A small scale on a block's last BN keeps activations O(1) through 16 random blocks.
    sd[f"{name}.weight"] = rng.uniform(0.1, 0.3, c).astype(np.float32) if last else (
        rng.uniform(0.5, 1.5, c).astype(np.float32))
    sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  expansion = ARCHS[arch][2]
  for p, kind, inplanes, planes, _, downsample in torchvision_layout(arch):
    if kind == "basic":
      conv(p + "conv1", planes, inplanes, 3), bn(p + "bn1", planes)
      conv(p + "conv2", planes, planes, 3), bn(p + "bn2", planes, last=True)
    else:
      conv(p + "conv1", planes, inplanes, 1), bn(p + "bn1", planes)
      conv(p + "conv2", planes, planes, 3), bn(p + "bn2", planes)
      conv(p + "conv3", planes * 4, planes, 1), bn(p + "bn3", planes * 4, last=True)
    if downsample:
      conv(p + "downsample.0", planes * expansion, inplanes, 1)
      bn(p + "downsample.1", planes * expansion)
  sd["fc.weight"] = rng.normal(0, 0.01, (1000, 512 * expansion)).astype(np.float32)
  sd["fc.bias"] = np.zeros(1000, np.float32)
  return sd
