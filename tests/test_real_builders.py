"""Real-format builders (KITTI semantics, Virtual KITTI 2, Cityscapes) on tiny fixtures.

The fixtures are written in the official on-disk formats by `fixtures_real`; expected records are
computed here from the documented formulas and an independent copy of the label tables.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import fixtures_real as fx
from lix_jax.data import get_source

# Cityscapes label id -> train id (official table); ids 0..33 not listed map to 255.
CS_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
VK_TRAIN = {"Terrain": 9, "Sky": 10, "Tree": 8, "Vegetation": 8, "Building": 2, "Road": 0,
            "GuardRail": 255, "TrafficSign": 7, "TrafficLight": 6, "Pole": 5, "Misc": 255,
            "Truck": 14, "Car": 13, "Van": 13, "Undefined": 255}
VK_SCENES = {"Scene01": 2, "Scene02": 1, "Scene06": 1, "Scene18": 1, "Scene20": 2}


def cs_train_ids(ids: np.ndarray) -> np.ndarray:
  out = np.full(ids.shape, 255, np.uint8)
  for i, t in CS_TRAIN.items():
    out[ids == i] = t
  return out


def records(src) -> list[dict]:
  return [src[i] for i in range(len(src))]


# ----------------------------------------------------------------------------- KITTI semantics

@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("kitti_root"))
  written = fx.write_kitti(root, n=7)
  data = str(tmp_path_factory.mktemp("kitti_data"))
  return written, {s: get_source("kitti_semantics", s, data_dir=data, manual_dir=root)
                   for s in ("train", "validation")}, root


def test_kitti_fixture_formats_are_official(kitti):
  _, _, root = kitti
  d = os.path.join(root, "training")
  assert fx.png_bit_depth(os.path.join(d, "depth", "000000_10.png")) == 16
  assert fx.png_bit_depth(os.path.join(d, "semantic", "000000_10.png")) == 8


def test_kitti_splits_every_fifth_is_validation(kitti):
  written, srcs, _ = kitti
  stems = sorted(written)
  assert [r["id"].decode() for r in records(srcs["validation"])] == stems[4::5]
  assert [r["id"].decode() for r in records(srcs["train"])] == [
      s for i, s in enumerate(stems) if i % 5 != 4]


def test_kitti_records(kitti):
  written, srcs, _ = kitti
  for split in ("train", "validation"):
    for r in records(srcs[split]):
      w = written[r["id"].decode()]
      np.testing.assert_array_equal(r["image"], w["image"])
      assert r["label"].dtype == np.uint8
      np.testing.assert_array_equal(r["label"], cs_train_ids(w["ids"]))
      assert r["depth"].dtype == np.float32
      np.testing.assert_array_equal(r["depth"], w["depth_raw"].astype(np.float64) / 256.0)
      assert np.all(r["depth"][w["depth_raw"] == 0] == 0)
      p = w["P2"]
      np.testing.assert_allclose(r["intrinsics"], [p[0], p[5], p[2], p[6]], rtol=1e-6)
      assert r["baseline"] == pytest.approx(0.54)


def test_kitti_without_depth_or_calib_uses_zeros_and_defaults(tmp_path):
  root = str(tmp_path / "root")
  written = fx.write_kitti(root, n=5, depth=False, calib=False)
  src = get_source("kitti_semantics", "train", data_dir=str(tmp_path / "data"), manual_dir=root)
  assert len(src) == 4
  r = src[0]
  assert r["depth"].shape == (fx.H, fx.W) and not np.any(r["depth"])
  np.testing.assert_allclose(r["intrinsics"], [721.5377, 721.5377, 609.5593, 172.854], rtol=1e-6)
  np.testing.assert_array_equal(r["label"], cs_train_ids(written[r["id"].decode()]["ids"]))


# ----------------------------------------------------------------------------- Cityscapes

CS_LAYOUT = {"train": [("aachen", 0, 19), ("aachen", 1, 19), ("bochum", 0, 5)],
             "val": [("frankfurt", 0, 294)], "test": [("berlin", 0, 19)],
             "train_extra": [("augsburg", 0, 7)]}


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("cs_root"))
  written = fx.write_cityscapes(root, CS_LAYOUT)
  data = str(tmp_path_factory.mktemp("cs_data"))
  return written, {s: get_source("cityscapes", s, data_dir=data, manual_dir=root)
                   for s in ("train", "validation", "test", "unlabeled")}, root


def test_cityscapes_splits(cityscapes):
  _, srcs, _ = cityscapes
  folder = {"train": "train", "validation": "val", "test": "test", "unlabeled": "train_extra"}
  for split, src in srcs.items():
    expected = sorted(f"{c}_{s:06d}_{f:06d}" for c, s, f in CS_LAYOUT[folder[split]])
    assert [r["id"].decode() for r in records(src)] == expected


def test_cityscapes_records(cityscapes):
  written, srcs, root = cityscapes
  assert fx.png_bit_depth(os.path.join(
      root, "disparity", "train", "aachen", "aachen_000000_000019_disparity.png")) == 16
  for split, src in srcs.items():
    for r in records(src):
      w = written[r["id"].decode()]
      np.testing.assert_array_equal(r["image"], w["image"])
      if split == "unlabeled":
        assert np.all(r["label"] == 255)
      else:
        np.testing.assert_array_equal(r["label"], cs_train_ids(w["ids"]))
      p = w["disp_raw"].astype(np.float64)
      disp = (p - 1.0) / 256.0
      with np.errstate(divide="ignore"):
        want = np.where((p > 0) & (disp > 0), w["fx"] * w["baseline"] / disp, 0.0)
      np.testing.assert_allclose(r["depth"], want, rtol=1e-6)
      assert r["depth"][0, 0] == 0 and r["depth"][0, 1] == 0  # p = 0 invalid, p = 1 -> d = 0
      assert r["depth"][0, 3] == pytest.approx(w["fx"] * w["baseline"], rel=1e-6)  # p=257: d=1
      np.testing.assert_allclose(r["intrinsics"], [w["fx"], w["fy"], w["u0"], w["v0"]], rtol=1e-6)
      assert r["baseline"] == pytest.approx(w["baseline"], rel=1e-6)


# ----------------------------------------------------------------------------- Virtual KITTI 2

@pytest.fixture(scope="module")
def vkitti(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("vk_root"))
  written = fx.write_vkitti(root, VK_SCENES, variations=("clone", "fog"))
  data = str(tmp_path_factory.mktemp("vk_data"))
  srcs = {(c, s): get_source("vkitti2", s, data_dir=data, manual_dir=root, builder_config=c)
          for c in ("clone", "fog") for s in ("train", "validation", "test")}
  return written, srcs, root


def test_vkitti_splits_by_scene_and_variation(vkitti):
  written, srcs, _ = vkitti
  scenes = {"train": ("Scene01", "Scene02", "Scene06", "Scene18"), "validation": ("Scene20",),
            "test": ("Scene20",)}
  for (var, split), src in srcs.items():
    want = [k for k in written if k.split("/")[0] in scenes[split] and k.split("/")[1] == var]
    assert [r["id"].decode() for r in records(src)] == sorted(want)


def test_vkitti_records(vkitti):
  written, srcs, _ = vkitti
  for src in srcs.values():
    for r in records(src):
      w = written[r["id"].decode()]
      # JPEG is lossy: the smooth fixture image comes back within a few grey levels.
      assert r["image"].shape == w["image"].shape and r["image"].dtype == np.uint8
      assert np.abs(r["image"].astype(int) - w["image"]).mean() < 4
      want_label = np.vectorize(VK_TRAIN.get)(w["categories"]).astype(np.uint8)
      np.testing.assert_array_equal(r["label"], want_label)
      raw = w["depth_raw"]
      want_depth = np.where(raw == 65535, 0.0, raw.astype(np.float64) / 100.0)
      np.testing.assert_allclose(r["depth"], want_depth, rtol=1e-7)
      np.testing.assert_allclose(r["intrinsics"], w["intrinsics"], rtol=1e-6)
      assert r["baseline"] == pytest.approx(0.532725)


# ----------------------------------------------------------------------------- bad data

def _corrupt_truncate(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])


def _resize(path, sixteen=False):
  arr = np.zeros((fx.H + 2, fx.W), np.uint16 if sixteen else np.uint8)
  fx.png(path, arr)


def _kitti_case(root, case):
  fx.write_kitti(root, n=5)
  t = os.path.join(root, "training")
  stem = "000001_10"
  if case == "truncated_image":
    path = os.path.join(t, "image_2", stem + ".png")
    _corrupt_truncate(path)
  elif case == "label_size":
    path = os.path.join(t, "semantic", stem + ".png")
    _resize(path)
  elif case == "label_id":
    path = os.path.join(t, "semantic", stem + ".png")
    ids = np.full((fx.H, fx.W), 7, np.uint8)
    ids[3, 3] = 34  # not a Cityscapes id
    fx.png(path, ids)
  elif case == "label_missing":
    path = os.path.join(t, "semantic", stem + ".png")
    os.remove(path)
  elif case == "depth_missing":
    path = os.path.join(t, "depth", stem + ".png")
    os.remove(path)
  elif case == "depth_8bit":
    path = os.path.join(t, "depth", stem + ".png")
    fx.png(path, np.ones((fx.H, fx.W), np.uint8))
  elif case == "depth_size":
    path = os.path.join(t, "depth", stem + ".png")
    _resize(path, sixteen=True)
  elif case == "calib_no_p2":
    path = os.path.join(t, "calib", stem + ".txt")
    fx.text(path, "P0: 1 2 3\n")
  return path, "kitti_semantics", None


def _cityscapes_case(root, case):
  fx.write_cityscapes(root, {"train": [("aachen", 0, 19), ("aachen", 0, 20)]})
  stem = os.path.join("train", "aachen", "aachen_000000_000020")
  if case == "disparity_size":
    path = os.path.join(root, "disparity", stem + "_disparity.png")
    _resize(path, sixteen=True)
  elif case == "camera_missing":
    path = os.path.join(root, "camera", stem + "_camera.json")
    os.remove(path)
  elif case == "camera_no_baseline":
    path = os.path.join(root, "camera", stem + "_camera.json")
    fx.text(path, json.dumps({"extrinsic": {}, "intrinsic": {"fx": 1, "fy": 1, "u0": 1, "v0": 1}}))
  elif case == "label_id":
    path = os.path.join(root, "gtFine", stem + "_gtFine_labelIds.png")
    fx.png(path, np.full((fx.H, fx.W), 200, np.uint8))
  elif case == "disparity_missing":
    path = os.path.join(root, "disparity", stem + "_disparity.png")
    os.remove(path)
  elif case == "label_missing":
    path = os.path.join(root, "gtFine", stem + "_gtFine_labelIds.png")
    os.remove(path)
  return path, "cityscapes", None


def _vkitti_case(root, case):
  fx.write_vkitti(root, {s: 1 for s in VK_SCENES})
  pre = os.path.join(root, "vkitti_2.0.3_")
  tdir = pre + os.path.join("textgt", "Scene02", "clone")
  fdir = lambda kind: pre + os.path.join(kind, "Scene02", "clone", "frames", kind, "Camera_0")  # noqa
  if case == "colour":
    path = os.path.join(fdir("classSegmentation"), "classgt_00000.png")
    lab = np.zeros((fx.H, fx.W, 3), np.uint8)
    lab[0, 0] = (1, 2, 3)
    fx.png(path, lab)
  elif case == "colors_missing":
    path = os.path.join(tdir, "colors.txt")
    os.remove(path)
  elif case == "intrinsics_frame":
    path = os.path.join(tdir, "intrinsic.txt")
    fx.text(path, "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n7 0 1.0 1.0 1.0 1.0\n")
  elif case == "truncated_jpg":
    path = os.path.join(fdir("rgb"), "rgb_00000.jpg")
    _corrupt_truncate(path)
  elif case == "depth_size":
    path = os.path.join(fdir("depth"), "depth_00000.png")
    _resize(path, sixteen=True)
  elif case == "label_missing":
    path = os.path.join(fdir("classSegmentation"), "classgt_00000.png")
    os.remove(path)
  return path, "vkitti2", "clone"


BAD_CASES = (
    [(_kitti_case, c) for c in ("truncated_image", "label_size", "label_id", "label_missing",
                                "depth_missing", "depth_8bit", "depth_size", "calib_no_p2")]
    + [(_cityscapes_case, c) for c in ("disparity_size", "camera_missing", "camera_no_baseline",
                                       "label_id", "disparity_missing", "label_missing")]
    + [(_vkitti_case, c) for c in ("colour", "colors_missing", "intrinsics_frame", "truncated_jpg",
                                   "depth_size", "label_missing")])


@pytest.mark.parametrize("writer,case", BAD_CASES,
                         ids=[f"{w.__name__[1:-5]}-{c}" for w, c in BAD_CASES])
def test_bad_data_names_the_file(tmp_path, writer, case):
  root = str(tmp_path / "root")
  path, name, config = writer(root, case)
  with pytest.raises(ValueError, match=re.escape(path)):
    get_source(name, "train", data_dir=str(tmp_path / "data"), manual_dir=root, builder_config=config)


@pytest.mark.parametrize("name", ["kitti_semantics", "vkitti2", "cityscapes"])
def test_missing_or_empty_manual_dir(tmp_path, name):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match=re.escape(missing)):
    get_source(name, "train", data_dir=str(tmp_path / "data"), manual_dir=missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=re.escape(str(empty))):
    get_source(name, "train", data_dir=str(tmp_path / "data"), manual_dir=str(empty))
