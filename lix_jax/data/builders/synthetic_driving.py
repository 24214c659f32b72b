"""`synthetic_driving`: the embedded default dataset — procedural, ray-cast street scenes (DESIGN §5).

No download: every example is generated from (config seed, split, index) by
`synthetic_render.generate_example` (layouts in `synthetic_scene`). Classes (train ids; 255 = ignore,
used for surfaces farther than 100 m):

  ==  ==========  ==================================================================
  id  name        geometry
  ==  ==========  ==================================================================
  0   road        ground plane Y = 0 between the curbs
  1   sidewalk    raised slab (curb 0.10-0.20 m) beside the road, its curb face too
  2   terrain     flat ground at sidewalk height beyond the sidewalk (front gardens)
  3   building    facades parallel to the street, 4-24 m high
  4   wall        garden walls perpendicular to the street (facing the camera), 1-3 m
  5   vegetation  trees (trunk + crown cylinders), hedges
  6   pole        thin vertical cylinders near the curb
  7   car         body + glass cabin boxes, parked or in traffic
  8   person      legs / torso / head cylinders, mostly on sidewalks
  9   sky         no hit
  ==  ==========  ==================================================================

Road/sidewalk, terrain/vegetation and wall/building draw their albedo and texture from the same
per-scene material family, so RGB alone is ambiguous there while depth / normals separate them.
Camera: KITTI's focal length scaled to the width (fx = fy = 721.5 * W / 1242), principal point at the
image centre, 1.65 m above the road, small random yaw / pitch; baseline 0.54 m. Depth: camera z with
0.03-0.05 % relative noise (+0.001-0.002 % per metre), 1/256 m steps, 0.3-2 % dropouts, holes on
glass, 0 beyond 80 m and in the sky.

Configs (all 64x192 images, seed 0):
  default: 200 train (KITTI semantics' scale), 2000 unlabeled, 100 validation, 200 test;
           builds in well under a minute on one core.
  tiny:    32 train, 32 unlabeled, 16 validation, 16 test (tests; builds in about a second).
"""
from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from lix_jax.data.builders import synthetic_render, synthetic_scene
from lix_jax.data.builders.common import LixBuilder, check_example

CLASS_NAMES = synthetic_scene.CLASS_NAMES
# Split -> integer id: part of the generator's seed, so splits never share a scene.
SPLIT_IDS = {"train": 0, "unlabeled": 1, "validation": 2, "test": 3}


@dataclasses.dataclass
class SyntheticDrivingConfig(tfds.core.BuilderConfig):
  """Image size, split sizes and seed of a synthetic_driving build."""
  height: int = 64
  width: int = 192
  num_train: int = 200
  num_unlabeled: int = 2000
  num_validation: int = 100
  num_test: int = 200
  seed: int = 0
  # `train` also holds the first `num_unlabeled_as_train` frames of the default `unlabeled` split,
  # with their labels: the unlabelled regime with every frame labelled (perfect pseudo-labels).
  num_unlabeled_as_train: int = 0


class SyntheticDriving(LixBuilder):
  """Procedural ray-cast street scenes with RGB, metric depth and 10-class labels."""

  name = "lix_synthetic_driving"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticDrivingConfig(name="default", description="200 labelled / 2000 unlabelled, 64x192."),
      SyntheticDrivingConfig(name="tiny", description="A handful of images for tests, 64x192.",
                             num_train=32, num_unlabeled=32, num_validation=16, num_test=16),
      SyntheticDrivingConfig(
          name="all_labeled", description="default's 200 train + 2000 unlabelled frames, all "
          "labelled, as `train` (the unlabelled regime with perfect pseudo-labels).",
          num_unlabeled_as_train=2000),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  CLASS_NAMES = CLASS_NAMES

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    sizes = {"train": cfg.num_train, "unlabeled": cfg.num_unlabeled,
             "validation": cfg.num_validation, "test": cfg.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _scenes(self, split: str, num_examples: int):
    """(record id, generator split id, index) of `split`'s examples."""
    scenes = [(f"{split}/{i:06d}", SPLIT_IDS[split], i) for i in range(num_examples)]
    if split == "train":
      extra = self.builder_config.num_unlabeled_as_train
      scenes += [(f"unlabeled/{i:06d}", SPLIT_IDS["unlabeled"], i) for i in range(extra)]
    return scenes

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    for record_id, split_id, index in self._scenes(split, num_examples):
      ex = synthetic_render.generate_example(cfg.seed, split_id, index, cfg.height, cfg.width)
      check_example(record_id, ex["image"], ex["depth"], ex["label"], len(CLASS_NAMES))
      yield record_id, {
          "image": ex["image"], "depth": ex["depth"], "label": ex["label"],
          "intrinsics": ex["intrinsics"], "baseline": ex["baseline"], "id": record_id,
      }
