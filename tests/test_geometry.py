"""Tests of lix_jax.data.geometry against analytic planes and the textbook formulas."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lix_jax.data import geometry

# (H, W, [fx, fy, cx, cy]): KITTI-like at 64x192, non-square pixels with an off-centre principal
# point, and a short focal length (wide angle).
INTRINSICS = [
    (64, 192, [111.5, 111.5, 95.5, 31.5]),
    (48, 80, [150.0, 120.0, 35.0, 27.0]),
    (40, 64, [40.0, 42.0, 31.5, 19.5]),
]
# Planes n . (P - P0) = 0 with n the unit normal toward the camera (camera coords, y down):
# the ground 1.65 m below the camera, a wall at an angle, a fronto-parallel plane.
PLANES = {
    "ground": ([0.0, -1.0, 0.0], [0.0, 1.65, 0.0]),
    "tilted_wall": ([-0.6, 0.1, -0.8], [2.0, 0.0, 10.0]),
    "fronto_parallel": ([0.0, 0.0, -1.0], [0.0, 0.0, 7.0]),
}


def _rays(h, w, k):
  fx, fy, cx, cy = k
  u = np.arange(w)[None, :]
  v = np.arange(h)[:, None]
  return np.stack(np.broadcast_arrays((u - cx) / fx, (v - cy) / fy, np.ones((h, w))), -1)


def _plane_depth(h, w, k, normal, point, max_depth=300.0):
  """Z of the plane along each pixel's ray (z = 1 rays): Z = n.P0 / n.r; 0 where not in front."""
  n = np.asarray(normal, np.float64) / np.linalg.norm(normal)
  r = _rays(h, w, k)
  denom = r @ n
  with np.errstate(divide="ignore", invalid="ignore"):
    z = np.where(np.abs(denom) > 1e-9, (n @ np.asarray(point)) / denom, 0.0)
  return np.where((z > 0) & (z < max_depth), z, 0.0), n


def _neighbourhood_valid(valid):
  """True where the pixel and its 8 neighbours are valid and it is not on the image border."""
  p = np.pad(valid, 1)
  h, w = valid.shape
  out = np.ones_like(valid)
  for dv in range(3):
    for du in range(3):
      out &= p[dv:dv + h, du:du + w]
  out[0, :] = out[-1, :] = out[:, 0] = out[:, -1] = False
  return out


def _angle_deg(a, b):
  cos = np.clip(np.sum(a * b, -1), -1.0, 1.0)
  return np.degrees(np.arccos(cos))


@pytest.mark.parametrize("h,w,k", INTRINSICS)
@pytest.mark.parametrize("plane", sorted(PLANES))
def test_normals_of_analytic_planes(h, w, k, plane):
  depth, n_true = _plane_depth(h, w, k, *PLANES[plane])
  rng = np.random.default_rng(0)
  depth = np.where(rng.random(depth.shape) < 0.03, 0.0, depth).astype(np.float32)  # holes
  normals = geometry.depth_to_normals(depth, np.asarray(k, np.float32))
  assert normals.shape == (h, w, 3) and normals.dtype == np.float32
  inner = _neighbourhood_valid(depth > 0)
  assert inner.sum() > 0.2 * h * w
  err = _angle_deg(normals[inner].astype(np.float64), n_true)
  assert err.max() < 1.0, f"max angular error {err.max():.3f} deg"
  # Zero exactly where depth is missing; unit length and facing the camera everywhere else.
  assert np.all(normals[depth == 0] == 0)
  nonzero = np.any(normals != 0, -1)
  np.testing.assert_allclose(np.linalg.norm(normals[nonzero], axis=-1), 1.0, atol=1e-5)
  assert np.all(np.sum(normals * _rays(h, w, k), -1)[nonzero] < 0)


def test_normals_are_robust_at_depth_edges():
  """A tilted near plane in front of a far wall: both sides of the edge keep their own normal."""
  h, w, k = 48, 80, [150.0, 120.0, 35.0, 27.0]
  far, n_far = _plane_depth(h, w, k, *PLANES["tilted_wall"])
  near, n_near = _plane_depth(h, w, k, [0.3, 0.0, -1.0], [0.0, 0.0, 4.0])
  box = np.zeros((h, w), bool)
  box[10:30, 20:50] = True
  depth = np.where(box, near, far).astype(np.float32)
  normals = geometry.depth_to_normals(depth, np.asarray(k, np.float32))
  inner = _neighbourhood_valid(depth > 0)
  truth = np.where(box[..., None], n_near, n_far)
  err = _angle_deg(normals[inner].astype(np.float64), truth[inner])
  assert err.max() < 1.0, f"max angular error {err.max():.3f} deg at a depth edge"


def test_numpy_and_jitted_jax_agree_with_batch_dims():
  """The jnp path (jitted, batched) equals the NumPy path image by image."""
  shapes = [INTRINSICS[1], (48, 80, [100.0, 110.0, 40.0, 20.0])]
  depths, ks = [], []
  for i, (h, w, k) in enumerate(shapes):
    d, _ = _plane_depth(h, w, k, *PLANES[["tilted_wall", "ground"][i]])
    depths.append(d.astype(np.float32))
    ks.append(np.asarray(k, np.float32))
  depth, k = np.stack(depths), np.stack(ks)
  baseline = np.array([0.54, 0.3], np.float32)
  fn = jax.jit(lambda d, k, b: (geometry.depth_to_normals(d, k), geometry.depth_to_disparity(d, k, b)))
  normals_j, disp_j = fn(jnp.asarray(depth), jnp.asarray(k), jnp.asarray(baseline))
  for i in range(2):
    np.testing.assert_allclose(np.asarray(normals_j[i]), geometry.depth_to_normals(depth[i], k[i]),
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(disp_j[i]),
                               geometry.depth_to_disparity(depth[i], k[i], baseline[i]), rtol=1e-6)


def test_disparity_formula():
  rng = np.random.default_rng(1)
  depth = rng.uniform(0.5, 80.0, (2, 8, 12)).astype(np.float32)
  depth[rng.random(depth.shape) < 0.2] = 0.0
  k = np.array([[720.0, 720.0, 6.0, 4.0], [100.0, 90.0, 5.5, 3.5]], np.float32)
  baseline = np.array([0.54, 0.2], np.float32)
  disp = geometry.depth_to_disparity(depth, k, baseline)
  for i in range(2):
    expected = np.zeros_like(depth[i])
    ok = depth[i] > 0
    expected[ok] = k[i, 0] * baseline[i] / depth[i][ok]
    np.testing.assert_allclose(disp[i], expected, rtol=1e-6)
  assert disp.dtype == np.float32 and np.all(disp[depth == 0] == 0)


def test_make_x_and_normalize_x():
  h, w, k = INTRINSICS[0]
  depth, _ = _plane_depth(h, w, k, *PLANES["ground"])
  depth = depth.astype(np.float32)
  ex = {"depth": depth, "intrinsics": np.asarray(k, np.float32), "baseline": np.float32(0.54)}
  x_depth = geometry.make_x(ex, "depth")
  x_disp = geometry.make_x(ex, "disparity")
  x_norm = geometry.make_x(ex, "normal")
  assert x_depth.shape == (h, w, 1) and x_disp.shape == (h, w, 1) and x_norm.shape == (h, w, 3)
  np.testing.assert_allclose(x_depth[..., 0], np.log1p(depth) / np.log1p(geometry.DEPTH_SCALE),
                             rtol=1e-6)
  assert np.all(x_depth[depth == 0] == 0)
  expected_disp = np.where(depth > 0, k[0] * 0.54 / np.where(depth > 0, depth, 1), 0)
  expected_disp /= geometry.DISPARITY_SCALE
  np.testing.assert_allclose(x_disp[..., 0], expected_disp, rtol=1e-5)
  np.testing.assert_array_equal(x_norm, geometry.depth_to_normals(depth, ex["intrinsics"]))
  raw = geometry.make_x(ex, "depth", normalize=False)
  np.testing.assert_array_equal(raw[..., 0], depth)
  with pytest.raises(KeyError, match="depth.*disparity.*normal"):
    geometry.make_x(ex, "lidar")
  with pytest.raises(KeyError, match="baseline"):
    geometry.make_x({"depth": depth, "intrinsics": ex["intrinsics"]}, "disparity")
  with pytest.raises(KeyError, match="Valid modalities"):
    geometry.normalize_x(raw, "hha")
