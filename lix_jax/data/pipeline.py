"""grain input pipelines: train / unlabelled / eval streams of NumPy batches (DESIGN §5, §2.6).

Per example, in this order (`process_example`):
  1. X from depth at the source resolution (`compute_x`): `depth` (metres), `disparity`
     (f·B/Z, `geometry.depth_to_disparity`) or `normal` (SNE, `geometry.depth_to_normals`). X is
     computed BEFORE the geometric augmentation because disparity and normals need the source
     intrinsics (a resized / cropped / mirrored image no longer matches them). X values are not
     rescaled by the zoom: the zoom simulates object-size variation, not a change of focal length.
  2. Joint augmentation (`augment`, train only), fused into one gather per array: random scale
     s ~ U(scale_range), random crop of `crop_hw` from the scaled image (a scaled image smaller
     than the crop is placed at a random offset and padded: image 0 after normalisation = the mean
     colour, X 0 = invalid, label 255), horizontal flip with probability `flip_prob` (image, X and
     label mirrored; normals also get their x component negated, as x points right). Intrinsics do
     not travel in the batch, so no cx needs mirroring. Coordinates use half-pixel centres
     (align_corners=False) for every array, so the image (bilinear), X (bilinear) and label
     (nearest) stay aligned.
     X is resized by normalised convolution: X·m and the validity mask m = (depth > 0) & (X != 0)
     are resized bilinearly and divided, so a missing pixel (0) never blends into its neighbours
     as a fake small depth; an output pixel is valid iff the resized mask is >= 0.5 (nearest-like
     coverage), otherwise X = 0. Normals are renormalised to unit length after the resize. As with
     any bilinear resize, depths across an occlusion edge are interpolated (a one-pixel band of
     intermediate depths when upscaling); holes, however, never leak into valid values.
     The zoom is applied per axis as round(H·s)/H and round(W·s)/W (exact pixel grids).
  3. Normalisation: image uint8 -> float32 (x - mean) / std with mean/std in 0..255 units
     (ImageNet's by default; `image_stats` computes a dataset's own); X per modality
     (`normalize_x`), invalid pixels stay exactly 0. The uint8 -> float conversion happens here, not
     on device, so batches are ready-to-use float32.

Batches are dicts of NumPy arrays: `image` float32 [B, h, w, 3], `x` float32 [B, h, w, Cx],
`label` int32 [B, h, w] (255 = ignore). Train (and unlabelled) batches add `valid` bool [B, h, w],
the pixel validity mask: False exactly where the crop is padding beyond the scaled image (the
`inside` of `augment`, so it follows the same scale, offset and flip). Losses read it instead of
the labels because unlabelled frames have no labels (DESIGN §5: padding is never a target); the
labels are 255 there as well. Eval batches add `valid` bool [B] (False on padded rows) and `id`
bytes [B]; at native resolution no pixel is padding, and `pad_hw` padding is labelled 255, which
the confusion matrix never counts.

Bad train ids: with `num_classes` K known (given, or the tfds source's `class_names` metadata), a
labelled example whose label has an id outside [0, K) other than 255 raises a ValueError naming
the example's `id` and split when its batch is made (host side), instead of entering the losses
as a valid pixel of no class.

Order and hosts. Train: `source.seed(seed).shuffle().repeat()` is one infinite global stream (a new
permutation each epoch); augmentation is drawn per global index, then host `i` of `n` takes
elements `i::n`. Since all hosts take the same number of steps, the union of the hosts' local
batches at step t is exactly the global batch t of a single host with batch n·B (rows grouped by
host), and each epoch is covered exactly once by the union of hosts — no truncation is needed for
an infinite stream. DESIGN §5's recipe (`lix_jax.data.recipe`: a colour jitter after the crop,
CutMix across the global batch) is drawn per global index too. Eval: the example list is padded
to a multiple of n·B with `valid=False` rows (label 255) so every host has the same number of full
batches and each example appears once.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import grain
import jax
import numpy as np

from lix_jax import IGNORE_INDEX  # noqa: F401  (re-exported; defined once in lix_jax/__init__.py)
from lix_jax.data import geometry, recipe

# ImageNet mean / std in 0..255 units (RGB), the usual default for pretrained-style backbones.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
X_CHANNELS = geometry.MODALITIES  # x_modality -> Cx


def _check_modality(x_modality: str) -> None:
  if x_modality not in X_CHANNELS:
    raise KeyError(f"Unknown x_modality {x_modality!r}. Valid modalities are: {sorted(X_CHANNELS)}")


def compute_x(example: Mapping[str, Any], x_modality: str) -> np.ndarray:
  """Raw X from the example's depth at source resolution: float32 [H, W, Cx], 0 where invalid.

  `geometry.make_x(..., normalize=False)`; a pixel is valid only where depth > 0 and the
  modality produced a non-zero value (so a 0 disparity from an unknown baseline is invalid).
  """
  x = np.asarray(geometry.make_x(example, x_modality, normalize=False), np.float32)
  valid = (np.asarray(example["depth"]) > 0) & np.any(x != 0, axis=-1)
  return np.where(valid[..., None], x, 0).astype(np.float32)


def normalize_x(x: np.ndarray, x_modality: str) -> np.ndarray:
  """Per-modality normalisation of X [..., Cx] (`geometry.normalize_x`); 0 (invalid) stays 0."""
  return np.asarray(geometry.normalize_x(x, x_modality), np.float32)


def _axis_map(n_src: int, n_out: int, scale: float, offset: int, flip: bool):
  """Source sampling positions of `n_out` output pixels along one axis.

  Output pixel i is pixel i + offset of the source scaled to round(n_src·scale) pixels, whose
  centre maps to source coordinate (i + offset + 0.5) / s - 0.5 with s the exact size ratio.

  Returns:
    (i0, i1, w, nearest, inside): bilinear neighbour indices and weight of i1, nearest index, and
    a bool mask of output pixels that fall inside the scaled image (all arrays [n_out]).
  """
  n_scaled = max(1, int(round(n_src * scale)))
  s = n_scaled / n_src
  pos = np.arange(n_out) + offset
  inside = (pos >= 0) & (pos < n_scaled)
  src = np.clip((pos + 0.5) / s - 0.5, 0, n_src - 1)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, n_src - 1)
  w = (src - i0).astype(np.float32)
  nearest = np.clip(np.floor((pos + 0.5) / s), 0, n_src - 1).astype(np.int64)
  out = (i0, i1, w, nearest, inside)
  return tuple(a[::-1] for a in out) if flip else out


def _random_offset(rng: np.random.Generator, n_scaled: int, n_crop: int) -> int:
  lo, hi = min(0, n_scaled - n_crop), max(0, n_scaled - n_crop)
  return int(rng.integers(lo, hi + 1))


def augment(image: np.ndarray, x: np.ndarray, label: np.ndarray, rng: np.random.Generator, *,
            crop_hw: tuple[int, int], scale_range: tuple[float, float] = (0.75, 1.5),
            flip_prob: float = 0.5, x_modality: str = "depth"):
  """Joint random scale, crop and horizontal flip (see the module docstring for conventions).

  Args:
    image: uint8 [H, W, 3]. x: float32 [H, W, Cx], 0 = invalid. label: uint8/int [H, W].
    rng: the example's generator. crop_hw: output (h, w). scale_range: (min, max) zoom factor.
    flip_prob: probability of a horizontal flip. x_modality: "normal" negates x[..., 0] on flip.

  Returns:
    image float32 [h, w, 3] (0..255, 0 outside the scaled image), x float32 [h, w, Cx],
    x_valid bool [h, w], label int32 [h, w] (255 outside), inside bool [h, w].
  """
  (h_src, w_src), (h, w) = image.shape[:2], crop_hw
  scale = float(rng.uniform(*scale_range))
  oy = _random_offset(rng, max(1, int(round(h_src * scale))), h)
  ox = _random_offset(rng, max(1, int(round(w_src * scale))), w)
  flip = bool(rng.random() < flip_prob)
  y0, y1, wy, yn, yin = _axis_map(h_src, h, scale, oy, False)
  x0, x1, wx, xn, xin = _axis_map(w_src, w, scale, ox, flip)
  cx = x.shape[-1]
  # X is already 0 where invalid (compute_x), so X·m = X: one stack [image, X, m] is gathered.
  stack = np.empty((h_src, w_src, 4 + cx), np.float32)
  stack[..., :3] = image
  stack[..., 3:3 + cx] = x
  stack[..., -1] = (x[..., 0] != 0) if cx == 1 else (np.einsum("hwc,hwc->hw", x, x) > 0)
  rows = np.take(stack, y0, 0) * (1 - wy)[:, None, None] + np.take(stack, y1, 0) * wy[:, None, None]
  out = np.take(rows, x0, 1) * (1 - wx)[None, :, None] + np.take(rows, x1, 1) * wx[None, :, None]
  inside = yin[:, None] & xin[None, :]
  x_out = out[..., 3:3 + cx]
  # Normalised convolution: divide by the resized mask; normals are renormalised instead, which
  # divides the mask out as well.
  if x_modality == "normal":
    denom = np.sqrt(np.einsum("hwc,hwc->hw", x_out, x_out))
  else:
    denom = out[..., -1]
  x_valid = (out[..., -1] >= 0.5) & inside & (denom > 1e-6)
  x_out = x_out * (x_valid / np.maximum(denom, 1e-6))[..., None]
  if x_modality == "normal" and flip:
    x_out[..., 0] *= -1  # Mirroring the image mirrors the x axis of every normal.
  lab = np.take(np.take(np.asarray(label), yn, 0), xn, 1)
  lab = np.where(inside, lab, IGNORE_INDEX).astype(np.int32)
  img = out[..., :3] * inside[..., None]
  return img, x_out.astype(np.float32), x_valid, lab, inside


def _record_name(example: Mapping[str, Any], split: str | None) -> str:
  ex_id = example.get("id")
  if isinstance(ex_id, (bytes, np.bytes_)):
    ex_id = bytes(ex_id).decode(errors="replace")
  return f"Example {ex_id!r}" + ("" if split is None else f" of split {str(split)!r}")


def check_train_ids(label: np.ndarray, num_classes: int, example: Mapping[str, Any],
                    split: str | None = None) -> None:
  """Raises a ValueError naming the record if `label` has an id outside [0, K) other than 255."""
  label = np.asarray(label)
  bad = ((label < 0) | (label >= num_classes)) & (label != IGNORE_INDEX)
  if bad.any():
    ids = np.unique(label[bad])
    raise ValueError(f"{_record_name(example, split)}: label has train ids {ids[:10].tolist()} "
                     f"({int(bad.sum())} pixels) outside [0, {num_classes}) that are not "
                     f"{IGNORE_INDEX} (ignore); fix the data or its class map")


def process_example(example: Mapping[str, Any], rng: np.random.Generator | None, *,
                    x_modality: str, crop_hw: tuple[int, int] | None = None,
                    scale_range: tuple[float, float] = (0.75, 1.5), flip_prob: float = 0.5,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    labeled: bool = True, pad_hw: tuple[int, int] | None = None,
                    num_classes: int | None = None, split: str | None = None,
                    photometric: float = 0.0) -> dict:
  """One source example -> a normalised training / eval element (no batch axis).

  With `rng` None there is no augmentation (eval); `pad_hw` then pads bottom/right to a fixed size
  (image 0, X 0, label 255) so that images of slightly different sizes can be batched. With
  `labeled=False` the source's `label` field is never read and the label is all 255. With `rng`
  the element has `valid` bool [h, w]: False exactly on the padding of the crop (label 255 there).
  `num_classes` (K): a label id outside [0, K) that is not 255 is a ValueError naming the example's
  `id` and `split` (None: not checked). `photometric`: `recipe.color_jitter` after the crop.
  """
  image = np.asarray(example["image"])
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"Example {example.get('id')!r}: image must be [H, W, 3], got {image.shape}")
  x = compute_x(example, x_modality)
  label = (np.asarray(example["label"]) if labeled
           else np.full(image.shape[:2], IGNORE_INDEX, np.uint8))
  if labeled and num_classes is not None:
    check_train_ids(label, num_classes, example, split)
  if label.shape != image.shape[:2] or x.shape[:2] != image.shape[:2]:
    raise ValueError(f"Example {example.get('id')!r}: image {image.shape}, depth "
                     f"{np.shape(example['depth'])} and label {label.shape} sizes differ")
  if rng is not None:
    if crop_hw is None:
      raise ValueError("crop_hw is required when augmenting")
    img, x, x_valid, label, inside = augment(image, x, label, rng, crop_hw=crop_hw,
                                             scale_range=scale_range, flip_prob=flip_prob,
                                             x_modality=x_modality)
    img = recipe.color_jitter(img, inside, rng, photometric)
  else:
    img, label, inside = image.astype(np.float32), label.astype(np.int32), None
    x_valid = (x != 0).any(-1)
  img = (img - np.asarray(mean, np.float32)) * (1 / np.asarray(std, np.float32))
  if inside is not None:
    img *= inside[..., None]  # padding = 0 after normalisation (the mean colour)
  x = normalize_x(x, x_modality) * x_valid[..., None]  # invalid stays exactly 0
  out = {"image": img, "x": x, "label": label.astype(np.int32)}
  if inside is not None:
    # The padding mask, and the labels' 255 there, come from the same `inside` of `augment`.
    out["valid"] = inside.astype(bool)
  if pad_hw is not None:
    h, w = image.shape[:2]
    if h > pad_hw[0] or w > pad_hw[1]:
      raise ValueError(f"Example {example.get('id')!r} of size {(h, w)} exceeds pad_hw {pad_hw}")
    pads = ((0, pad_hw[0] - h), (0, pad_hw[1] - w))
    out = {"image": np.pad(img, pads + ((0, 0),)), "x": np.pad(out["x"], pads + ((0, 0),)),
           "label": np.pad(out["label"], pads, constant_values=IGNORE_INDEX)}
  return out


def _host(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if shard_index is None else shard_index
  count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= index < count:
    raise ValueError(f"shard_index {index} is not in [0, shard_count={count})")
  return index, count


def _source_meta(source, num_classes: int | None, split: str | None):
  """(K, split) for the train-id check: given values, else the tfds source's metadata, else None."""
  info = getattr(source, "dataset_info", None)
  if num_classes is None and info is not None:
    try:
      names = info.metadata["class_names"]
    except (KeyError, TypeError, AttributeError):
      names = None
    num_classes = len(names) if names else None
  if split is None and getattr(source, "split", None) is not None:
    split = str(source.split)
  return num_classes, split


def _to_iter(ds: grain.MapDataset, num_threads: int, prefetch: int, thread_prefetch: int,
             num_workers: int = 0):
  if num_workers < 0:
    raise ValueError(f"num_workers must be >= 0, got {num_workers}")
  # grain reads with at most prefetch_buffer_size threads (and warns when it is smaller).
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                               prefetch_buffer_size=max(prefetch, num_threads)))
  if num_workers > 0:
    # Worker processes each run the whole chain (decode, augment, batch) on a share of the
    # batches: in-process threads are held by the GIL, which starves a GPU (docs/performance.md,
    # "Data pipeline").
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  if thread_prefetch > 0:
    it_ds = grain.experimental.ThreadPrefetchIterDataset(
        it_ds, prefetch_buffer_size=thread_prefetch)
  return it_ds


def train_dataset(source: Sequence[Mapping[str, Any]], *, batch_size: int, seed: int,
                  x_modality: str, crop_hw: tuple[int, int],
                  scale_range: tuple[float, float] = (0.75, 1.5), flip: bool = True,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  labeled: bool = True, num_epochs: int | None = None,
                  shard_index: int | None = None, shard_count: int | None = None,
                  num_threads: int = 2, prefetch: int = 4, thread_prefetch: int = 0,
                  num_workers: int = 0, num_classes: int | None = None,
                  split: str | None = None, photometric: float = 0.0,
                  cutmix_prob: float = 0.0) -> grain.IterDataset:
  """The training stream of this host: shuffled, augmented, normalised, batched.

  Args:
    source: random-access examples (a `tfds.data_source` or any Sequence of dicts).
    batch_size: per-host batch size B (the global batch is B · shard_count).
    seed: shuffle + augmentation seed; use the same on every host.
    x_modality: "depth" | "disparity" | "normal".
    crop_hw: output (h, w). scale_range, flip: augmentation (module docstring).
    mean, std: image normalisation in 0..255 units (default ImageNet's).
    labeled: False for the unlabelled stream (labels never read, all 255).
    num_epochs: None = infinite; otherwise the global stream is truncated to whole global batches.
    shard_index, shard_count: this host's data shard; default jax.process_index()/process_count().
    num_threads, prefetch: grain.ReadOptions (small defaults for a 2-core machine).
    thread_prefetch: if > 0, a ThreadPrefetchIterDataset with that buffer on top.
    num_workers: if > 0, that many worker processes (`mp_prefetch`) produce the batches; the
      stream and its checkpointed state are the same as in-process. Needs parsed absl flags (the
      entry point's `app.run`) and an `if __name__ == "__main__"` guard in a script.
    num_classes: K for the train-id check of labelled examples (`process_example`); None = the
      tfds source's `class_names` metadata, unchecked if it has none.
    split: the split's name for error messages; None = the tfds source's `split`.
    photometric, cutmix_prob: the distillation recipe (`lix_jax.data.recipe`; 0 = off).

  Returns:
    A grain IterDataset of dicts {image [B,h,w,3] f32, x [B,h,w,Cx] f32, label [B,h,w] i32,
    valid [B,h,w] bool (False on the crops' padding)}; `iter()` of it is checkpointable with
    get_state()/set_state().
  """
  _check_modality(x_modality)
  recipe.check_recipe(photometric, cutmix_prob)
  index, count = _host(shard_index, shard_count)
  num_classes, split = _source_meta(source, num_classes, split)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if len(source) == 0:
    raise ValueError("train_dataset: the source is empty")
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
  if num_epochs is not None:
    ds = ds[:len(ds) // (count * batch_size) * (count * batch_size)]
  # Augment before sharding so that the RNG depends on the global index, not the host's index.
  ds = ds.random_map(lambda ex, rng: process_example(
      ex, rng, x_modality=x_modality, crop_hw=crop_hw, scale_range=scale_range,
      flip_prob=0.5 if flip else 0.0, mean=mean, std=std, labeled=labeled,
      num_classes=num_classes, split=split, photometric=photometric))
  ds = recipe.host_batches(ds, shard_index=index, shard_count=count, batch_size=batch_size,
                           prob=cutmix_prob, seed=seed)
  return _to_iter(ds, num_threads, prefetch, thread_prefetch, num_workers)


def unlabeled_dataset(source: Sequence[Mapping[str, Any]], **kwargs) -> grain.IterDataset:
  """The unlabelled RGB-X stream (DESIGN §2.6): `train_dataset(..., labeled=False)`.

  Give it its own `seed`. Its `label` is all 255; the source's labels are never read. Its `valid`
  (the padding mask) is what the trainer passes to the step as `unlabeled_valid`.
  """
  return train_dataset(source, labeled=False, **kwargs)


def num_eval_batches(num_examples: int, batch_size: int, shard_count: int) -> int:
  """Batches per host of `eval_dataset` (the same on every host)."""
  return -(-num_examples // (batch_size * shard_count))


def eval_dataset(source: Sequence[Mapping[str, Any]], *, batch_size: int, x_modality: str,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 pad_hw: tuple[int, int] | None = None, shard_index: int | None = None,
                 shard_count: int | None = None, num_threads: int = 2,
                 prefetch: int = 4, num_classes: int | None = None,
                 split: str | None = None) -> grain.IterDataset:
  """Each example exactly once over all hosts, in source order, at full resolution, no augmentation.

  The example list is padded to `num_eval_batches(...) · batch_size · shard_count` entries; padded
  rows have `valid=False`, label 255, image and X 0 and id b"". Host `i` takes entries `i::n`.
  `pad_hw` padding is labelled 255, so only original pixels are scored. `num_classes`, `split`:
  the train-id check, as in `train_dataset`.

  Returns:
    A grain IterDataset of dicts {image, x, label, valid bool [B], id bytes [B]}.
  """
  _check_modality(x_modality)
  index, count = _host(shard_index, shard_count)
  if len(source) == 0:
    raise ValueError("eval_dataset: the source is empty")
  num_classes, split = _source_meta(source, num_classes, split)
  kw = dict(x_modality=x_modality, mean=mean, std=std, pad_hw=pad_hw, num_classes=num_classes,
            split=split)
  # The padding row: a processed real example, zeroed, so shapes and dtypes match exactly.
  template = process_example(source[0], None, **kw)
  pad = {"image": np.zeros_like(template["image"]), "x": np.zeros_like(template["x"]),
         "label": np.full_like(template["label"], IGNORE_INDEX), "valid": np.bool_(False),
         "id": np.bytes_(b"")}

  def fn(i):
    if i >= len(source):
      return pad
    ex = source[i]
    out = process_example(ex, None, **kw)
    ex_id = ex.get("id", b"")
    out.update(valid=np.bool_(True),
               id=np.bytes_(ex_id.encode() if isinstance(ex_id, str) else bytes(ex_id)))
    return out

  # Padding the global index space (rather than grain.experimental.batch_and_pad on each host's
  # last batch) guarantees equal batch counts on all hosts: with 5 examples, 2 hosts and B = 2,
  # per-host padding would give host 0 two batches and host 1 one, and collectives would hang.
  length = num_eval_batches(len(source), batch_size, count) * batch_size * count
  # An index dataset (not a source yielding None, which grain treats as filtered out).
  ds = grain.MapDataset.range(length).map(fn)
  ds = ds[index::count].batch(batch_size)
  return _to_iter(ds, num_threads, prefetch, 0)


def image_stats(source: Sequence[Mapping[str, Any]], max_examples: int = 256):
  """Per-channel mean and std (0..255 units) of the first `max_examples` images of `source`."""
  n = min(len(source), max_examples)
  s, s2, cnt = np.zeros(3), np.zeros(3), 0
  for i in range(n):
    img = np.asarray(source[i]["image"], np.float64).reshape(-1, 3)
    s, s2, cnt = s + img.sum(0), s2 + (img ** 2).sum(0), cnt + img.shape[0]
  mean = s / cnt
  return tuple(mean.tolist()), tuple(np.sqrt(np.maximum(s2 / cnt - mean ** 2, 0)).tolist())
