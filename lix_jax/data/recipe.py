"""A patient and consistent teacher (DESIGN §5): colour jitter and CutMix for distillation views.

Function matching (Beyer et al., CVPR 2022) shows teacher and student the very same view and varies
that view far more than a supervised crop. Two keys add to the pipeline's scale/crop/flip, for the
labelled and the unlabelled stream alike (never for evaluation):

- `data.photometric` = s in [0, 1] (0 = off): a colour jitter of the RGB image only, after the crop
  and before normalisation, on 0..255 values, in this fixed order, each clipped to [0, 255]:
    brightness  img <- b · img                                b ~ U(1 − 0.8 s, 1 + 0.8 s)
    contrast    img <- c · img + (1 − c) · m                  c ~ U(1 − 0.8 s, 1 + 0.8 s),
                m = mean grey level over the crop's real pixels (padding excluded)
    saturation  img <- a · img + (1 − a) · grey(img)          a ~ U(1 − 0.8 s, 1 + 0.8 s)
    hue         rotate YIQ's chroma plane (I, Q) by 2π·h, Y kept     h ~ U(−0.2 s, 0.2 s) turns
  with grey = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, as torchvision). s = 1 is SimCLR's
  ColorJitter(0.8, 0.8, 0.8, 0.2); s = 0.5 the classic ColorJitter(0.4, 0.4, 0.4, 0.1). The four
  draws come from the example's own generator after the crop's draws (`jitter_params`). X, the
  labels and the validity mask are untouched; padding stays the mean colour (0 after normalisation).
- `data.cutmix_prob` = p (0 = off): with probability p a box of another image of the same global
  batch is pasted into an element (CutMix, Yun et al. 2019, with λ ~ U(0, 1)): area fraction
  r ~ U(0, 1), box (round(h·√r), round(w·√r)), top-left uniform so that the box lies inside the
  crop; the partner's pixels at the same coordinates replace the element's in `image`, `x`,
  `label` and `valid` together (so the teacher sees a consistent RGB + X, CE reads the partner's
  labels there, the partner's padding stays invalid and its real pixels become valid). The partner
  of global index i is the next element of its global batch of G: g·G + (i − g·G + 1) mod G with
  g = i // G (a roll by one, as mixup rolls or flips a batch); with G = 1 an image is its own
  partner and the paste changes nothing. The partner's arrays are its own final view (crop and
  jitter), before its own paste.

Where it runs, and why there. Both transforms run in the host pipeline, drawn per *global* index
from generators seeded by (seed, global index): the jitter inside `process_example` with the
crop's generator, the paste in `host_batches` — on one host a map over whole global batches, which
hold every partner's view already; on several, a grain map over the global index space before the
per-host shard (`cutmix_dataset`), which reads the partner by random access and re-creates its
view (its crop is a function of its global index). So the union of the hosts' batches is the
one-host batch whatever the split over hosts and devices, resume restores the grain position and
nothing else, the teacher and the student receive the very same arrays (`distill_step` feeds one
batch to both), the step functions and their rng are untouched, and the shard_map and pmap
backends see the same global batch. The alternative, a jitted paste on the global sharded batch
before the per-shard step (a collective permute), would need its own rng stream in the step and a
second path for pmap; it would save only the partner's re-read on several hosts, p × (read +
augment) per element there (none on one host). The trainer gives the recipe to student runs
(`train/inputs.make_train_iters`); a teacher run reads its own pair, `teacher.photometric` and
`teacher.cutmix_prob`, off by default: a teacher trains as before (DESIGN §5).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import grain
import numpy as np

GREY = np.array([0.299, 0.587, 0.114], np.float32)
# RGB -> YIQ (NTSC 1953); the hue rotation acts on I and Q.
YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
               np.float64)
YIQ_INV = np.linalg.inv(YIQ)
FACTOR_RANGE, HUE_RANGE = 0.8, 0.2  # × strength: brightness/contrast/saturation; hue (turns).
PASTED = ("image", "x", "label", "valid")  # The per-pixel arrays a paste moves together.
_CUTMIX_SALT = 0x63757478  # Keeps the paste's stream apart from any other (seed, index) stream.


def check_recipe(photometric: float, cutmix_prob: float, section: str = "data") -> None:
  """ValueError naming `<section>.photometric` / `<section>.cutmix_prob` when out of [0, 1]
  (`data`: the students' recipe; `teacher`: the teacher's own)."""
  for key, value in (("photometric", photometric), ("cutmix_prob", cutmix_prob)):
    if not 0.0 <= float(value) <= 1.0:
      raise ValueError(f"{section}.{key}={value} must be in [0, 1] (0 = off)")


def jitter_params(rng: np.random.Generator, strength: float) -> tuple[float, float, float, float]:
  """(brightness, contrast, saturation, hue) drawn from `rng` in this order (module docstring)."""
  lo, hi = 1 - FACTOR_RANGE * strength, 1 + FACTOR_RANGE * strength
  b, c, a = (float(rng.uniform(lo, hi)) for _ in range(3))
  return b, c, a, float(rng.uniform(-HUE_RANGE * strength, HUE_RANGE * strength))


def hue_matrix(hue: float) -> np.ndarray:
  """The 3×3 RGB matrix that rotates YIQ's chroma plane by 2π·hue turns (luma Y unchanged)."""
  cos, sin = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
  rot = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
  return (YIQ_INV @ rot @ YIQ).astype(np.float32)


def apply_jitter(img: np.ndarray, inside: np.ndarray, params) -> np.ndarray:
  """The jitter of `params` on a float32 RGB image [h, w, 3] in 0..255 (`inside`: its real pixels,
  over which the contrast's mean grey level is taken). Returns float32 [h, w, 3] in [0, 255]."""
  b, c, a, hue = params
  img = np.clip(img * np.float32(b), 0, 255)
  grey = img @ GREY
  mean = np.float32(grey[inside].mean()) if inside.any() else np.float32(0)
  img = np.clip(np.float32(c) * img + np.float32(1 - c) * mean, 0, 255)
  img = np.clip(np.float32(a) * img + np.float32(1 - a) * (img @ GREY)[..., None], 0, 255)
  return np.clip(img @ hue_matrix(hue).T, 0, 255).astype(np.float32)


def color_jitter(img: np.ndarray, inside: np.ndarray, rng: np.random.Generator,
                 strength: float) -> np.ndarray:
  """`apply_jitter` with parameters drawn from `rng`; strength 0 returns `img` and draws nothing."""
  if strength == 0:
    return img
  return apply_jitter(img, inside, jitter_params(rng, strength))


def partner_index(index: int, global_batch: int) -> int:
  """The global index whose image is pasted into `index`: the next one of its global batch."""
  start = index // global_batch * global_batch
  return start + (index - start + 1) % global_batch


def cutmix_box(index: int, *, seed: int, prob: float, hw: tuple[int, int]
               ) -> tuple[int, int, int, int] | None:
  """(y0, x0, box_h, box_w) of global index `index`'s paste, or None (no paste; no partner read).

  Drawn from `np.random.default_rng([seed, index, salt])`: u ~ U(0, 1) (paste iff u < prob), then
  r ~ U(0, 1), then y0 and x0 (module docstring).
  """
  if prob == 0:
    return None
  rng = np.random.default_rng([seed, index, _CUTMIX_SALT])
  if rng.random() >= prob:
    return None
  r = rng.random()
  h, w = hw
  bh, bw = int(round(h * math.sqrt(r))), int(round(w * math.sqrt(r)))
  return int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw


def _copy_box(dst: np.ndarray, src: np.ndarray, box: tuple[int, int, int, int]) -> None:
  y0, x0, bh, bw = box
  dst[y0:y0 + bh, x0:x0 + bw] = src[y0:y0 + bh, x0:x0 + bw]


def paste(element: Mapping[str, np.ndarray], partner: Mapping[str, np.ndarray],
          box: tuple[int, int, int, int]) -> dict[str, Any]:
  """`element` with `partner`'s pixels in `box` = (y0, x0, h, w), for every array of `PASTED` it
  has (image, X, label and valid mask move together); other keys are `element`'s."""
  out = dict(element)
  for key in PASTED:
    if key in element:
      if partner[key].shape != element[key].shape:
        raise ValueError(f"cutmix: partner {key!r} has shape {partner[key].shape}, the element "
                         f"{element[key].shape}")
      out[key] = np.array(element[key], copy=True)
      _copy_box(out[key], partner[key], box)
  return out


def _cutmix_element(index: int, *, views, global_batch: int, prob: float, seed: int):
  element = views[index]
  box = cutmix_box(index, seed=seed, prob=prob, hw=element["label"].shape[:2])
  if box is None:
    return element
  return paste(element, views[partner_index(index, global_batch)], box)


def _cutmix_batch(step: int, *, batches, prob: float, seed: int):
  """Global batch `step` with every row pasted from its partner row's view (before its paste)."""
  views = batches[step]
  size, hw = views["label"].shape[0], views["label"].shape[1:3]
  out = {k: np.array(v, copy=True) if k in PASTED else v for k, v in views.items()}
  for r in range(size):
    box = cutmix_box(step * size + r, seed=seed, prob=prob, hw=hw)
    if box is not None:
      for key in PASTED:
        if key in views:
          _copy_box(out[key][r], views[key][partner_index(r, size)], box)
  return out


def cutmix_dataset(views: grain.MapDataset, *, global_batch: int, prob: float, seed: int
                   ) -> grain.MapDataset:
  """`views` (per-global-index training elements) with CutMix at `prob`, as a MapDataset over the
  same global indices; `prob` 0 returns `views` itself (bitwise the recipe-off stream)."""
  if prob == 0:
    return views
  return grain.MapDataset.range(len(views)).map(functools.partial(
      _cutmix_element, views=views, global_batch=global_batch, prob=prob, seed=seed))


def host_batches(views: grain.MapDataset, *, shard_index: int, shard_count: int, batch_size: int,
                 prob: float, seed: int) -> grain.MapDataset:
  """This host's batches of `batch_size` (rows `shard_index::shard_count` of each global batch)
  with CutMix at `prob`. One host holds each partner's view already: the global batch is pasted
  as a whole (no extra read). Several hosts: each pasted element reads its partner by random
  access (`cutmix_dataset`). Both give the same arrays (tests/test_recipe.py)."""
  if prob > 0 and shard_count == 1:
    batches = views.batch(batch_size, drop_remainder=True)
    return grain.MapDataset.range(len(batches)).map(functools.partial(
        _cutmix_batch, batches=batches, prob=prob, seed=seed))
  views = cutmix_dataset(views, global_batch=shard_count * batch_size, prob=prob, seed=seed)
  return views[shard_index::shard_count].batch(batch_size, drop_remainder=True)
