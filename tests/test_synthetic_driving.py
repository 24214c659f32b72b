"""Tests of the embedded synthetic_driving dataset (tiny config) and its generator."""
from __future__ import annotations

import numpy as np
import pytest

import lix_jax.data as data
from lix_jax.data import geometry
from lix_jax.data.builders import synthetic_driving, synthetic_render, synthetic_scene

SPLITS = {"train": 32, "unlabeled": 32, "validation": 16, "test": 16}
H, W = 64, 192
NUM_CLASSES = len(synthetic_driving.CLASS_NAMES)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tiny_a")
  data.get_source("synthetic_driving", "train", data_dir=d, builder_config="tiny")
  return d


def _source(d, split):
  return data.get_source("synthetic_driving", split, data_dir=d, builder_config="tiny")


def _load(d, split):
  src = _source(d, split)
  return [src[i] for i in range(len(src))]


def test_configs():
  cls = data.BUILDERS["synthetic_driving"]
  assert cls is synthetic_driving.SyntheticDriving and cls.name == "lix_synthetic_driving"
  configs = {c.name: c for c in cls.BUILDER_CONFIGS}
  assert cls.DEFAULT_BUILDER_CONFIG_NAME == "default"
  assert configs["tiny"].num_train <= 64
  default = configs["default"]
  assert (default.num_train, default.height, default.width) == (200, 64, 192)
  names = set(synthetic_driving.CLASS_NAMES)
  assert len(names) == NUM_CLASSES >= 9 and {"road", "sidewalk", "sky"} <= names


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_fields_shapes_and_values(tiny_dir, split):
  examples = _load(tiny_dir, split)
  assert len(examples) == SPLITS[split]
  f = 721.5377 * W / 1242
  for i, ex in enumerate(examples):
    assert ex["id"] == f"{split}/{i:06d}".encode()
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (H, W, 3)
    assert ex["depth"].dtype == np.float32 and ex["depth"].shape == (H, W)
    assert ex["label"].dtype == np.uint8 and ex["label"].shape == (H, W)
    assert ex["intrinsics"].dtype == np.float32 and ex["intrinsics"].shape == (4,)
    np.testing.assert_allclose(ex["intrinsics"], [f, f, (W - 1) / 2, (H - 1) / 2], rtol=1e-6)
    assert ex["baseline"] == pytest.approx(0.54)
    label, depth = ex["label"], ex["depth"]
    assert np.all((label < NUM_CLASSES) | (label == 255))
    assert np.all(np.isfinite(depth)) and np.all(depth >= 0) and depth.max() <= 81.0
    sky = label == synthetic_scene.SKY
    assert np.all(depth[sky] == 0), "the sky has no depth"
    surface = (label != 255) & ~sky
    holes = np.mean(depth[surface] == 0)
    assert 0.0 < holes < 0.5, f"{ex['id']}: hole fraction {holes}"
    assert ex["image"].std() > 10  # not a blank image


def test_every_class_appears_and_splits_differ(tiny_dir):
  train, val = _load(tiny_dir, "train"), _load(tiny_dir, "validation")
  present = np.unique(np.concatenate([ex["label"].ravel() for ex in train]))
  missing = [synthetic_driving.CLASS_NAMES[c] for c in range(NUM_CLASSES) if c not in present]
  assert not missing, f"classes never seen in train: {missing}"
  assert not np.array_equal(train[0]["image"], val[0]["image"])
  assert not np.array_equal(train[0]["label"], _load(tiny_dir, "unlabeled")[0]["label"])
  assert not np.array_equal(train[0]["image"], train[1]["image"])


def test_builds_are_deterministic(tiny_dir, tmp_path):
  for split in ("train", "test"):
    a, b = _load(tiny_dir, split), _load(tmp_path, split)
    for ea, eb in zip(a, b, strict=True):
      for key in ea:
        np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"{split} {ea['id']} {key}")


def test_depth_is_camera_z_consistent_with_intrinsics_and_normals():
  """Normals estimated from the clean depth match the renderer's surface normals, and the depth
  noise is at the documented level (so normals from the noisy depth stay usable)."""
  errs, rel = [], []
  for i in range(4):
    ex = synthetic_render.generate_example(0, 2, i, H, W, extras=True)
    clean = np.where(np.isfinite(ex["depth_clean"]), ex["depth_clean"], 0.0).astype(np.float32)
    est = geometry.depth_to_normals(clean, ex["intrinsics"])
    # Planar interiors: the true normal equals that of the 4 neighbours (edges and the curved
    # sides of thin cylinders are excluded; depth edges between parallel surfaces are kept).
    gt = np.pad(ex["normal"], ((1, 1), (1, 1), (0, 0)))
    ok = np.any(ex["normal"] != 0, -1) & np.any(est != 0, -1)
    for dv, du in ((0, 1), (2, 1), (1, 0), (1, 2)):
      ok &= np.all(np.abs(gt[dv:dv + H, du:du + W] - ex["normal"]) < 1e-4, -1)
    cos = np.clip(np.sum(est[ok] * ex["normal"][ok], -1), -1, 1)
    errs.append(np.degrees(np.arccos(cos)))
    valid = ex["depth"] > 0
    rel.append(np.abs(ex["depth"][valid] / ex["depth_clean"][valid] - 1))
  errs, rel = np.concatenate(errs), np.concatenate(rel)
  print(f"normals from clean depth: median error {np.median(errs):.3f} deg, "
        f"{np.mean(errs < 1):.3f} of planar pixels under 1 deg; median relative depth noise "
        f"{np.median(rel):.2e}")
  assert np.median(errs) < 0.5 and np.mean(errs < 1) > 0.95
  assert 1e-4 < np.median(rel) < 2e-3, np.median(rel)


def _probe_features(examples, rng, per_image=200):
  """Per-pixel RGB and RGB + geometry features of randomly sampled labelled pixels."""
  rgb_f, geo_f, labels = [], [], []
  for ex in examples:
    label, depth = ex["label"].ravel(), ex["depth"]
    fx, fy, cx, cy = ex["intrinsics"]
    idx = rng.choice(np.flatnonzero(label != 255), per_image, replace=False)
    z, v = depth.ravel()[idx], idx // depth.shape[1]
    has = (z > 0).astype(np.float64)
    # Height above the road: camera height minus the camera-frame y of the back-projected point.
    height = np.where(has > 0, synthetic_scene.CAMERA_HEIGHT - (v - cy) * z / fy, 0.0)
    normal = geometry.depth_to_normals(depth, ex["intrinsics"]).reshape(-1, 3)[idx]
    rgb = ex["image"].reshape(-1, 3)[idx] / 255.0
    geo = np.concatenate([np.stack([np.log1p(z), has, height / 10], -1), normal], -1)
    rgb_f.append(rgb)
    geo_f.append(np.concatenate([rgb, geo], -1))
    labels.append(label[idx])
  return np.concatenate(rgb_f), np.concatenate(geo_f), np.concatenate(labels)


def _quadratic(f):
  iu = np.triu_indices(f.shape[1])
  return np.concatenate([np.ones((len(f), 1)), f, (f[:, :, None] * f[:, None, :])[:, iu[0], iu[1]]], 1)


def _linear_probe_accuracy(f_train, y_train, f_test, y_test):
  """Ridge least squares onto one-hot labels with quadratic features; pixel accuracy."""
  a = _quadratic(f_train)
  w = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T @ np.eye(NUM_CLASSES)[y_train])
  return float(np.mean((_quadratic(f_test) @ w).argmax(1) == y_test))


def test_geometry_gives_the_teacher_a_real_advantage(tiny_dir):
  rng = np.random.default_rng(0)
  rgb_tr, geo_tr, y_tr = _probe_features(_load(tiny_dir, "train"), rng)
  rgb_te, geo_te, y_te = _probe_features(_load(tiny_dir, "validation"), rng)
  acc_rgb = _linear_probe_accuracy(rgb_tr, y_tr, rgb_te, y_te)
  acc_geo = _linear_probe_accuracy(geo_tr, y_tr, geo_te, y_te)
  majority = np.bincount(y_te).max() / len(y_te)
  print(f"linear probe pixel accuracy: RGB {acc_rgb:.3f}, RGB+geometry {acc_geo:.3f}, "
        f"majority class {majority:.3f}")
  assert acc_rgb > majority + 0.1, "RGB alone must carry information"
  assert acc_geo > acc_rgb + 0.10, "geometry must add a clear margin"


def test_all_labeled_train_holds_train_then_unlabeled_frames_with_labels(tmp_path, tiny_dir):
  configs = {c.name: c for c in synthetic_driving.SyntheticDriving.BUILDER_CONFIGS}
  default, all_labeled = configs["default"], configs["all_labeled"]
  assert all_labeled.num_unlabeled_as_train == default.num_unlabeled
  assert (all_labeled.num_train, all_labeled.seed) == (default.num_train, default.seed)
  # The same construction on tiny sizes: train = tiny's 32 train + first 5 unlabelled frames.
  cfg = synthetic_driving.SyntheticDrivingConfig(
      name="tiny_all_labeled", num_train=32, num_unlabeled=32, num_validation=16, num_test=16,
      num_unlabeled_as_train=5)
  builder = synthetic_driving.SyntheticDriving(data_dir=str(tmp_path), config=cfg,
                                               file_format="array_record")
  builder.download_and_prepare()
  train = builder.as_data_source(split="train")
  assert len(train) == 37
  plain_train, unlabeled = _source(tiny_dir, "train"), _source(tiny_dir, "unlabeled")
  by_id = {train[i]["id"]: train[i] for i in range(len(train))}
  expected = [plain_train[i] for i in range(32)] + [unlabeled[i] for i in range(5)]
  assert sorted(by_id) == sorted(ex["id"] for ex in expected)
  for ex in expected:
    got = by_id[ex["id"]]
    for key in ("image", "depth", "label"):
      np.testing.assert_array_equal(got[key], ex[key], err_msg=f"{ex['id']} {key}")
