"""Teacher (RGB-X), Student (RGB) and the distillation adapters (DESIGN §4).

Both networks return `(logits, taps)`: logits `[B, H, W, K]` float32 at the input size, and taps
`{"stage1", "stage2", "stage3", "stage4", "decoder"}` at strides (4, 8, 16, 32, 4), in the compute
dtype.

Input sizes that are not multiples of 32: the image (and X) are zero-padded on the bottom/right to
the next multiple of 32, the network runs on the padded input, and the outputs are cropped back:
logits (bilinearly upsampled at the padded size) to H×W, the tap at stride s to
`tap_shape((H, W), s) = (ceil(H/s), ceil(W/s))` — the cells that overlap at least one real pixel.
Resize valid masks to a tap with nearest-neighbour to that shape. (In train mode the padded border
enters the BatchNorm statistics; use multiples of 32 where that matters.)
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from lix_jax.models.backbones import make_backbone, scaled_channels
from lix_jax.models.decoders import (DEFAULT_DECODER_CHANNELS, Classifier, FPNDecoder,
                                     upsample_logits)
from lix_jax.models.fusion import get_fusion

PAD_MULTIPLE = 32
TAP_STRIDES: dict[str, int] = {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32, "decoder": 4}


def tap_shape(image_hw: tuple[int, int], stride: int) -> tuple[int, int]:
  """Spatial size of a tap at `stride` for an input of size `image_hw`: (ceil(H/s), ceil(W/s)).

  Integer arithmetic only, so that H and W may be `jax.export` symbolic dimensions.
  """
  return (image_hw[0] + stride - 1) // stride, (image_hw[1] + stride - 1) // stride


def pad_to_multiple(x: jax.Array, multiple: int = PAD_MULTIPLE) -> jax.Array:
  """Zero-pads NHWC `x` on the bottom/right so H and W are multiples of `multiple`."""
  h, w = x.shape[1:3]
  ph, pw = -h % multiple, -w % multiple
  if ph == 0 and pw == 0:
    return x
  return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))


def _outputs(logits: jax.Array, decoder: jax.Array, stages: list[jax.Array],
             image_hw: tuple[int, int]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Upsamples and crops logits to `image_hw` and crops the taps to `tap_shape`."""
  padded_hw = (stages[0].shape[1] * 4, stages[0].shape[2] * 4)
  logits = upsample_logits(logits, padded_hw)[:, :image_hw[0], :image_hw[1]]
  taps = {f"stage{i + 1}": f for i, f in enumerate(stages)}
  taps["decoder"] = decoder
  cropped = {}
  for name, tap in taps.items():
    h, w = tap_shape(image_hw, TAP_STRIDES[name])
    cropped[name] = tap[:, :h, :w]
  return logits, cropped


def _check_image(image: jax.Array, name: str = "image") -> None:
  if image.ndim != 4:
    raise ValueError(f"{name} must be NHWC [B, H, W, C]; got shape {image.shape}")


class Teacher(nn.Module):
  """Duplex-encoder RGB-X segmentation network.

  Attributes:
    num_classes: K.
    x_channels: channels of X (1 depth/disparity, 3 normals); checked against the input.
    fusion: "intermediate" or "late" (`fusion.FUSIONS`).
    backbone: "resnet18" | "resnet34" | "resnet50" (`backbones.BACKBONES`).
    width: channel multiplier (0.25 for CPU runs).
    fusion_block: "gated" or "add" (intermediate fusion only).
    decoder_channels: FPN width; None = max(8, round(128·width)).
    stem: "imagenet" (7×7/2 + max-pool) or "deep" (3×3 convs + max-pool).
    dtype: compute dtype (e.g. jnp.bfloat16); params are float32 and logits float32.
    bn_axis_name: mapped axis for synchronised BatchNorm ("data" inside shard_map), or None.
  """
  num_classes: int
  x_channels: int
  fusion: str = "intermediate"
  backbone: str = "resnet18"
  width: float = 1.0
  fusion_block: str = "gated"
  decoder_channels: int | None = None
  stem: str = "imagenet"
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, image: jax.Array, x: jax.Array, train: bool
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the teacher.

    Args:
      image: [B, H, W, 3] float32.
      x: [B, H, W, x_channels] float32.
      train: use batch statistics in BN and update the running ones (call
        `apply(..., mutable=["batch_stats"])`).

    Returns:
      (logits [B, H, W, K] float32, taps dict), see the module docstring.
    """
    _check_image(image)
    _check_image(x, "x")
    if x.shape[-1] != self.x_channels:
      raise ValueError(f"x has {x.shape[-1]} channels but the Teacher has x_channels="
                       f"{self.x_channels} (x shape {x.shape})")
    if x.shape[:3] != image.shape[:3]:
      raise ValueError(f"image {image.shape} and x {x.shape} differ in batch or spatial size")
    trunk = get_fusion(self.fusion)(
        backbone=self.backbone, width=self.width, stem=self.stem, fusion_block=self.fusion_block,
        decoder_channels=self.decoder_channels, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
        name="fusion")
    decoder, stages = trunk(pad_to_multiple(image), pad_to_multiple(x), train)
    logits = Classifier(self.num_classes, dtype=self.dtype, name="classifier")(decoder)
    return _outputs(logits, decoder, stages, image.shape[1:3])


class Student(nn.Module):
  """RGB-only segmentation network (no X path): ResNet → FPN decoder → classifier.

  Attributes: as `Teacher`, without `x_channels`, `fusion` and `fusion_block`.
  Parameter paths: `backbone/…`, `decoder/…`, `classifier/…`.
  """
  num_classes: int
  backbone: str = "resnet18"
  width: float = 1.0
  decoder_channels: int | None = None
  stem: str = "imagenet"
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Args: image [B, H, W, 3], train. Returns (logits [B, H, W, K] float32, taps)."""
    _check_image(image)
    stages = make_backbone(self.backbone, width=self.width, stem=self.stem, dtype=self.dtype,
                           bn_axis_name=self.bn_axis_name, name="backbone")(
                               pad_to_multiple(image), train)
    channels = (int(self.decoder_channels) if self.decoder_channels is not None
                else scaled_channels(DEFAULT_DECODER_CHANNELS, self.width))
    decoder = FPNDecoder(channels, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                         name="decoder")(stages, train)
    logits = Classifier(self.num_classes, dtype=self.dtype, name="classifier")(decoder)
    return _outputs(logits, decoder, stages, image.shape[1:3])


class Adapters(nn.Module):
  """ARFD/FitNet adapters: a 1×1 conv (with bias) per tap, student width → teacher width.

  Owned by the distillation state (not by `Student`), so an exported student is exactly `Student`.

  Attributes:
    out_channels: tap name → teacher channels, e.g. `tap_channels(teacher, hw)` restricted to the
      distilled taps. Only these taps are adapted.
    dtype: compute dtype.
  """
  out_channels: Mapping[str, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, taps: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Maps {name: [B, h, w, Cs]} to {name: [B, h, w, out_channels[name]]} per configured tap."""
    out = {}
    for name, channels in self.out_channels.items():
      if name not in taps:
        raise KeyError(f"Adapters: tap {name!r} not in the student taps {sorted(taps)}")
      out[name] = nn.Conv(int(channels), (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                          name=name)(taps[name])
    return out


def dummy_inputs(model: nn.Module, image_hw: tuple[int, int], batch: int = 1) -> tuple:
  """Positional inputs (before `train`) of `model`: (image,) or (image, x) ShapeDtypeStructs."""
  image = jax.ShapeDtypeStruct((batch, *image_hw, 3), jnp.float32)
  if isinstance(model, Teacher):
    return image, jax.ShapeDtypeStruct((batch, *image_hw, model.x_channels), jnp.float32)
  return (image,)


def abstract_init(model: nn.Module, image_hw: tuple[int, int], batch: int = 1):
  """Shapes only (no compute): `(variables, (logits, taps))` of `model.init_with_output`."""
  inputs = dummy_inputs(model, image_hw, batch)
  fn = lambda *a: model.init_with_output(jax.random.key(0), *a, train=False)
  outputs, variables = jax.eval_shape(fn, *inputs)
  return variables, outputs


def random_variables(model: nn.Module, image_hw: tuple[int, int], seed: int = 0) -> Any:
  """`model.init`'s variables with random values and no init compile (benchmarks, export tests):
  He-normal kernels, BN scale and running variance 1, every other leaf 0. NumPy float32."""
  import numpy as np  # noqa: PLC0415
  variables, _ = abstract_init(model, image_hw)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      std = math.sqrt(2 / math.prod(leaf.shape[:-1]))
      return np.asarray(rng.normal(size=leaf.shape) * std, np.float32)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    return np.zeros(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(fill, variables)


def tap_channels(model: nn.Module, image_hw: tuple[int, int] = (64, 64)) -> dict[str, int]:
  """Channel count of each tap of `model` (via `jax.eval_shape`, no compute)."""
  _, (_, taps) = abstract_init(model, image_hw)
  return {k: int(v.shape[-1]) for k, v in taps.items()}


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))
