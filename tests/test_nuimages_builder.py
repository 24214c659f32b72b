"""nuImages builder on a tiny fixture in the official format (JSON tables, base64 COCO RLE, JPEG)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("pycocotools")

import fixtures_real as fx  # noqa: E402
from lix_jax.data import get_source  # noqa: E402

# Independent copy of the documented category -> Cityscapes train id table (fixture categories).
NU_TRAIN = {"flat.driveable_surface": 0, "vehicle.ego": 255, "vehicle.car": 13,
            "human.pedestrian.adult": 11, "vehicle.truck": 14, "movable_object.barrier": 255,
            "vehicle.bicycle": 18}


def expected_label(rec) -> np.ndarray:
  """Surfaces in file order, then objects sorted by token, unpainted pixels 255."""
  lab = np.full((fx.H, fx.W), 255, np.uint8)
  for name, m in rec["surfaces"]:
    lab[m == 1] = NU_TRAIN[name]
  for _, name, m in sorted(rec["objects"], key=lambda o: o[0]):
    lab[m == 1] = NU_TRAIN[name]
  return lab


@pytest.fixture(scope="module")
def nu(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("nu_root"))
  train = fx.write_nuimages(root, "v1.0-train", 4, seed=1, depth=True)
  val = fx.write_nuimages(root, "v1.0-val", 2, seed=2, depth=True)
  data = str(tmp_path_factory.mktemp("nu_data"))
  srcs = {s: get_source("nuimages", s, data_dir=data, manual_dir=root)
          for s in ("train", "validation")}
  return {"train": train, "validation": val}, srcs


def test_nuimages_records(nu):
  written, srcs = nu
  for split, src in srcs.items():
    ids = [src[i]["id"].decode() for i in range(len(src))]
    # Key frames only, sorted by token; the camera channel is kept in the id.
    want = sorted(written[split])
    assert [i.split("/")[1] for i in ids] == want
    for i in range(len(src)):
      r = src[i]
      token = r["id"].decode().split("/")[1]
      w = written[split][token]
      assert r["id"].decode().split("/")[0] == w["filename"].split("/")[1]
      np.testing.assert_array_equal(r["label"], expected_label(w))
      assert np.abs(r["image"].astype(int) - w["image"]).mean() < 4
      np.testing.assert_array_equal(r["depth"], w["depth_raw"].astype(np.float64) / 256.0)
      np.testing.assert_allclose(r["intrinsics"], w["intrinsics"], rtol=1e-6)
      assert r["baseline"] == 0


def test_nuimages_mini_config_without_depth(tmp_path):
  root = str(tmp_path / "root")
  written = fx.write_nuimages(root, "v1.0-mini", 6, seed=3)
  tokens = sorted(written)
  srcs = {s: get_source("nuimages", s, data_dir=str(tmp_path / "d"), manual_dir=root,
                        builder_config="mini") for s in ("train", "validation")}
  got = {s: [src[i]["id"].decode().split("/")[1] for i in range(len(src))] for s, src in srcs.items()}
  assert got["validation"] == tokens[4::5]
  assert got["train"] == [t for i, t in enumerate(tokens) if i % 5 != 4]
  r = srcs["train"][0]
  assert not np.any(r["depth"])
  np.testing.assert_array_equal(r["label"], expected_label(written[got["train"][0]]))


def _edit(root, table, fn):
  path = os.path.join(root, "v1.0-train", table + ".json")
  with open(path) as f:
    rows = json.load(f)
  token = fn(rows)
  with open(path, "w") as f:
    json.dump(rows, f)
  return token


def _mask_size(rows):
  from pycocotools import mask as coco_mask
  import base64
  enc = coco_mask.encode(np.asfortranarray(np.ones((fx.H + 1, fx.W), np.uint8)))
  row = next(r for r in rows if r["mask"] is not None)
  row["mask"] = {"size": list(enc["size"]), "counts": base64.b64encode(enc["counts"]).decode()}
  return row["token"]


def _dangling_category(rows):
  rows[0]["category_token"] = "f" * 32
  return "f" * 32


@pytest.mark.parametrize("table,fn", [("object_ann", _mask_size), ("surface_ann", _mask_size),
                                      ("object_ann", _dangling_category)])
def test_nuimages_bad_annotations_name_the_record(tmp_path, table, fn):
  root = str(tmp_path / "root")
  fx.write_nuimages(root, "v1.0-train", 2, seed=4)
  token = _edit(root, table, fn)
  with pytest.raises(ValueError, match=re.escape(token)):
    get_source("nuimages", "train", data_dir=str(tmp_path / "d"), manual_dir=root)


def test_nuimages_missing_image_names_the_file(tmp_path):
  root = str(tmp_path / "root")
  written = fx.write_nuimages(root, "v1.0-train", 2, seed=5)
  path = os.path.join(root, next(iter(written.values()))["filename"])
  os.remove(path)
  with pytest.raises(ValueError, match=re.escape(path)):
    get_source("nuimages", "train", data_dir=str(tmp_path / "d"), manual_dir=root)


def test_teacher_on_nuimages_without_depth_is_a_config_error(tmp_path):
  import importlib.util
  from lix_jax.train import inputs
  root = str(tmp_path / "root")
  fx.write_nuimages(root, "v1.0-mini", 6, seed=3)
  spec = importlib.util.spec_from_file_location(
      "nuimages_config", os.path.join(os.path.dirname(__file__), "..", "configs", "nuimages.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.root, config.data.data_dir, config.data.builder_config = root, str(tmp_path / "d"), "mini"
  with pytest.raises(ValueError, match="nuimages.*no depth.*teacher"):
    inputs.check_has_depth(config)
  fx.write_nuimages(str(tmp_path / "root_depth"), "v1.0-mini", 6, seed=3, depth=True)
  config.data.root, config.data.data_dir = str(tmp_path / "root_depth"), str(tmp_path / "d2")
  inputs.check_has_depth(config)  # With user-made depth maps a teacher is fine.
