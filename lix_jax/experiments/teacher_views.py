r"""How a trained teacher answers the distillation recipe's views (DESIGN §5; issue 33).

Function matching asks the teacher for its function on the views the recipe makes (colour jitter,
`data.photometric`; CutMix boxes, `data.cutmix_prob`). A teacher that never trained on such views
may answer them worse than the plain ones, and then the students learn its mistakes. This scores a
teacher run on one split under each view, the whole image at native size (no crop, no flip, so
only the recipe differs from evaluation):

  python -m lix_jax.experiments.teacher_views WORKDIR [--split=validation] [--photometric=0.5]
      [--seed=0] [--out=FILE.csv]

Rows: `plain` (what evaluation scores), `photometric` (every image jittered at strength s, drawn
as the pipeline draws it), `cutmix` (every image gets the box of `recipe.cutmix_box` at
probability 1 from the next image of the split, labels pasted too). Columns: mIoU against the
view's labels, and `agreement`, the share of the image's own pixels (outside the box) whose
arg-max equals the plain view's. The run's stored `config.json` gives the network and the data.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import jax
import numpy as np

from lix_jax import config as config_lib
from lix_jax.data import pipeline, recipe
from lix_jax.experiments import results_csv
from lix_jax.train import inputs, reliability
from lix_jax.train import metrics as metrics_lib
from lix_jax.train import task as task_lib

VIEWS = ("plain", "photometric", "cutmix")
COLUMNS = ["view", "split", "photometric", "miou", "pixel_acc", "agreement"]


def _view(example, index: int, *, seed: int, photometric: float, x_modality: str) -> dict:
  """The whole image as a training view (crop = image, no flip, no scale) with the jitter only."""
  h, w = np.asarray(example["image"]).shape[:2]
  return pipeline.process_example(example, np.random.default_rng([seed, index]),
                                  x_modality=x_modality, crop_hw=(h, w), scale_range=(1.0, 1.0),
                                  flip_prob=0.0, photometric=photometric)


def score(workdir: str, *, split: str = "validation", photometric: float = 0.5,
          seed: int = 0) -> list[dict[str, Any]]:
  """One row per view of `VIEWS` (module docstring) for the teacher run in `workdir`."""
  stored = reliability.stored_config(workdir)
  if stored is None:
    raise FileNotFoundError(f"{workdir}: no config.json; give the workdir of a teacher run")
  config = config_lib.from_stored(stored)
  recipe.check_recipe(photometric, 1.0)
  model, variables = task_lib.load_variables(config, workdir, "teacher")
  forward = jax.jit(lambda v, image, x: model.apply(v, image, x, train=False)[0])
  source = inputs.source(config, split)
  k = len(inputs.class_names(config))
  kw = dict(seed=seed, x_modality=config.data.x_modality)
  confusion = {name: np.zeros((k, k), np.int64) for name in VIEWS}
  agree = {name: [0, 0] for name in VIEWS}
  plain_views = [_view(source[i], i, photometric=0.0, **kw) for i in range(len(source))]
  for i, plain in enumerate(plain_views):
    partner = plain_views[(i + 1) % len(plain_views)]
    if partner["label"].shape != plain["label"].shape:
      raise ValueError(f"{split} example {i}: size {plain['label'].shape} differs from the next "
                       f"example's {partner['label'].shape}; CutMix pastes within equal sizes")
    box = recipe.cutmix_box(i, seed=seed, prob=1.0, hw=plain["label"].shape)
    own = np.ones(plain["label"].shape, bool)
    y0, x0, bh, bw = box
    own[y0:y0 + bh, x0:x0 + bw] = False
    views = {"plain": plain,
             "photometric": _view(source[i], i, photometric=photometric, **kw),
             "cutmix": recipe.paste(plain, partner, box)}
    reference = None
    for name, view in views.items():
      pred = np.asarray(forward(variables, view["image"][None], view["x"][None]))[0].argmax(-1)
      reference = pred if reference is None else reference
      labelled = view["label"] != pipeline.IGNORE_INDEX
      confusion[name] += np.bincount(k * view["label"][labelled] + pred[labelled],
                                     minlength=k * k).reshape(k, k)
      mask = own if name == "cutmix" else np.ones_like(own)
      agree[name][0] += int(np.sum((pred == reference) & mask))
      agree[name][1] += int(mask.sum())
  rows = []
  for name in VIEWS:
    metrics = metrics_lib.segmentation_metrics(confusion[name])
    rows.append({"view": name, "split": split,
                 "photometric": photometric if name == "photometric" else 0.0,
                 "miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"],
                 "agreement": agree[name][0] / agree[name][1]})
  return rows


def main(argv: list[str]) -> None:
  """`python -m lix_jax.experiments.teacher_views WORKDIR [--split=S] [--photometric=s]
  [--seed=N] [--out=FILE.csv]`: prints the rows as a Markdown table."""
  options = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--"))
  allowed = ("split", "photometric", "seed", "out")
  unknown = sorted(k for k, v in options.items() if k not in allowed or not v)
  paths = [a for a in argv if not a.startswith("--")]
  if unknown or len(paths) != 1:
    raise SystemExit(f"usage: teacher_views WORKDIR [--split=S] [--photometric=s] [--seed=N] "
                     f"[--out=FILE.csv] (unknown or empty options: {unknown}, workdirs: {paths})")
  rows = score(paths[0], split=options.get("split", "validation"),
               photometric=float(options.get("photometric", 0.5)), seed=int(options.get("seed", 0)))
  if "out" in options:
    os.makedirs(os.path.dirname(os.path.abspath(options["out"])), exist_ok=True)
    results_csv.write_csv(options["out"], rows, COLUMNS)
  print("| view | mIoU (%) | pixel acc. (%) | agrees with plain (%) |\n|---|---|---|---|")
  for r in rows:
    label = f"photometric {r['photometric']}" if r["view"] == "photometric" else r["view"]
    print(f"| {label} | {100 * r['miou']:.2f} | {100 * r['pixel_acc']:.2f} | "
          f"{100 * r['agreement']:.2f} |")


if __name__ == "__main__":
  main(sys.argv[1:])
