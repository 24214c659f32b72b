"""RGB-X fusion for the duplex-encoder teacher (DESIGN §4).

* Intermediate fusion (`IntermediateFusion`): an RGB and an X encoder; after every stage the X
  features are fused into the RGB stream by a fusion block and the fused stream feeds the next RGB
  stage (the X stream runs on unfused), as in SNE-RoadSeg / RoadFormer-style duplex encoders. One
  FPN decoder reads the fused stage features.
* Late fusion (`LateFusion`): two full encoder-decoder branches; their decoder features are
  concatenated and fused by a 1×1 conv + BN + ReLU.

Both map (image, x) with H, W multiples of 32 to (decoder feature [B, H/4, W/4, D], the four
stage taps); for late fusion a stage tap is the sum of the two branches' stage features.

Parameter paths: intermediate `rgb/…`, `x/…` (ResNets), `fuse{1..4}/…` (gated blocks only),
`decoder/…`; late `rgb/…`, `x/…`, `rgb_decoder/…`, `x_decoder/…`, `fuse_conv`, `fuse_bn`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lix_jax.models.backbones import batch_norm, conv, make_backbone, scaled_channels
from lix_jax.models.decoders import DEFAULT_DECODER_CHANNELS, FPNDecoder


class AddFusion(nn.Module):
  """`rgb + x` (no parameters)."""
  dtype: Any = jnp.float32

  def __call__(self, rgb: jax.Array, x: jax.Array) -> jax.Array:
    return rgb + x


class GatedFusion(nn.Module):
  """Squeeze-excite channel attention over concat(rgb, x): per-channel sigmoid gates g for the
  2C concatenated channels, output `g_rgb ⊙ rgb + g_x ⊙ x` ([B, h, w, C]).

  Attributes:
    reduction: hidden width = max(8, 2C // reduction).
  """
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, rgb: jax.Array, x: jax.Array) -> jax.Array:
    c = rgb.shape[-1]
    z = jnp.concatenate([rgb, x], axis=-1)
    # Global average pool in float32: a bf16 mean over many pixels loses precision.
    s = jnp.mean(z.astype(jnp.float32), axis=(1, 2))
    h = nn.relu(nn.Dense(max(8, 2 * c // self.reduction), dtype=self.dtype,
                         param_dtype=jnp.float32, name="squeeze")(s))
    g = nn.sigmoid(nn.Dense(2 * c, dtype=self.dtype, param_dtype=jnp.float32, name="excite")(h))
    g = g[:, None, None, :].astype(rgb.dtype)
    return g[..., :c] * rgb + g[..., c:] * x.astype(rgb.dtype)


FUSION_BLOCKS: dict[str, type[nn.Module]] = {"add": AddFusion, "gated": GatedFusion}


def get_fusion_block(name: str) -> type[nn.Module]:
  if name not in FUSION_BLOCKS:
    raise KeyError(f"Unknown fusion_block {name!r}. Available fusion blocks are: "
                   f"{sorted(FUSION_BLOCKS)}")
  return FUSION_BLOCKS[name]


class _FusionBase(nn.Module):
  """Shared attributes of the fusion trunks (see `networks.Teacher` for their meaning)."""
  backbone: str = "resnet18"
  width: float = 1.0
  stem: str = "imagenet"
  fusion_block: str = "gated"
  decoder_channels: int | None = None
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  def _backbone(self, name: str):
    return make_backbone(self.backbone, width=self.width, stem=self.stem, dtype=self.dtype,
                         bn_axis_name=self.bn_axis_name, name=name)

  def _decoder(self, name: str) -> FPNDecoder:
    return FPNDecoder(self._decoder_width(), dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                      name=name)

  def _decoder_width(self) -> int:
    if self.decoder_channels is not None:
      return int(self.decoder_channels)
    return scaled_channels(DEFAULT_DECODER_CHANNELS, self.width)


class IntermediateFusion(_FusionBase):
  """Duplex encoder with a fusion block after each of the four stages, then one FPN decoder."""

  @nn.compact
  def __call__(self, image: jax.Array, x: jax.Array, train: bool
               ) -> tuple[jax.Array, list[jax.Array]]:
    block_cls = get_fusion_block(self.fusion_block)
    rgb_net, x_net = self._backbone("rgb"), self._backbone("x")
    r, s = rgb_net.embed(image, train), x_net.embed(x, train)
    fused = []
    for i in range(4):
      r, s = rgb_net.stage(i, r, train), x_net.stage(i, s, train)
      r = block_cls(dtype=self.dtype, name=f"fuse{i + 1}")(r, s)
      fused.append(r)
    return self._decoder("decoder")(fused, train), fused


class LateFusion(_FusionBase):
  """Two encoder-decoder branches; decoder features fused by concat → 1×1 conv → BN → ReLU.
  `fusion_block` is not used (kept so both trunks take the same attributes)."""

  @nn.compact
  def __call__(self, image: jax.Array, x: jax.Array, train: bool
               ) -> tuple[jax.Array, list[jax.Array]]:
    get_fusion_block(self.fusion_block)  # validate the name even though it is unused here
    rgb_feats = self._backbone("rgb")(image, train)
    x_feats = self._backbone("x")(x, train)
    d_rgb = self._decoder("rgb_decoder")(rgb_feats, train)
    d_x = self._decoder("x_decoder")(x_feats, train)
    y = conv(self._decoder_width(), 1, dtype=self.dtype, name="fuse_conv")(
        jnp.concatenate([d_rgb, d_x], axis=-1))
    y = nn.relu(batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype,
                           name="fuse_bn")(y))
    return y, [a + b for a, b in zip(rgb_feats, x_feats)]


FUSIONS: dict[str, type[_FusionBase]] = {"intermediate": IntermediateFusion, "late": LateFusion}


def get_fusion(name: str) -> type[_FusionBase]:
  if name not in FUSIONS:
    raise KeyError(f"Unknown fusion {name!r}. Available fusions are: {sorted(FUSIONS)}")
  return FUSIONS[name]
