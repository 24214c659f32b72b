"""Models: ResNet backbones, RGB-X fusion, FPN decoder, Teacher/Student (DESIGN §4).

`build(config, num_classes=..., ...)` makes a `Teacher` or `Student` from a config section with
keys (all optional except as noted): `backbone` ("resnet18" | "resnet34" | "resnet50"), `width`,
`fusion` (teacher only: "intermediate" | "late"), `fusion_block` ("gated" | "add"), `stem`
("imagenet" | "deep"), `decoder_channels` (None = 128·width), `dtype` ("float32" | "bfloat16").
Other keys of the section are ignored (they belong to the trainer; `pretrained`, ImageNet weights,
is read by `load_imagenet_encoders` in `lix_jax.models.pretrained`).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from lix_jax.models.backbones import BACKBONES, STEMS, load_pretrained, save_npz  # noqa: F401
from lix_jax.models.fusion import FUSION_BLOCKS, FUSIONS  # noqa: F401
from lix_jax.models.networks import (  # noqa: F401
    TAP_STRIDES, Adapters, Student, Teacher, abstract_init, count_params, tap_channels, tap_shape)
from lix_jax.models.pretrained import (  # noqa: F401
    check_imagenet_fit, convert_torch_resnet, load_imagenet_encoders, read_torch_checkpoint)

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
KINDS = ("teacher", "student")


def _lookup(registry, value: str, what: str):
  if value not in registry:
    raise KeyError(f"Unknown {what} {value!r}. Available {what}s are: {sorted(registry)}")
  return registry[value] if isinstance(registry, Mapping) else value


def build(model_config: Mapping[str, Any], *, num_classes: int, x_channels: int | None = None,
          kind: str | None = None, bn_axis_name: str | None = None) -> Teacher | Student:
  """Builds a Teacher or Student from a `ConfigDict` (or dict) section such as `config.teacher`.

  Args:
    model_config: the section (keys in the module docstring).
    num_classes: K.
    x_channels: channels of X; required for a teacher.
    kind: "teacher" or "student"; None infers teacher iff the section has a `fusion` key.
    bn_axis_name: "data" for the sharded train step, None otherwise.

  Returns:
    An unbound Flax module.

  Raises:
    KeyError: an unknown backbone, fusion, fusion_block, stem or dtype (valid names listed).
    ValueError: an unknown kind, or a teacher without `x_channels`.
  """
  get = lambda key, default: (model_config[key] if key in model_config
                              and model_config[key] is not None else default)
  if kind is None:
    kind = "teacher" if "fusion" in model_config else "student"
  if kind not in KINDS:
    raise ValueError(f"Unknown model kind {kind!r}. Available kinds are: {list(KINDS)}")
  _lookup(BACKBONES, get("backbone", "resnet18"), "backbone")
  common = dict(
      num_classes=int(num_classes),
      backbone=get("backbone", "resnet18"),
      width=float(get("width", 1.0)),
      stem=_lookup(STEMS, get("stem", "imagenet"), "stem"),
      decoder_channels=get("decoder_channels", None),
      dtype=_lookup(DTYPES, get("dtype", "float32"), "dtype"),
      bn_axis_name=bn_axis_name)
  if kind == "student":
    return Student(**common)
  if x_channels is None:
    raise ValueError("build(kind='teacher') needs x_channels "
                     "(1 for depth/disparity, 3 for normals)")
  fusion = get("fusion", "intermediate")
  _lookup(FUSIONS, fusion, "fusion")
  fusion_block = get("fusion_block", "gated")
  _lookup(FUSION_BLOCKS, fusion_block, "fusion_block")
  return Teacher(x_channels=int(x_channels), fusion=fusion, fusion_block=fusion_block, **common)
