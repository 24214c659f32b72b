"""What every lix_jax dataset builder shares: the example features and a TF-free base class.

Every builder writes ArrayRecord files whose examples have exactly these fields (DESIGN §5):
  image       uint8   [H, W, 3]
  depth       float32 [H, W]    metres, 0 = missing
  label       uint8   [H, W]    train ids, 255 = ignore
  intrinsics  float32 [4]       fx, fy, cx, cy (pixels)
  baseline    float32 []        stereo baseline in metres (0 when unknown)
  id          string            a stable, human-readable record name (file stem, scene/frame, ...)

Images are stored as zlib-compressed uint8 tensors rather than `tfds.features.Image`, whose encoder
needs TensorFlow. Shapes are variable so that one spec serves every dataset.
"""
from __future__ import annotations

import importlib.resources
import sys

import etils.epath
import numpy as np
import tensorflow_datasets as tfds

# TFDS 4.9.10 imports `importlib_resources` for builders in package modules but only declares it
# for Python < 3.9 (STACK_FACTS §1); the stdlib module is API-compatible for what it uses.
sys.modules.setdefault("importlib_resources", importlib.resources)

from lix_jax import IGNORE_INDEX  # noqa: F401  (re-exported; defined once in lix_jax/__init__.py)


def example_features() -> tfds.features.FeaturesDict:
  """The FeaturesDict shared by all lix_jax builders (see the module docstring)."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
      "depth": tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib"),
      "label": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
      "intrinsics": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "baseline": tfds.features.Scalar(dtype=np.float32),
      "id": tfds.features.Text(),
  })


class LixBuilder(tfds.core.GeneratorBasedBuilder):
  """Base class of the lix_jax builders (abstract, so TFDS does not register it).

  Subclasses set a unique `name` (prefixed `lix_`, so nothing shadows or collides with the TFDS
  catalogue), `VERSION`, `BUILDER_CONFIGS`, `CLASS_NAMES`, and implement `_split_generators` and
  `_generate_examples`. Records are written in the order they are yielded.
  """

  # Avoids the importlib_resources lookup in `DatasetBuilder.code_path` (STACK_FACTS §1).
  code_path = etils.epath.Path(__file__)
  CLASS_NAMES: tuple[str, ...] = ()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or "").strip().split("\n")[0],
        features=example_features(),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(class_names=list(self.CLASS_NAMES)),
    )


def check_example(record_id: str, image: np.ndarray, depth: np.ndarray | None,
                  label: np.ndarray | None, num_classes: int) -> None:
  """Raises ValueError naming `record_id` when an example's arrays are inconsistent.

  Checks: image is uint8 HxWx3; depth (if given) is HxW, finite and >= 0; label (if given) is HxW
  with ids in [0, num_classes) or IGNORE_INDEX.
  """
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"{record_id}: image must be [H, W, 3], got shape {image.shape}")
  hw = image.shape[:2]
  if depth is not None:
    if depth.shape != hw:
      raise ValueError(f"{record_id}: depth shape {depth.shape} does not match image {hw}")
    if not np.all(np.isfinite(depth)):
      raise ValueError(f"{record_id}: depth has non-finite values")
    if np.any(depth < 0):
      raise ValueError(f"{record_id}: depth has negative values (min {float(depth.min())})")
  if label is not None:
    if label.shape != hw:
      raise ValueError(f"{record_id}: label shape {label.shape} does not match image {hw}")
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if np.any(bad):
      raise ValueError(f"{record_id}: label ids {sorted(set(np.unique(label[bad]).tolist()))} "
                       f"are outside [0, {num_classes}) and not {IGNORE_INDEX}")
