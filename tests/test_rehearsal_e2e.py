"""The real user's path, rehearsed (issue 19 §3): `configs/kitti_semantics.py` run through the CLI on
a KITTI-layout copy of synthetic scenes at native size (375x1242, `lix_jax.data.rehearse`).

Overrides only shrink steps and batch and, except for the student, widths; the student runs the
shipped ResNet-18 (width 1.0, ImageNet stem) from ImageNet weights in a torchvision-layout
safetensors file (random values: the weights cannot be downloaded here), converted by
`lix_jax.models.pretrained`. Teacher, student, LIX distillation, evaluation at native size and
prediction. The other formats are read back by their builders in tests/test_rehearse.py.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ("--config.teacher.backbone=resnet18", "--config.teacher.width=0.125",
         "--config.teacher.decoder_channels=16", "--config.student.width=0.125",
         "--config.student.decoder_channels=16")


def cli(root, data_dir, workdir, *args, config="configs/kitti_semantics.py", num_steps=2):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "lix_jax.main", f"--config={config}",
         f"--workdir={workdir}", f"--config.data.root={root}", f"--config.data.data_dir={data_dir}",
         f"--config.train.num_steps={num_steps}", "--config.train.batch_size=2",
         "--config.train.eval_batch_size=2", "--config.train.log_every=1",
         "--config.train.eval_every=2", "--config.train.ckpt_every=2", *args]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
  return proc


def torchvision_resnet18(path: str) -> None:
  """A torchvision-named ResNet-18 state dict with random values, as safetensors."""
  from safetensors.numpy import save_file  # noqa: PLC0415
  rng = np.random.default_rng(0)
  tensors = {}

  def conv(name, o, i, k):
    tensors[name + ".weight"] = (rng.normal(size=(o, i, k, k)) * np.sqrt(2 / (i * k * k))
                                 ).astype(np.float32)

  def bn(name, c):
    tensors.update({f"{name}.weight": rng.uniform(0.5, 1.5, c).astype(np.float32),
                    f"{name}.bias": rng.normal(0, 0.1, c).astype(np.float32),
                    f"{name}.running_mean": rng.normal(0, 0.1, c).astype(np.float32),
                    f"{name}.running_var": rng.uniform(0.5, 2.0, c).astype(np.float32),
                    f"{name}.num_batches_tracked": np.array(100, np.int64)})

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  cin = 64
  for layer, cout in enumerate((64, 128, 256, 512), start=1):
    for block in range(2):
      p = f"layer{layer}.{block}"
      stride_block = block == 0 and layer > 1
      conv(f"{p}.conv1", cout, cin if block == 0 else cout, 3)
      bn(f"{p}.bn1", cout)
      conv(f"{p}.conv2", cout, cout, 3)
      bn(f"{p}.bn2", cout)
      if stride_block:
        conv(f"{p}.downsample.0", cout, cin, 1)
        bn(f"{p}.downsample.1", cout)
    cin = cout
  tensors["fc.weight"] = rng.normal(size=(1000, 512)).astype(np.float32)
  tensors["fc.bias"] = np.zeros(1000, np.float32)
  save_file(tensors, path)


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
  from lix_jax.data import rehearse  # noqa: PLC0415
  base = tmp_path_factory.mktemp("rehearsal")
  root = str(base / "kitti")
  rehearse.write("kitti_semantics", root, num=5)  # 4 train, 1 validation (= the test split)
  return root, str(base / "data"), base


@pytest.mark.slow
def test_kitti_config_runs_end_to_end_at_native_size(kitti):
  root, data_dir, base = kitti
  teacher = base / "teacher"
  proc = cli(root, data_dir, teacher, "--config.mode=train_teacher", *SMALL)
  assert re.search(r"test mIoU \d+\.\d+ %", proc.stdout)
  # Cluster-log progress lines (stderr is not a terminal).
  assert "teacher step 2/2 (100 %) loss" in proc.stderr

  weights = str(base / "resnet18_torchvision.safetensors")
  torchvision_resnet18(weights)
  student = base / "student"
  cli(root, data_dir, student, "--config.mode=train_student", f"--config.student.pretrained={weights}")
  stored = json.loads((student / "config.json").read_text())
  assert stored["student"]["width"] == 1.0 and stored["student"]["stem"] == "imagenet"

  lix = base / "lix"
  cli(root, data_dir, lix, "--config.mode=distill", "--config.distill.method=lix",
      f"--config.distill.teacher_workdir={teacher}", *SMALL)
  # Evaluation at native size: KITTI's test split is its validation split; no teacher needed.
  proc = cli(root, data_dir, lix, "--config.mode=eval", *SMALL)
  line = [l for l in proc.stdout.splitlines() if "mIoU" in l][-1]
  final = json.loads((lix / "final_metrics.json").read_text())
  assert line.startswith("validation mIoU")
  assert abs(float(line.split()[2]) - 100 * final["test"]["miou"]) < 0.01
  inputs = base / "inputs"
  inputs.mkdir()
  image = Image.open(os.path.join(root, "training", "image_2", "000004_10.png"))
  image.save(inputs / "frame.png")
  cli(root, data_dir, lix, "--config.mode=predict", f"--config.predict.input_dir={inputs}", *SMALL)
  predicted = np.asarray(Image.open(lix / "predictions" / "frame.png"))
  assert predicted.shape == (375, 1242, 3) and predicted.dtype == np.uint8
