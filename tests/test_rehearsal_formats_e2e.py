"""The shipped configs of the other real formats, run through the CLI as users run them (issue 19 §3).

`configs/{cityscapes,vkitti2,nuimages}.py` on copies of synthetic scenes written in each official
layout at native size (`lix_jax.data.rehearse`): the builder converts the folder to ArrayRecord,
the RGB + depth teacher trains (one step; widths and crop shrunk, everything else as shipped:
scale range, SGD + poly, ImageNet stem), evaluates on the native-size validation and test images
and exports itself. KITTI's whole path (ImageNet student, LIX, predict) is in
tests/test_rehearsal_e2e.py.
"""
from __future__ import annotations

import json
import re

import pytest

from test_rehearsal_e2e import SMALL, cli


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["cityscapes", "vkitti2", "nuimages"])
def test_shipped_config_trains_a_teacher_on_the_native_format(fmt, tmp_path):
  from lix_jax.data import rehearse  # noqa: PLC0415
  root = str(tmp_path / fmt)
  rehearse.write(fmt, root, num=2)
  workdir = tmp_path / "teacher"
  # The crop is shrunk too (CI time: the shipped crops compile for minutes on 2 cores); the
  # images are read, converted and evaluated at their native size.
  proc = cli(root, str(tmp_path / "data"), workdir, "--config.mode=train_teacher", *SMALL,
             "--config.data.crop_hw=(96,192)", config=f"configs/{fmt}.py", num_steps=1)
  assert re.search(r"test mIoU \d+\.\d+ %", proc.stdout), proc.stdout[-2000:]
  stored = json.loads((workdir / "config.json").read_text())
  assert stored["data"]["name"] == fmt and stored["teacher"]["stem"] == "imagenet"
  final = json.loads((workdir / "final_metrics.json").read_text())
  for split in ("validation", "test"):
    assert 0.0 <= final[split]["miou"] <= 1.0, split
  meta = json.loads((workdir / "export" / "meta.json").read_text())
  assert meta["x_modality"] == "depth"
