"""Datasets: TFDS builders writing ArrayRecord, read TF-free with `tfds.data_source` (DESIGN §5).

`BUILDERS` maps the config name of each dataset to its builder class; `get_source` builds the
ArrayRecord files on first use and returns a random-access source whose items are dicts of NumPy
arrays (`image`, `depth`, `label`, `intrinsics`, `baseline`, `id`).
"""
from __future__ import annotations

import importlib
import os

import tensorflow_datasets as tfds

from lix_jax.data.builders.common import IGNORE_INDEX  # noqa: F401  (re-export)

# name -> "module:Class", imported lazily so that a missing optional reader never breaks the rest.
_BUILDER_PATHS = {
    "synthetic_driving": "lix_jax.data.builders.synthetic_driving:SyntheticDriving",
    "kitti_semantics": "lix_jax.data.builders.kitti_semantics:KittiSemantics",
    "vkitti2": "lix_jax.data.builders.vkitti2:VirtualKitti2",
    "cityscapes": "lix_jax.data.builders.cityscapes:LixCityscapes",
    "nuimages": "lix_jax.data.builders.nuimages:NuImages",
}


class _Builders(dict):
  """A name -> builder-class mapping that imports each builder module on first access."""

  def __missing__(self, name):
    if name not in _BUILDER_PATHS:
      raise KeyError(f"Unknown dataset {name!r}. Available datasets are: {sorted(_BUILDER_PATHS)}")
    module, cls = _BUILDER_PATHS[name].split(":")
    builder_cls = getattr(importlib.import_module(module), cls)
    self[name] = builder_cls
    return builder_cls

  def __contains__(self, name):
    return name in _BUILDER_PATHS

  def __iter__(self):
    return iter(_BUILDER_PATHS)

  def __len__(self):
    return len(_BUILDER_PATHS)

  def keys(self):
    return _BUILDER_PATHS.keys()


BUILDERS = _Builders()


def get_builder(name: str, *, data_dir: str, builder_config: str | None = None):
  """Returns the (not yet prepared) TFDS builder of dataset `name`."""
  builder_cls = BUILDERS[name]
  return builder_cls(data_dir=os.fspath(data_dir), config=builder_config, file_format="array_record")


def get_source(name: str, split: str, *, data_dir: str, manual_dir: str | None = None,
               builder_config: str | None = None):
  """Builds dataset `name` under `data_dir` if absent and returns the split's `tfds.data_source`.

  Args:
    name: a key of `BUILDERS`.
    split: e.g. "train", "unlabeled", "validation", "test".
    data_dir: where ArrayRecord files are written and read.
    manual_dir: the user's local copy of a real dataset in its official layout (TFDS `manual_dir`).
    builder_config: the builder config name (e.g. "tiny"); None = the builder's default.

  Returns:
    A random-access source (`len`, `src[i]` -> dict of NumPy arrays).
  """
  builder = get_builder(name, data_dir=data_dir, builder_config=builder_config)
  if split not in builder.info.splits or not builder.is_prepared():
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    tfds.disable_progress_bar()
    builder.download_and_prepare(download_config=download_config)
  if split not in builder.info.splits:
    raise KeyError(f"Dataset {name!r} (config {builder.builder_config.name if builder.builder_config else None!r}) "
                   f"has no split {split!r}; it has {sorted(builder.info.splits)}")
  return builder.as_data_source(split=split)
