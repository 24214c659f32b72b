"""Every real format's shipped config, end to end through the CLI as users run it (issue 19 §3).

`configs/{kitti_semantics,cityscapes,vkitti2,nuimages}.py` on copies of synthetic scenes written in
each official layout at native size (`lix_jax.data.rehearse`): the config's pipeline
(`mode=pipeline`, the default of the real configs) converts the folder to ArrayRecord, trains the
RGB + depth teacher and a LIX student distilled from it, evaluates both on the native-size
validation and test images (asserted: the confusion matrix counts every labelled pixel of the
native-size labels) and exports them; results.csv and the prediction grid are written. Then, once
each (the command is the same for every format, and tests/test_cli.py runs it on synthetic data):
`mode=eval` of the LIX student on KITTI (the run's config.json supplies everything not on the
line), and `mode=predict` on a native-size Cityscapes image (the largest format).

Overrides: two steps, a small batch, `pipeline.methods=("lix",)` (the plain student's path is
format-independent: tests/test_cli.py), the tiny widths of `SMALL` and a small crop (CI time: the
shipped widths and crops compile for minutes on 2 cores; they run in tests/test_rehearsal_e2e.py);
everything else as shipped: scale range, SGD + poly, ImageNet stem.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from test_rehearsal_e2e import CROP, SMALL, assert_evaluated_at_native_size, cli, rehearsed

# Scenes written per format (KITTI: 4 train + 1 validation = test; the others: see rehearse.write)
# and where a native-size RGB image of each lies in its layout.
FORMATS = {"kitti_semantics": (5, "training/image_2/*.png"),
           "cityscapes": (2, "leftImg8bit/val/*/*_leftImg8bit.png"),
           "vkitti2": (2, "vkitti_2.0.3_rgb/*/clone/frames/rgb/*/rgb_*.jpg"),
           "nuimages": (2, "samples/*/*.jpg")}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_shipped_config_end_to_end_on_the_native_format(fmt, tmp_path):
  from lix_jax.data import rehearse  # noqa: PLC0415
  num, image_glob = FORMATS[fmt]
  root, data_dir = rehearsed(fmt, tmp_path, num)
  config = f"configs/{fmt}.py"
  run = tmp_path / "run"
  proc = cli(root, data_dir, run, "--config.mode=pipeline", '--config.pipeline.methods=("lix",)',
             "--config.pipeline.teacher_num_steps=2", *SMALL, CROP, config=config)
  for role in ("teacher", "distill"):
    assert f"{role} step 2/2 (100 %) loss" in proc.stderr, role  # Cluster-log lines (no tty).
  with open(run / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["model"], r["method"]) for r in rows] == [("teacher", "-"), ("student", "lix")]
  assert all(0.0 <= float(r["miou"]) <= 1.0 for r in rows), rows
  # The grid has the test split's images, fewer than `pipeline.num_predictions` (4) here.
  grid = np.asarray(Image.open(run / "predictions" / "grid.png"))
  assert grid.ndim == 3 and grid.shape[1] > grid.shape[0]
  teacher = json.loads((run / "teacher" / "config.json").read_text())
  assert teacher["data"]["name"] == fmt and teacher["teacher"]["stem"] == "imagenet"
  meta = json.loads((run / "teacher" / "export" / "meta.json").read_text())
  assert meta["x_modality"] == "depth"

  # Both networks were evaluated at native size: every labelled pixel of each split counted once.
  lix = run / "students" / "lix_seed0"
  stored = json.loads((lix / "config.json").read_text())
  assert stored["distill"]["method"] == "lix" and stored["student"]["width"] == 0.125
  for workdir in (run / "teacher", lix):
    assert_evaluated_at_native_size(workdir, root)

  if fmt == "kitti_semantics":  # Evaluation of the LIX student: config.json supplies the rest.
    proc = cli(root, data_dir, lix, "--config.mode=eval", config=config)
    line = [l for l in proc.stdout.splitlines() if "mIoU" in l][-1]
    assert re.match(rf"{stored['data']['test_split']} mIoU \d+\.\d+ %", line), line
    final = json.loads((lix / "final_metrics.json").read_text())
    assert abs(float(line.split()[2]) - 100 * final["test"]["miou"]) < 0.01, (line, final["test"])

  if fmt == "cityscapes":  # Prediction on a native-size image: a colourised PNG of its size.
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image = sorted(glob.glob(os.path.join(root, image_glob)))[0]
    shutil.copy(image, inputs)
    cli(root, data_dir, lix, "--config.mode=predict", f"--config.predict.input_dir={inputs}",
        config=config)
    stem = os.path.splitext(os.path.basename(image))[0]
    predicted = np.asarray(Image.open(lix / "predictions" / f"{stem}.png"))
    assert predicted.shape == (*rehearse.NATIVE_HW[fmt], 3) and predicted.dtype == np.uint8
