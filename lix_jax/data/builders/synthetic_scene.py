"""Random street-scene layouts for `synthetic_driving` (pure NumPy, no TFDS).

World frame: X right, Y up, Z forward (the street runs along +Z), ground (road) at Y = 0, the camera
above the origin at Y = CAMERA_HEIGHT. A layout is a list of primitives (axis-aligned boxes and
vertical cylinders) on top of a stepped ground profile (road at Y = 0 between `road[0]` and
`road[1]`, raised sidewalks of height `curb` beside it, terrain at the same height beyond), plus
per-object materials and the lighting; `synthetic_render.render` ray-casts it.

Materials come in families drawn once per scene, and every object of the paired classes draws its
albedo and texture from the same family, so colour alone cannot tell road from sidewalk, terrain
from vegetation or wall from building; their geometry (height, orientation, distance) does.
Walls stand perpendicular to the street (they face the camera) and building facades run parallel to
it — at 64 px image height this orientation difference is the main cue separating them (DESIGN §5).
"""
from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

# Train ids of synthetic_driving (255 = ignore: surfaces beyond MAX_LABEL_RANGE).
CLASS_NAMES = ("road", "sidewalk", "terrain", "building", "wall", "vegetation", "pole", "car",
               "person", "sky")
(ROAD, SIDEWALK, TERRAIN, BUILDING, WALL, VEGETATION, POLE, CAR, PERSON, SKY) = range(len(CLASS_NAMES))

CAMERA_HEIGHT = 1.65  # metres, as KITTI's
BASELINE = 0.54  # metres, as KITTI's stereo rig
KITTI_FX, KITTI_WIDTH = 721.5377, 1242  # KITTI focal length (pixels) at its image width

# Ground object indices (the first five objects of every layout).
G_ROAD, G_SIDEWALK_L, G_SIDEWALK_R, G_TERRAIN_L, G_TERRAIN_R = range(5)


def camera_intrinsics(height: int, width: int) -> np.ndarray:
  """KITTI's focal length scaled to the image width, square pixels, principal point at the centre.

  Returns float32 `[fx, fy, cx, cy]`; the centre is `(W - 1) / 2, (H - 1) / 2` in the
  pixel-index convention of `lix_jax.data.geometry`.
  """
  f = KITTI_FX * width / KITTI_WIDTH
  return np.array([f, f, (width - 1) / 2, (height - 1) / 2], np.float32)


@dataclasses.dataclass
class Layout:
  """A scene: camera, lighting, ground profile, primitives and per-object materials.

  Objects are numbered: 0-4 the ground parts (G_*), then the boxes, then the cylinders; every
  `obj_*` array has one row per object.
  """
  yaw: float  # radians, about +Y
  pitch: float  # radians, positive looks down
  sun: np.ndarray  # [3] unit vector toward the sun (world frame)
  sun_rgb: np.ndarray  # [3]
  ambient: float
  sky_zenith: np.ndarray  # [3]
  sky_horizon: np.ndarray  # [3]
  fog_distance: float  # metres
  road: tuple[float, float]  # X of the left and right curbs
  curb: float  # sidewalk / terrain height (m)
  sidewalk: tuple[float, float]  # sidewalk widths, left and right
  boxes: np.ndarray  # [Nb, 6] x0, y0, z0, x1, y1, z1
  cylinders: np.ndarray  # [Nc, 5] cx, cz, r, y0, y1
  obj_class: np.ndarray  # [K] int
  obj_albedo: np.ndarray  # [K, 3]
  obj_contrast: np.ndarray  # [K] texture contrast
  obj_texel: np.ndarray  # [K] texture cells per metre
  obj_offset: np.ndarray  # [K, 2] texture offsets
  obj_dropout: np.ndarray  # [K] extra depth-dropout probability (glass, dark paint)
  depth_noise: tuple[float, float]  # relative depth noise sigma = a + b * Z
  dropout_rate: float  # per-pixel depth dropout probability
  image_noise: float  # sensor noise sigma on [0, 1] colours


class _Family:
  """A per-scene material family: every object drawn from it shares colour/texture statistics."""

  def __init__(self, rng: np.random.Generator, mean: np.ndarray, spread: float,
               contrast: float, texel: float):
    self.rng, self.mean, self.spread = rng, np.asarray(mean, np.float64), spread
    self.contrast, self.texel = contrast, texel

  def draw(self):
    """(albedo [3], contrast, texel) of one object."""
    rng = self.rng
    albedo = self.mean * np.exp(rng.normal(0.0, self.spread) + rng.normal(0.0, self.spread / 3, 3))
    return (np.clip(albedo, 0.02, 0.95), self.contrast * np.exp(rng.normal(0.0, 0.2)),
            self.texel * np.exp(rng.normal(0.0, 0.2)))


def _families(rng: np.random.Generator) -> dict[str, _Family]:
  """Material families of one scene: paved (road, sidewalk), green (terrain, vegetation), plaster."""
  grey = rng.uniform(0.22, 0.55)
  paved = grey * np.array([1.0 + rng.normal(0, 0.04), 1.0, 1.0 + rng.normal(0, 0.05)])
  t = rng.uniform()  # lush green ... dry brown-green
  green = rng.uniform(0.7, 1.2) * ((1 - t) * np.array([0.22, 0.38, 0.14])
                                   + t * np.array([0.42, 0.40, 0.22]))
  palette = np.array([[0.62, 0.56, 0.46], [0.52, 0.52, 0.52], [0.56, 0.32, 0.26],
                      [0.75, 0.73, 0.69], [0.45, 0.40, 0.36]])
  plaster = rng.dirichlet(np.full(len(palette), 0.4)) @ palette
  return {
      "paved": _Family(rng, paved, 0.12, rng.uniform(0.08, 0.2), rng.uniform(4, 10)),
      "green": _Family(rng, green, 0.12, rng.uniform(0.2, 0.4), rng.uniform(3, 8)),
      "plaster": _Family(rng, plaster, 0.15, rng.uniform(0.06, 0.18), rng.uniform(2, 6)),
  }


def _hsv(h, s, v) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


class _Objects:
  """Accumulates objects (ground parts, boxes, cylinders) with their materials."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.boxes, self.cylinders = [], []
    self.box_mat, self.cyl_mat, self.ground_mat = [], [], []

  @staticmethod
  def _mat(cls, albedo, contrast, texel, dropout):
    return (cls, np.asarray(albedo, np.float64), contrast, texel, dropout)

  def ground(self, cls, family: _Family):
    self.ground_mat.append(self._mat(cls, *family.draw(), 0.0))

  def box(self, x0, y0, z0, x1, y1, z1, cls, albedo, contrast=0.05, texel=4.0, dropout=0.0):
    self.boxes.append((min(x0, x1), y0, min(z0, z1), max(x0, x1), y1, max(z0, z1)))
    self.box_mat.append(self._mat(cls, albedo, contrast, texel, dropout))

  def cylinder(self, cx, cz, r, y0, y1, cls, albedo, contrast=0.05, texel=4.0, dropout=0.0):
    self.cylinders.append((cx, cz, r, y0, y1))
    self.cyl_mat.append(self._mat(cls, albedo, contrast, texel, dropout))

  def materials(self):
    mats = self.ground_mat + self.box_mat + self.cyl_mat
    cls, albedo, contrast, texel, dropout = zip(*mats)
    offset = self.rng.uniform(0, 256, (len(mats), 2))
    return (np.array(cls, np.int32), np.array(albedo, np.float32), np.array(contrast, np.float32),
            np.array(texel, np.float32), offset.astype(np.float32), np.array(dropout, np.float32))


def _street_side(rng, objs: _Objects, fam, side: int, curb_x: float, curb: float, walk: float):
  """Buildings, walls, hedges, trees and poles on one side (side = -1 left, +1 right)."""
  outer = curb_x + side * walk  # outer edge of the sidewalk
  has_buildings = rng.uniform() < 0.85
  setback = 0.0 if rng.uniform() < 0.35 else rng.uniform(1.5, 9.0)
  front = outer + side * setback  # building line
  if has_buildings:
    z = rng.uniform(-30, -5)
    while z < 170:
      length, height = rng.uniform(8, 35), rng.uniform(4, 24)
      depth, jitter = rng.uniform(8, 16), rng.uniform(0, 1.2) * (rng.uniform() < 0.4)
      x_front = front + side * jitter
      objs.box(x_front, 0, z, x_front + side * depth, height, z + length, BUILDING,
               *fam["plaster"].draw())
      z += length + (rng.uniform(2, 14) if rng.uniform() < 0.35 else 0.0)
  # Walls perpendicular to the street (facing the camera), across the front garden.
  for _ in range(rng.integers(0, 4) if setback > 1.0 or not has_buildings else 0):
    z, thick, height = rng.uniform(4, 60), rng.uniform(0.2, 0.45), rng.uniform(1.0, 3.2)
    length = setback if has_buildings else rng.uniform(2, 8)
    objs.box(outer, curb, z, outer + side * length, curb + height, z + thick, WALL,
             *fam["plaster"].draw())
  # Occasionally a low wall along the sidewalk's outer edge.
  if rng.uniform() < 0.15:
    z0 = rng.uniform(0, 30)
    objs.box(outer + side * 0.05, curb, z0, outer + side * 0.35, curb + rng.uniform(0.8, 2.0),
             z0 + rng.uniform(5, 25), WALL, *fam["plaster"].draw())
  green_x0 = outer + side * 0.3  # vegetation stands on the terrain strip, or at the sidewalk's edge
  green_x1 = front - side * 0.5 if has_buildings and setback > 1.5 else outer + side * 6.0
  for _ in range(rng.integers(0, 3) if setback > 1.5 or not has_buildings else 0):  # hedges
    z0, xh = rng.uniform(0, 50), rng.uniform(min(green_x0, green_x1), max(green_x0, green_x1))
    objs.box(xh, curb, z0, xh + side * rng.uniform(0.6, 1.5), curb + rng.uniform(0.6, 1.8),
             z0 + rng.uniform(3, 15), VEGETATION, *fam["green"].draw())
  for _ in range(rng.integers(0, 6)):  # trees
    in_walk = setback < 1.5 and has_buildings
    x = (curb_x + side * (walk - 0.6) if in_walk
         else rng.uniform(min(green_x0, green_x1), max(green_x0, green_x1)))
    z, trunk = rng.uniform(3, 80), rng.uniform(1.8, 3.5)
    albedo, contrast, texel = fam["green"].draw()
    objs.cylinder(x, z, rng.uniform(0.12, 0.25), curb, curb + trunk + 0.3, VEGETATION,
                  albedo * rng.uniform(0.45, 0.7), contrast, texel)
    objs.cylinder(x, z, rng.uniform(1.0, 2.8), curb + trunk, curb + trunk + rng.uniform(1.5, 5.0),
                  VEGETATION, albedo, contrast, texel)
  if rng.uniform() < 0.85:  # poles near the curb
    metal = rng.uniform(0.25, 0.6) * np.array([1.0, 1.0, 1.05])
    z, spacing, x = rng.uniform(-5, 10), rng.uniform(10, 28), curb_x + side * rng.uniform(0.3, 0.7)
    while z < 85:
      objs.cylinder(x, z, rng.uniform(0.08, 0.16), curb, curb + rng.uniform(4, 9), POLE,
                    metal * np.exp(rng.normal(0, 0.1)), 0.03, 6.0)
      z += spacing * rng.uniform(0.8, 1.2)


def _car(rng, objs: _Objects, x: float, z: float, fam):
  """A car (body + glass cabin) centred at lateral x with its rear at z."""
  w, length, body = rng.uniform(1.6, 1.9), rng.uniform(3.8, 4.9), rng.uniform(0.95, 1.1)
  if rng.uniform() < 0.3:  # grey/white/black cars share the plaster statistics
    paint = fam["plaster"].draw()[0] * rng.uniform(0.3, 1.3)
  else:
    paint = _hsv(rng.uniform(), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.8))
  objs.box(x - w / 2, 0.25, z, x + w / 2, body, z + length, CAR, paint, 0.03, 3.0)
  c0 = z + length * rng.uniform(0.15, 0.3)
  objs.box(x - w / 2 + 0.1, body, c0, x + w / 2 - 0.1, body + rng.uniform(0.4, 0.55),
           c0 + length * rng.uniform(0.45, 0.6), CAR,
           rng.uniform(0.04, 0.12) * np.array([0.9, 1.0, 1.15]), 0.03, 3.0, 0.25)  # glass


def _person(rng, objs: _Objects, x: float, z: float, y: float):
  """A person (legs, torso, head) standing at (x, z) on a surface of height y."""
  h = rng.uniform(1.5, 1.9)
  skin = _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.9))
  legs = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.45))
  torso = _hsv(rng.uniform(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.9))
  objs.cylinder(x, z, rng.uniform(0.13, 0.18), y, y + 0.5 * h, PERSON, legs, 0.05, 8.0)
  objs.cylinder(x, z, rng.uniform(0.19, 0.25), y + 0.48 * h, y + 0.86 * h, PERSON, torso, 0.05, 8.0)
  objs.cylinder(x, z, 0.1, y + 0.86 * h, y + h, PERSON, skin, 0.03, 8.0)


def sample_layout(rng: np.random.Generator) -> Layout:
  """Draws one random street scene (all randomness comes from `rng`)."""
  fam = _families(rng)
  objs = _Objects(rng)
  width = rng.uniform(7, 14)
  left = -rng.uniform(3.0, width - 3.0)  # the camera drives somewhere across the road
  road = (left, left + width)
  curb = rng.uniform(0.1, 0.2)
  walk = (rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0))
  objs.ground(ROAD, fam["paved"])
  objs.ground(SIDEWALK, fam["paved"])
  objs.ground(SIDEWALK, fam["paved"])
  objs.ground(TERRAIN, fam["green"])
  objs.ground(TERRAIN, fam["green"])
  for side, curb_x, w in ((-1, road[0], walk[0]), (1, road[1], walk[1])):
    _street_side(rng, objs, fam, side, curb_x, curb, w)
    if rng.uniform() < 0.7:  # parked cars along the curb
      z = rng.uniform(-2, 12)
      while z < 70:
        _car(rng, objs, curb_x - side * rng.uniform(1.0, 1.3), z, fam)
        z += rng.uniform(5.5, 8) + (rng.uniform(3, 25) if rng.uniform() < 0.4 else 0)
  for _ in range(rng.integers(0, 4)):  # traffic ahead, in any lane
    _car(rng, objs, rng.uniform(road[0] + 1.2, road[1] - 1.2), rng.uniform(10, 60), fam)
  for _ in range(rng.integers(1, 13)):  # pedestrians, mostly on the sidewalks
    if rng.uniform() < 0.8:
      side = rng.integers(0, 2)
      x = road[side] + (2 * side - 1) * rng.uniform(0.3, walk[side] - 0.2)
      _person(rng, objs, x, rng.uniform(4, 45), curb)
    else:
      _person(rng, objs, rng.uniform(road[0] + 0.5, road[1] - 0.5), rng.uniform(7, 40), 0.0)
  elevation, azimuth = rng.uniform(0.25, 1.2), rng.uniform(0, 2 * np.pi)
  sun = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
                  np.cos(elevation) * np.cos(azimuth)], np.float32)
  overcast = rng.uniform()
  zenith = (1 - overcast) * np.array([0.35, 0.55, 0.85]) + overcast * np.array([0.7, 0.72, 0.75])
  horizon = (1 - overcast) * np.array([0.75, 0.82, 0.9]) + overcast * np.array([0.82, 0.83, 0.84])
  cls, albedo, contrast, texel, offset, dropout = objs.materials()
  return Layout(
      yaw=float(rng.normal(0, 0.03)), pitch=float(rng.normal(0, 0.012)),
      sun=sun, sun_rgb=np.array([1.0, 0.97, 0.9], np.float32) * rng.uniform(0.9, 1.15),
      ambient=float(rng.uniform(0.35, 0.55) + 0.2 * overcast),
      sky_zenith=(zenith * rng.uniform(0.9, 1.1)).astype(np.float32),
      sky_horizon=horizon.astype(np.float32), fog_distance=float(rng.uniform(150, 500)),
      road=road, curb=float(curb), sidewalk=walk,
      boxes=np.array(objs.boxes, np.float32).reshape(-1, 6),
      cylinders=np.array(objs.cylinders, np.float32).reshape(-1, 5),
      obj_class=cls, obj_albedo=albedo, obj_contrast=contrast, obj_texel=texel, obj_offset=offset,
      obj_dropout=dropout,
      depth_noise=(float(rng.uniform(3e-4, 5e-4)), float(rng.uniform(1e-5, 2e-5))),
      dropout_rate=float(rng.uniform(0.003, 0.02)), image_noise=float(rng.uniform(0.006, 0.015)),
  )
