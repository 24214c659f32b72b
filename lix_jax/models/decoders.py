"""Light FPN decoder to stride 4, 1×1 classifier and bilinear logit upsampling (DESIGN §4)."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lix_jax.models.backbones import batch_norm, conv, conv_init

DEFAULT_DECODER_CHANNELS = 128  # at width 1.0; scaled by the width multiplier when not given


def resize_to(x: jax.Array, hw: tuple[int, int], method: str = "bilinear") -> jax.Array:
  """Resizes NHWC `x` to spatial size `hw` (half-pixel centres, i.e. align_corners=False)."""
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), method=method)


class FPNDecoder(nn.Module):
  """Feature-pyramid decoder: lateral 1×1 convs, top-down bilinear upsample + add, then a 3×3
  conv + BN + ReLU on the finest level.

  Attributes:
    channels: width of every pyramid level and of the output.
    dtype: compute dtype (params float32).
    bn_axis_name: axis for cross-device BN statistics.
  """
  channels: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, feats: Sequence[jax.Array], train: bool) -> jax.Array:
    """Maps stage features (finest first, strides 4…32) to [B, H/4, W/4, channels]."""
    laterals = [
        nn.Conv(self.channels, (1, 1), kernel_init=conv_init, dtype=self.dtype,
                param_dtype=jnp.float32, name=f"lateral{i + 1}")(f)
        for i, f in enumerate(feats)]
    y = laterals[-1]
    for lateral in reversed(laterals[:-1]):
      y = resize_to(y, lateral.shape[1:3]).astype(lateral.dtype) + lateral
    y = conv(self.channels, 3, dtype=self.dtype, name="smooth")(y)
    return nn.relu(batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype,
                              name="smooth_bn")(y))


class Classifier(nn.Module):
  """1×1 conv to `num_classes` logits, returned in float32 whatever the compute dtype."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                name="conv")(x)
    return y.astype(jnp.float32)


def upsample_logits(logits: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Bilinear upsampling of [B, h, w, K] logits to [B, *hw, K], in float32."""
  return resize_to(logits.astype(jnp.float32), hw, "bilinear")
