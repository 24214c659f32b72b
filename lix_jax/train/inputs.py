"""The trainer's input side: a split's checked source, per-host iterators, the step's batch.

Every split is read through `source` (built on first use, process 0 first, its first and last
records read at once so that a broken file is named now, not in a data thread later); the train
iterators are per host (`train.batch_size` is global); `next_batch` gives the keys a step reads.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import numpy as np

from lix_jax import data as data_lib
from lix_jax.data import pipeline


def class_names(config) -> tuple[str, ...]:
  return tuple(data_lib.BUILDERS[config.data.name].CLASS_NAMES)


def source(config, split: str):
  """The split's random-access source; on several processes, process 0 builds the files first."""
  get = functools.partial(data_lib.get_source, config.data.name, split,
                          data_dir=config.data.data_dir, manual_dir=config.data.root or None,
                          builder_config=config.data.builder_config or None)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    if jax.process_index() == 0:
      get()
    # Everybody waits until the ArrayRecord files exist (no concurrent writers on a shared disk).
    multihost_utils.sync_global_devices(f"lix_jax data {config.data.name} {split}")
  src = get()
  # Reading the first and last records finds truncated or garbled files now, with their names,
  # rather than as a reader error in a data thread at some later step.
  try:
    for i in sorted({0, len(src) - 1} if len(src) else set()):
      src[i]
  except Exception as e:  # noqa: BLE001  (any reader error means the same thing: broken files)
    info = getattr(src, "dataset_info", None)
    files = ([str(f) for f in info.splits[split].filepaths] if info is not None
             else [os.path.join(config.data.data_dir, config.data.name)])
    raise ValueError(f"{', '.join(files)}: split {split!r} of {config.data.name} cannot be read "
                     f"({type(e).__name__}: {e}); delete these files to rebuild them") from e
  return src


def check_has_depth(config, split: str = "train", num_examples: int = 4) -> None:
  """A teacher needs X: refuse datasets whose depth is missing (all 0), e.g. nuImages without maps."""
  src = source(config, split)
  if not any(np.any(src[i]["depth"] > 0) for i in range(min(num_examples, len(src)))):
    raise ValueError(f"data.name={config.data.name!r} split {split!r} has no depth (all-zero depth "
                     f"maps): a teacher needs X = {config.data.x_modality}. Add the dataset's depth "
                     "files (see its builder) or train a student only (mode=train_student).")


def per_host(global_size: int, name: str) -> int:
  if global_size % jax.process_count():
    raise ValueError(f"{name}={global_size} is not divisible by the {jax.process_count()} processes")
  return global_size // jax.process_count()


def make_train_iters(config, role: str) -> dict[str, Any]:
  """The labelled (and, for distillation with `distill.unlabeled_split`, unlabelled) iterators.

  Students (plain and distilled) get the data recipe (`data.photometric`, `data.cutmix_prob`) on
  both streams; a teacher gets its own (`teacher.photometric`, `teacher.cutmix_prob`; off by
  default) and never reads the students' (`config.TEACHER_IGNORES`).
  """
  recipe = config.teacher if role == "teacher" else config.data
  common = dict(x_modality=config.data.x_modality, crop_hw=tuple(config.data.crop_hw),
                scale_range=tuple(config.data.scale_range), flip=config.data.flip,
                num_threads=config.data.num_threads, num_workers=config.data.num_workers,
                photometric=recipe.photometric, cutmix_prob=recipe.cutmix_prob)
  iters = {"train": iter(pipeline.train_dataset(
      source(config, "train"), batch_size=per_host(config.train.batch_size, "train.batch_size"),
      seed=config.seed, **common))}
  if role == "distill" and config.distill.unlabeled_split:
    iters["unlabeled"] = iter(pipeline.unlabeled_dataset(
        source(config, config.distill.unlabeled_split),
        batch_size=per_host(config.distill.unlabeled_batch_size, "distill.unlabeled_batch_size"),
        seed=config.seed + 1, **common))
  return iters


def next_batch(iters) -> dict[str, np.ndarray]:
  """The step's batch: labelled `image`, `x`, `label`, `valid` (the crops' padding mask) and, with
  an unlabelled stream, `unlabeled_image`, `unlabeled_x`, `unlabeled_valid`."""
  batch = {k: v for k, v in next(iters["train"]).items() if k in ("image", "x", "label", "valid")}
  if "unlabeled" in iters:
    u = next(iters["unlabeled"])
    batch["unlabeled_image"], batch["unlabeled_x"] = u["image"], u["x"]
    batch["unlabeled_valid"] = u["valid"]
  return batch
