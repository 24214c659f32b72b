"""Vectorised NumPy ray caster, shader and sensor model for `synthetic_driving` (no TFDS).

One ray per pixel, all pixels of a primitive's screen rectangle at once: the stepped ground is
intersected over the whole image, then each box / vertical cylinder only over the pixels of its
projected bounding rectangle (a z-buffer keeps the nearest hit). Colours: per-object albedo times a
world-anchored procedural texture, Lambertian sun + sky-dependent ambient light, distance fog, sensor
noise. Depth: the hit's camera z with range-dependent relative noise, 1/256 m quantisation (the KITTI
depth PNG step), random dropouts, glass dropouts, small blob holes, and 0 beyond MAX_DEPTH and in the
sky. Labels: the hit object's class, SKY where nothing is hit, 255 beyond MAX_LABEL_RANGE.
"""
from __future__ import annotations

import functools

import numpy as np

from lix_jax import IGNORE_INDEX as IGNORE
from lix_jax.data.builders import synthetic_scene as scene

MAX_DEPTH = 80.0  # the depth sensor's range (m); farther surfaces have depth 0
MAX_LABEL_RANGE = 100.0  # surfaces farther than this (m) are labelled 255 (ignore)
_NEAR = 0.05
# Face codes -> outward normals; code 6 = cylinder side (radial normal).
_FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1],
                          [0, 0, 0]], np.float32)
_CYL_SIDE = 6
_CORNER_BITS = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)], bool)  # [8, 3]


@functools.lru_cache(maxsize=1)
def _noise_texture(size: int = 256) -> np.ndarray:
  """A periodic 1/f noise tile, unit std, float32 [size, size] (fixed seed: part of the dataset)."""
  rng = np.random.default_rng(20240311)
  f = np.fft.fftfreq(size)
  radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
  spectrum = np.fft.fft2(rng.normal(size=(size, size))) / np.maximum(radius, 1.0 / size) ** 1.2
  tile = np.real(np.fft.ifft2(spectrum))
  return ((tile - tile.mean()) / tile.std()).astype(np.float32)


class _Caster:
  """Z-buffered ray casting of one layout for one camera."""

  def __init__(self, layout: scene.Layout, height: int, width: int):
    self.h, self.w = height, width
    self.k = scene.camera_intrinsics(height, width)
    fx, fy, cx, cy = (float(c) for c in self.k)
    cy_, sy = np.cos(layout.yaw), np.sin(layout.yaw)
    cp, sp = np.cos(layout.pitch), np.sin(layout.pitch)
    flip = np.diag([1.0, -1.0, 1.0])  # camera y down -> world Y up
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    yaw = np.array([[cy_, 0, sy], [0, 1, 0], [-sy, 0, cy_]])
    self.rot = (yaw @ pitch @ flip).astype(np.float32)  # camera -> world
    self.origin = np.array([0.0, scene.CAMERA_HEIGHT, 0.0], np.float32)
    x = ((np.arange(width, dtype=np.float32) - cx) / fx)[None, :]
    y = ((np.arange(height, dtype=np.float32) - cy) / fy)[:, None]
    r = self.rot
    # World direction of each pixel's ray, scaled so that t along it is the camera z (the depth).
    self.d = [(r[i, 0] * x + r[i, 1] * y + r[i, 2]).astype(np.float32) for i in range(3)]
    self.inv = [1.0 / np.where(np.abs(di) < 1e-9, 1e-9, di) for di in self.d]
    self.fxy = (fx, fy, cx, cy)
    self.t = np.full((height, width), np.inf, np.float32)
    self.obj = np.full((height, width), -1, np.int16)
    self.face = np.zeros((height, width), np.int8)

  def _update(self, sl, t, obj, face):
    zb = self.t[sl]
    closer = t < zb
    zb[closer] = t[closer]
    self.obj[sl][closer] = obj
    self.face[sl][closer] = face if np.isscalar(face) else face[closer]

  def ground(self, layout: scene.Layout):
    """Road at Y=0, sidewalks/terrain at Y=curb outside it, and the two curb faces."""
    (dx, dy, _), (ix, iy, _) = self.d, self.inv
    ox, oy, _ = self.origin
    (xl, xr), curb = layout.road, layout.curb
    down = dy < 0
    full = (slice(None), slice(None))
    t = -oy * iy
    x = ox + t * dx
    self._update(full, np.where(down & (x >= xl) & (x <= xr), t, np.inf), scene.G_ROAD, 2)
    t = (curb - oy) * iy
    x = ox + t * dx
    dist = np.where(x < xl, xl - x, x - xr)  # distance from the curb on the hit side
    right = x > xr
    obj = np.where(dist <= np.where(right, layout.sidewalk[1], layout.sidewalk[0]),
                   np.where(right, scene.G_SIDEWALK_R, scene.G_SIDEWALK_L),
                   np.where(right, scene.G_TERRAIN_R, scene.G_TERRAIN_L)).astype(np.int16)
    t_top = np.where(down & ((x < xl) | (x > xr)), t, np.inf)
    closer = t_top < self.t
    self.t[closer], self.obj[closer], self.face[closer] = t_top[closer], obj[closer], 2
    for xc, obj_id, face in ((xl, scene.G_SIDEWALK_L, 0), (xr, scene.G_SIDEWALK_R, 1)):
      t = (xc - ox) * ix
      y = oy + t * dy
      self._update(full, np.where((t > 0) & (y >= 0) & (y <= curb), t, np.inf), obj_id, face)

  def windows(self, lo: np.ndarray, hi: np.ndarray) -> tuple[list, np.ndarray]:
    """Screen rectangles of the world boxes [lo, hi] `[N, 3]`, and their nearest camera z `[N]`.

    Rectangles are slice pairs, None when the box is out of view. A box reaching behind the camera
    gets the whole image (projecting its corners would be meaningless).
    """
    corners = np.where(_CORNER_BITS[None], hi[:, None], lo[:, None])  # [N, 8, 3]
    cam = (corners - self.origin) @ self.rot  # world -> camera (rot is orthonormal)
    z = cam[..., 2]
    fx, fy, cx, cy = self.fxy
    zc = np.maximum(z, _NEAR)
    u, v = fx * cam[..., 0] / zc + cx, fy * cam[..., 1] / zc + cy
    u0 = np.clip(np.floor(u.min(1)), 0, self.w).astype(int).tolist()
    u1 = np.clip(np.ceil(u.max(1)) + 1, 0, self.w).astype(int).tolist()
    v0 = np.clip(np.floor(v.min(1)), 0, self.h).astype(int).tolist()
    v1 = np.clip(np.ceil(v.max(1)) + 1, 0, self.h).astype(int).tolist()
    behind, straddle = (z.max(1) < _NEAR).tolist(), (z.min(1) < _NEAR).tolist()
    out = []
    for i in range(len(lo)):
      if behind[i]:
        out.append(None)
      elif straddle[i]:
        out.append((slice(None), slice(None)))
      elif u0[i] >= u1[i] or v0[i] >= v1[i]:
        out.append(None)
      else:
        out.append((slice(v0[i], v1[i]), slice(u0[i], u1[i])))
    return out, z.min(1)

  def cast_all(self, lo, hi, params, first_id: int, cast) -> None:
    """Casts primitives front to back, skipping those hidden behind what is already drawn.

    The z-buffer result does not depend on the order; front to back only makes the occlusion test
    (a primitive's nearest z is beyond every depth already in its rectangle) skip more of them.
    """
    windows, z_near = self.windows(lo, hi)
    z_near = z_near.tolist()
    for i in np.argsort(z_near, kind="stable").tolist():
      sl = windows[i]
      if sl is not None and z_near[i] < self.t[sl].max():
        cast(params[i], first_id + i, sl)

  def box(self, b, obj_id: int, sl):
    """Slab-method intersection with the axis-aligned box b = (x0, y0, z0, x1, y1, z1) in window sl."""
    near, far, codes = [], [], []
    for a, o in enumerate(self.origin.tolist()):
      inv = self.inv[a][sl]
      t0, t1 = (b[a] - o) * inv, (b[a + 3] - o) * inv
      near.append(np.minimum(t0, t1))
      far.append(np.maximum(t0, t1))
      codes.append(2 * a + 1 if o < b[a] else 2 * a)  # the face seen from the camera's side
    t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
    face = np.where(near[0] >= np.maximum(near[1], near[2]), codes[0],
                    np.where(near[1] >= near[2], codes[1], codes[2])).astype(np.int8)
    self._update(sl, t, obj_id, face)

  def cylinder(self, c, obj_id: int, sl):
    """Vertical cylinder c = (cx, cz, r, y0, y1), side and the cap facing the camera, in window sl."""
    cx, cz, r, y0, y1 = c
    dx, dy, dz = (d[sl] for d in self.d)
    ox, oy, oz = self.origin.tolist()
    px, pz = ox - cx, oz - cz
    a = dx * dx + dz * dz
    half_b = px * dx + pz * dz
    disc = half_b * half_b - a * (px * px + pz * pz - r * r)
    t = (-half_b - np.sqrt(np.maximum(disc, 0))) / a
    y = oy + t * dy
    t = np.where((disc >= 0) & (t > 0) & (y >= y0) & (y <= y1), t, np.inf)
    face = np.full(t.shape, _CYL_SIDE, np.int8)
    if oy > y1 or oy < y0:  # the top (seen from above) or bottom (from below) cap
      yc = y1 if oy > y1 else y0
      tc = (yc - oy) * self.inv[1][sl]
      qx, qz = px + tc * dx, pz + tc * dz
      cap = (tc > 0) & (qx * qx + qz * qz <= r * r) & (tc < t)
      t = np.where(cap, tc, t)
      face[cap] = 2 if oy > y1 else 3
    self._update(sl, t, obj_id, face)


def render(layout: scene.Layout, height: int, width: int, rng: np.random.Generator,
           extras: bool = False) -> dict:
  """Ray-casts, shades and 'senses' a layout.

  Returns:
    dict with `image` uint8 [H, W, 3], `depth` float32 [H, W] (noisy, holes = 0), `label` uint8
    [H, W], `intrinsics` float32 [4], and if `extras`, the ground truth `depth_clean` float32
    [H, W] (exact camera z, inf in the sky) and `normal` float32 [H, W, 3] (exact, camera frame,
    0 in the sky).
  """
  caster = _Caster(layout, height, width)
  caster.ground(layout)
  n_boxes = len(layout.boxes)
  boxes, cyls = layout.boxes, layout.cylinders
  caster.cast_all(boxes[:, :3], boxes[:, 3:], boxes.tolist(), 5, caster.box)
  cyl_lo = np.stack([cyls[:, 0] - cyls[:, 2], cyls[:, 3], cyls[:, 1] - cyls[:, 2]], -1)
  cyl_hi = np.stack([cyls[:, 0] + cyls[:, 2], cyls[:, 4], cyls[:, 1] + cyls[:, 2]], -1)
  caster.cast_all(cyl_lo, cyl_hi, cyls.tolist(), 5 + n_boxes, caster.cylinder)
  t, obj, face = caster.t, caster.obj, caster.face
  hit = obj >= 0
  obj_c = np.where(hit, obj, 0)
  t_c = np.where(hit, t, 0.0).astype(np.float32)
  p = [o + t_c * d for o, d in zip(caster.origin, caster.d)]

  # Normals (world frame): face table, radial for cylinder sides.
  n = [_FACE_NORMALS[face, a] for a in range(3)]
  side = face == _CYL_SIDE
  if side.any():
    cyl = np.zeros((len(layout.obj_class), 3), np.float32)  # cx, cz, r per object
    cyl[5 + n_boxes:] = layout.cylinders[:, :3]
    ci = obj_c[side]
    n[0][side] = (p[0][side] - cyl[ci, 0]) / cyl[ci, 2]
    n[2][side] = (p[2][side] - cyl[ci, 1]) / cyl[ci, 2]

  # Texture: two octaves of the noise tile, in the surface's own plane (world metres).
  upward = np.abs(n[1]) > 0.5
  s = np.where(upward | (np.abs(n[0]) < np.abs(n[2])), p[0], p[2])
  q = np.where(upward, p[2], p[1])
  texel, off = layout.obj_texel[obj_c], layout.obj_offset[obj_c]
  tile = _noise_texture()
  fine = tile[(s * texel + off[..., 0]).astype(np.int32) & 255,
              (q * texel + off[..., 1]).astype(np.int32) & 255]
  coarse = tile[(q * texel * 0.15 + off[..., 0]).astype(np.int32) & 255,
                (s * texel * 0.15 + off[..., 1]).astype(np.int32) & 255]
  tex = 1.0 + layout.obj_contrast[obj_c] * (0.7 * fine + 0.6 * coarse)

  # Lambertian sun + ambient light that is stronger on surfaces facing the sky, then fog; the sky
  # is a horizon -> zenith gradient. colour = A[obj] * a + horizon * f + (zenith - horizon) * e.
  sun = layout.sun
  lambert = np.maximum(n[0] * sun[0] + n[1] * sun[1] + n[2] * sun[2], 0.0)
  light = layout.ambient * (0.8 + 0.2 * n[1]) + (1.0 - layout.ambient) * lambert
  ray_len = np.sqrt(caster.d[0] ** 2 + caster.d[1] ** 2 + caster.d[2] ** 2)
  fog = np.where(hit, 1.0 - np.exp(-t_c * ray_len / layout.fog_distance), 1.0)
  a = np.where(hit, np.maximum(tex, 0.1) * light * (1.0 - fog), 0.0)
  e = np.where(hit, 0.0, np.clip(caster.d[1] / ray_len, 0, 1) ** 0.7)
  albedo = (layout.obj_albedo * layout.sun_rgb).astype(np.float32)
  colour = (albedo[obj_c] * a[..., None] + layout.sky_horizon * fog[..., None]
            + (layout.sky_zenith - layout.sky_horizon) * e[..., None])
  colour += layout.image_noise * rng.standard_normal(colour.shape, dtype=np.float32)
  image = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)

  # Labels.
  label = np.where(hit, layout.obj_class[obj_c], scene.SKY)
  label = np.where(hit & (t > MAX_LABEL_RANGE), IGNORE, label).astype(np.uint8)

  # Depth sensor: noise growing with range, 1/256 m steps, dropouts and holes.
  z = np.where(hit & (t <= MAX_DEPTH), t_c, 0.0)
  a, b = layout.depth_noise
  z = z * (1.0 + (a + b * z) * rng.standard_normal(z.shape, dtype=np.float32))
  z = np.round(z * 256.0) / 256.0
  drop = rng.random(z.shape, dtype=np.float32) < layout.dropout_rate + layout.obj_dropout[obj_c]
  for _ in range(rng.integers(0, 4)):  # a few elliptic blobs (textureless / specular patches)
    v0, u0 = rng.uniform(0, height), rng.uniform(0, width)
    rv, ru = rng.uniform(1, 0.06 * height), rng.uniform(1, 0.06 * width)
    vs = slice(max(int(v0 - rv), 0), min(int(v0 + rv) + 1, height))
    us = slice(max(int(u0 - ru), 0), min(int(u0 + ru) + 1, width))
    vv, uu = np.ogrid[vs, us]
    drop[vs, us] |= ((vv - v0) / rv) ** 2 + ((uu - u0) / ru) ** 2 <= 1
  depth = np.where(drop, 0.0, np.maximum(z, 0.0)).astype(np.float32)

  out = {"image": image, "depth": depth, "label": label, "intrinsics": caster.k}
  if extras:
    normal_cam = np.stack(n, -1) @ caster.rot  # world -> camera: n_cam = R^T n_world
    out["depth_clean"] = np.where(hit, t, np.inf).astype(np.float32)
    out["normal"] = np.where(hit[..., None], normal_cam, 0.0).astype(np.float32)
  return out


def generate_example(seed: int, split_id: int, index: int, height: int, width: int,
                     extras: bool = False) -> dict:
  """The example `index` of split `split_id`: a pure function of its arguments (see `render`)."""
  rng = np.random.default_rng([seed, split_id, index])
  layout = scene.sample_layout(rng)
  out = render(layout, height, width, rng, extras)
  out["baseline"] = np.float32(scene.BASELINE)
  return out
