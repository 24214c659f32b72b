"""ResNet-18/34/50 backbones (Flax linen) and loading of converted ImageNet weights (DESIGN §4).

A backbone maps an NHWC image whose height and width are multiples of 32 to its four stage
features at strides 4, 8, 16 and 32. It is also usable one stage at a time (`embed`, `stage`),
which is what the intermediate-fusion teacher needs to fuse X into the RGB stream between stages.

Parameter layout (the keys of a converted checkpoint, joined with "/"):
  stem/conv, stem/bn                               (stem="imagenet": 7×7 stride 2 + 3×3 max-pool)
  stem/conv1..conv3, stem/bn1..bn3                 (stem="deep": three 3×3 convs + 3×3 max-pool)
  stage{1..4}/block{j}/conv{1,2[,3]}, bn{1,2[,3]}  (stride on the 3×3 conv: "ResNet v1.5")
  stage{i}/block0/proj_conv, proj_bn               (projection shortcut when shape changes)
Conversion from torchvision: `conv1`→`stem/conv`, `bn1`→`stem/bn`, `layer{i}.{j}.convK`→
`stage{i}/block{j}/convK`, `downsample.0/.1`→`proj_conv`/`proj_bn`; conv weights transposed
(O, I, H, W)→(H, W, I, O) to `kernel`; BN `weight`/`bias`→`scale`/`bias` (params), and
`running_mean`/`running_var`→`mean`/`var` (batch_stats); the `fc` head is not used.
`lix_jax.models.pretrained` does this for timm / torchvision checkpoints (.safetensors / .pth); at
width 1.0 with the "imagenet" stem the stage outputs equal torchvision's (tests/test_pretrained.py).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
STEMS = ("deep", "imagenet")
STAGE_BASE_CHANNELS = (64, 128, 256, 512)

# He-normal, fan-out, as torchvision initialises ResNet convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def scaled_channels(base: int, width: float) -> int:
  """Channel count of a layer with `base` channels at width multiplier `width` (at least 8)."""
  return max(8, int(round(base * width)))


def batch_norm(train: bool, *, axis_name: str | None, dtype: Any, name: str,
               zero_scale: bool = False) -> nn.BatchNorm:
  """BatchNorm shared by all models: momentum 0.9, eps 1e-5, float32 params and statistics.

  With `axis_name` set, batch statistics are averaged over that mapped axis (cross-device BN);
  it must then be called inside `shard_map`/`pmap` binding that axis.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      axis_name=axis_name, dtype=dtype, param_dtype=jnp.float32, name=name,
                      scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones)


def conv(features: int, kernel: int, *, stride: int = 1, dtype: Any, name: str,
         use_bias: bool = False) -> nn.Conv:
  """A k×k convolution with symmetric padding k//2 (as PyTorch), so converted weights line up."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, kernel_init=conv_init,
                 dtype=dtype, param_dtype=jnp.float32, name=name)


def _max_pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class BasicBlock(nn.Module):
  """ResNet-18/34 block: two 3×3 convs; the last BN's scale starts at 0 (Goyal et al. 2017)."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = functools.partial(batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype)
    y = conv(self.features, 3, stride=self.stride, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(bn(name="bn1")(y))
    y = conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    y = bn(name="bn2", zero_scale=True)(y)
    return nn.relu(y + _shortcut(x, y.shape[-1], self.stride, bn, self.dtype))


class Bottleneck(nn.Module):
  """ResNet-50 block: 1×1 → 3×3 (strided) → 1×1 (×4 channels)."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = functools.partial(batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype)
    y = nn.relu(bn(name="bn1")(conv(self.features, 1, dtype=self.dtype, name="conv1")(x)))
    y = conv(self.features, 3, stride=self.stride, dtype=self.dtype, name="conv2")(y)
    y = nn.relu(bn(name="bn2")(y))
    y = conv(self.features * 4, 1, dtype=self.dtype, name="conv3")(y)
    y = bn(name="bn3", zero_scale=True)(y)
    return nn.relu(y + _shortcut(x, y.shape[-1], self.stride, bn, self.dtype))


def _shortcut(x: jax.Array, features: int, stride: int, bn: Callable, dtype: Any) -> jax.Array:
  """Identity, or a strided 1×1 conv + BN where the shape changes (called inside a block)."""
  if x.shape[-1] == features and stride == 1:
    return x
  x = conv(features, 1, stride=stride, dtype=dtype, name="proj_conv")(x)
  return bn(name="proj_bn")(x)


class Stem(nn.Module):
  """Stride-4 stem.

  "imagenet": 7×7/2 conv, BN, ReLU, 3×3/2 max-pool (64·width channels).
  "deep": 3×3/2, 3×3, 3×3 convs with BN+ReLU (32, 32, 64 ·width channels), then the max-pool.
  """
  kind: str = "imagenet"
  width: float = 1.0
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = functools.partial(batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype)
    if self.kind == "imagenet":
      x = conv(scaled_channels(64, self.width), 7, stride=2, dtype=self.dtype, name="conv")(x)
      x = nn.relu(bn(name="bn")(x))
    elif self.kind == "deep":
      for i, (base, stride) in enumerate(((32, 2), (32, 1), (64, 1)), start=1):
        x = conv(scaled_channels(base, self.width), 3, stride=stride, dtype=self.dtype,
                 name=f"conv{i}")(x)
        x = nn.relu(bn(name=f"bn{i}")(x))
    else:
      raise KeyError(f"Unknown stem {self.kind!r}. Available stems are: {list(STEMS)}")
    return _max_pool(x)


class ResNetStage(nn.Module):
  """`num_blocks` blocks; the first one strides by `stride` and changes the width."""
  block_cls: type
  num_blocks: int
  features: int
  stride: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for j in range(self.num_blocks):
      x = self.block_cls(self.features, stride=self.stride if j == 0 else 1, dtype=self.dtype,
                         bn_axis_name=self.bn_axis_name, name=f"block{j}")(x, train)
    return x


class ResNet(nn.Module):
  """ResNet feature extractor.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block_cls: `BasicBlock` or `Bottleneck`.
    width: channel multiplier; a layer with C channels gets max(8, round(C·width)).
    stem: "imagenet" or "deep" (both reach stride 4).
    dtype: compute dtype (params stay float32).
    bn_axis_name: mapped axis to sync BN statistics over (None on one device).
  """
  stage_sizes: Sequence[int]
  block_cls: type
  width: float = 1.0
  stem: str = "imagenet"
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  def setup(self):
    if self.stem not in STEMS:
      raise KeyError(f"Unknown stem {self.stem!r}. Available stems are: {list(STEMS)}")
    self.stem_module = Stem(self.stem, self.width, self.dtype, self.bn_axis_name, name="stem")
    self.stages = [
        ResNetStage(self.block_cls, n, scaled_channels(base, self.width), 1 if i == 0 else 2,
                    self.dtype, self.bn_axis_name, name=f"stage{i + 1}")
        for i, (n, base) in enumerate(zip(self.stage_sizes, STAGE_BASE_CHANNELS))]

  @property
  def stage_channels(self) -> tuple[int, ...]:
    """Output channels of the four stages."""
    return tuple(scaled_channels(b, self.width) * self.block_cls.expansion
                 for b in STAGE_BASE_CHANNELS)

  def embed(self, x: jax.Array, train: bool) -> jax.Array:
    """Runs the stem: [B, H, W, C] → [B, H/4, W/4, C0]."""
    return self.stem_module(x, train)

  def stage(self, index: int, x: jax.Array, train: bool) -> jax.Array:
    """Runs stage `index` (0-based); stage i has stride 4·2^i."""
    return self.stages[index](x, train)

  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    """Returns the stage features [B, H/s, W/s, C_i] for s = 4, 8, 16, 32 (H, W multiples of 32)."""
    x = self.embed(x, train)
    feats = []
    for i in range(len(self.stages)):
      x = self.stage(i, x, train)
      feats.append(x)
    return feats


BACKBONES: dict[str, Callable[..., ResNet]] = {
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck),
}


def make_backbone(backbone: str, **kwargs) -> ResNet:
  """Builds `backbone` (a key of `BACKBONES`) with ResNet attributes `kwargs` (and `name`)."""
  if backbone not in BACKBONES:
    raise KeyError(f"Unknown backbone {backbone!r}. Available backbones are: {sorted(BACKBONES)}")
  return BACKBONES[backbone](**kwargs)


# ----------------------------------------------------------------------------------------------
# Converted weights: flat .npz files with "a/b/c" keys.


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """Flattens a nested dict of arrays to {"a/b/c": ndarray}."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(flatten_tree(value, path))
    else:
      flat[path] = np.asarray(value)
  return flat


def save_npz(tree: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes a nested dict of arrays as an .npz with "a/b/c" keys (what `load_pretrained` reads)."""
  np.savez(path, **flatten_tree(tree))


def load_pretrained(params: Mapping[str, Any], path: str | os.PathLike, *, prefix: str = "",
                    source_prefix: str = "", exclude: Sequence[str] = ()) -> dict[str, Any]:
  """Returns `params` with the subtree at `prefix` replaced by the arrays of a local .npz file.

  Every leaf under `prefix` (say "backbone/stage1/block0/conv1/kernel") is read from the file key
  `source_prefix` + its path relative to `prefix` ("stage1/block0/conv1/kernel"); keys of the file
  that the subtree does not use (e.g. a classifier head) are ignored. Nothing is downloaded.

  Args:
    params: a nested dict (e.g. `variables["params"]`, or `variables["batch_stats"]`).
    path: the .npz file.
    prefix: "/"-joined path of the subtree to fill, e.g. "backbone" (Student) or "fusion/rgb"
      (Teacher); "" fills the whole tree.
    source_prefix: prefix of the file's keys, e.g. "params/" if the file holds several collections.
    exclude: relative paths (or path prefixes) left as they are, e.g. ("stem/conv",) for an X
      encoder whose first conv has a different number of input channels.

  Returns:
    A new nested dict (float32 leaves stay float32: values are cast to each leaf's dtype).

  Raises:
    FileNotFoundError: no file at `path`.
    KeyError: `prefix` is not in `params`, or leaves are missing from the file (all are named).
    ValueError: shape mismatches (each named with both shapes).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Pretrained weights file not found: {path}")
  subtree: Any = params
  for part in [p for p in prefix.split("/") if p]:
    if not isinstance(subtree, Mapping) or part not in subtree:
      raise KeyError(f"Prefix {prefix!r} is not in the params tree (no {part!r}).")
    subtree = subtree[part]
  with np.load(path) as f:
    source = {k: f[k] for k in f.files}
  targets = flatten_tree(subtree)
  excluded = lambda k: any(k == e or k.startswith(e.rstrip("/") + "/") for e in exclude)
  missing, mismatched, loaded = [], [], {}
  for key, leaf in targets.items():
    if excluded(key):
      continue
    src_key = source_prefix + key
    if src_key not in source:
      missing.append(src_key)
    elif source[src_key].shape != leaf.shape:
      mismatched.append(f"{src_key}: file {source[src_key].shape} vs model {leaf.shape}")
    else:
      loaded[key] = source[src_key].astype(leaf.dtype)
  if missing:
    raise KeyError(f"{path}: {len(missing)} key(s) missing for prefix {prefix!r}: {missing}")
  if mismatched:
    raise ValueError(f"{path}: shape mismatch for prefix {prefix!r}: {mismatched}")

  def rebuild(tree: Mapping[str, Any], rel: str) -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
      p = f"{rel}/{k}" if rel else str(k)
      if isinstance(v, Mapping):
        out[k] = rebuild(v, p)
      else:
        out[k] = jnp.asarray(loaded[p]) if p in loaded else v
    return out

  new_sub = rebuild(subtree, "")
  if not prefix.strip("/"):
    return new_sub

  def replace(tree: Mapping[str, Any], parts: list[str]) -> dict[str, Any]:
    out = dict(tree)
    out[parts[0]] = new_sub if len(parts) == 1 else replace(tree[parts[0]], parts[1:])
    return out

  return replace(params, [p for p in prefix.split("/") if p])
