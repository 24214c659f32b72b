"""Geometry of the X modality: depth -> disparity, depth -> normals, X normalisation (DESIGN §5).

Conventions (used by every builder and by the synthetic renderer):
  * pixel (v, u) = (row, column) array indices; intrinsics `[fx, fy, cx, cy]` in the same pixel units,
    so a pixel's camera ray is `((u - cx) / fx, (v - cy) / fy, 1)`;
  * camera coordinates: x right, y down, z forward; `depth` is the z coordinate in metres, 0 = missing.

Every function takes NumPy arrays (and then computes in NumPy) or JAX arrays / tracers (and then
computes with `jax.numpy`, so it can be jitted); optional leading batch dimensions are allowed:
`depth` `[..., H, W]` with `intrinsics` `[..., 4]` and `baseline` `[...]`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Number of channels of X for each modality (Cx in DESIGN §1).
MODALITIES = {"depth": 1, "disparity": 1, "normal": 3}
# depth -> log1p(Z) / log1p(DEPTH_SCALE): about [0, 1] over the range of a driving depth sensor.
DEPTH_SCALE = 80.0
# disparity (pixels) -> d / DISPARITY_SCALE.
DISPARITY_SCALE = 32.0


def _xp(*arrays):
  """jax.numpy if any input is a JAX array or tracer, else NumPy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _intrinsic(xp, intrinsics, i):
  """Component i of `[..., 4]` intrinsics, shaped `[..., 1, 1]` to broadcast against `[..., H, W]`."""
  return xp.asarray(intrinsics, dtype=xp.float32)[..., i, None, None]


def depth_to_disparity(depth, intrinsics, baseline):
  """Stereo disparity in pixels, `fx * baseline / depth`, 0 where depth is 0.

  Args:
    depth: `[..., H, W]` metres, 0 = missing.
    intrinsics: `[..., 4]` (fx, fy, cx, cy).
    baseline: `[...]` metres.

  Returns:
    `[..., H, W]` float32 disparity.
  """
  xp = _xp(depth, intrinsics, baseline)
  depth = xp.asarray(depth, dtype=xp.float32)
  fx = _intrinsic(xp, intrinsics, 0)
  b = xp.asarray(baseline, dtype=xp.float32)[..., None, None]
  valid = depth > 0
  return xp.where(valid, fx * b / xp.where(valid, depth, 1.0), 0.0).astype(xp.float32)


def _pad_axis(xp, x, axis):
  """Zero-pads one pixel on both sides of `axis` (negative, -1 or -2)."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  return xp.pad(x, pad)


def _inverse_depth_gradient(xp, g, valid, axis, smooth_tol):
  """Derivative of inverse depth `g` along `axis`, robust at depth edges and next to holes.

  The central difference is used where both neighbours are valid and agree (|forward - backward|
  <= smooth_tol * g: on a plane 1/Z is linear in (u, v), so they agree exactly); at a depth edge the
  one-sided difference of smaller magnitude (the neighbour on the same surface); next to a hole or
  the border the one valid side. Returns (derivative, ok).
  """
  gp, vp = _pad_axis(xp, g, axis), _pad_axis(xp, valid, axis)
  n = g.shape[axis]
  take = lambda x, start: xp.take(x, xp.arange(start, start + n), axis=axis)
  g_prev, g_next = take(gp, 0), take(gp, 2)
  v_prev, v_next = take(vp, 0), take(vp, 2)
  fwd, bwd = g_next - g, g - g_prev
  both = v_prev & v_next
  smooth = xp.abs(fwd - bwd) <= smooth_tol * g
  one_sided = xp.where(xp.abs(fwd) <= xp.abs(bwd), fwd, bwd)
  d = xp.where(both, xp.where(smooth, 0.5 * (fwd + bwd), one_sided),
               xp.where(v_next, fwd, bwd))
  return d, valid & (v_prev | v_next)


def depth_to_normals(depth, intrinsics, *, smooth_tol: float = 0.05):
  """Unit surface normals from depth: an SNE / three-filters-to-normal estimator (Fan et al. 2020).

  Inverse depth g = 1/Z of a plane n'.P = 1 is linear in the pixel: g = n'x (u - cx)/fx +
  n'y (v - cy)/fy + n'z. So, as in SNE, n'x = fx dg/du and n'y = fy dg/dv come from image
  gradients of inverse depth (see `_inverse_depth_gradient` for the robust choice of difference),
  and n'z follows from the same identity at the pixel itself, n'z = g - n'x (u - cx)/fx -
  n'y (v - cy)/fy (SNE averages this over neighbours; on a plane both are exact, and the local
  form needs no extra neighbour pass). Because n'.P = 1 > 0 for the pixel's own point, the normal
  oriented toward the camera is n = -n'/|n'|, and n . ray = -g/|n'| < 0 holds by construction.

  Args:
    depth: `[..., H, W]` metres, 0 = missing.
    intrinsics: `[..., 4]` (fx, fy, cx, cy).
    smooth_tol: relative inverse-depth change above which neighbours count as a depth edge.

  Returns:
    `[..., H, W, 3]` float32 unit normals in camera coordinates (x right, y down, z forward),
    0 where the depth or both neighbours along a direction are missing.
  """
  xp = _xp(depth, intrinsics)
  depth = xp.asarray(depth, dtype=xp.float32)
  if depth.ndim < 2:
    raise ValueError(f"depth must be [..., H, W], got shape {depth.shape}")
  fx, fy, cx, cy = (_intrinsic(xp, intrinsics, i) for i in range(4))
  valid = depth > 0
  g = xp.where(valid, 1.0 / xp.where(valid, depth, 1.0), 0.0)
  du, ok_u = _inverse_depth_gradient(xp, g, valid, -1, smooth_tol)
  dv, ok_v = _inverse_depth_gradient(xp, g, valid, -2, smooth_tol)
  h, w = depth.shape[-2:]
  u = xp.arange(w, dtype=xp.float32)
  v = xp.arange(h, dtype=xp.float32)[:, None]
  nx = fx * du
  ny = fy * dv
  nz = g - du * (u - cx) - dv * (v - cy)
  norm = xp.sqrt(nx * nx + ny * ny + nz * nz)
  ok = ok_u & ok_v & (norm > 0)
  scale = xp.where(ok, -1.0 / xp.where(ok, norm, 1.0), 0.0)
  return xp.stack([nx * scale, ny * scale, nz * scale], axis=-1).astype(xp.float32)


def normalize_x(x, modality: str):
  """Per-modality scaling of a raw X map `[..., H, W, Cx]` for the network input.

  depth: log1p(Z) / log1p(DEPTH_SCALE) (0 stays 0, near range well resolved); disparity:
  d / DISPARITY_SCALE (0 stays 0); normal: unchanged (already unit vectors, 0 = invalid). No
  validity channel is added: 0 marks missing values in every modality.
  """
  _check_modality(modality)
  xp = _xp(x)
  x = xp.asarray(x, dtype=xp.float32)
  if modality == "depth":
    return (xp.log1p(xp.maximum(x, 0.0)) / np.log1p(DEPTH_SCALE)).astype(xp.float32)
  if modality == "disparity":
    return x / DISPARITY_SCALE
  return x


def make_x(example: Mapping[str, Any], modality: str, *, normalize: bool = True):
  """The X input of the teacher, `[..., H, W, Cx]` float32, from an example's depth.

  Args:
    example: a mapping with `depth` `[..., H, W]` and `intrinsics` `[..., 4]` (and `baseline` for
      disparity), e.g. an item of `lix_jax.data.get_source(...)`.
    modality: "depth" (Cx=1), "disparity" (Cx=1) or "normal" (Cx=3).
    normalize: apply `normalize_x`.

  Returns:
    `[..., H, W, Cx]` float32.
  """
  _check_modality(modality)
  needed = ("depth", "intrinsics", "baseline") if modality == "disparity" else ("depth", "intrinsics")
  missing = [k for k in needed if k not in example]
  if missing:
    raise KeyError(f"make_x({modality!r}) needs fields {missing}; the example has {sorted(example)}")
  depth = example["depth"]
  xp = _xp(depth)
  if modality == "depth":
    x = xp.asarray(depth, dtype=xp.float32)[..., None]
  elif modality == "disparity":
    x = depth_to_disparity(depth, example["intrinsics"], example["baseline"])[..., None]
  else:
    x = depth_to_normals(depth, example["intrinsics"])
  return normalize_x(x, modality) if normalize else x


def _check_modality(modality: str) -> None:
  if modality not in MODALITIES:
    raise KeyError(f"Unknown X modality {modality!r}. Valid modalities are: {sorted(MODALITIES)}")
