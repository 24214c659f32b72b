"""The real user's path at the shipped widths, rehearsed (issue 19 §3): `configs/kitti_semantics.py`
run through the CLI on a KITTI-layout copy of synthetic scenes at native size (375x1242,
`lix_jax.data.rehearse`), with ImageNet weights converted from torchvision-layout safetensors files
(random values: the weights cannot be downloaded here) by `lix_jax.models.pretrained`.

The shipped ResNet-50 duplex teacher (RGB and depth encoders, width 1.0, ImageNet stem) starts
from `teacher.pretrained` in a zero-step run (initialise, evaluate, export: its train step is the
slowest program of the suite to compile, ~2.5 min on 2 cores, and a teacher's training is the same
code at every width, tests/test_cli.py), then teaches a two-step LIX distillation of the shipped
ResNet-18 student (width 1.0, ImageNet stem) from `student.pretrained`; both evaluate at native
size. Overrides only shrink steps, batch and crop. Every format's whole path (teacher, student, LIX, evaluation,
prediction) at tiny widths is in tests/test_rehearsal_formats_e2e.py, which shares `cli` and
`rehearsed` from here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from cli_env import cli_env
from fixtures_real import torchvision_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny networks: the shipped config but for the widths and the teacher's ResNet-50 (a ResNet-18).
SMALL = ("--config.teacher.backbone=resnet18", "--config.teacher.width=0.125",
         "--config.teacher.decoder_channels=16", "--config.student.width=0.125",
         "--config.student.decoder_channels=16")
# The training crop, shrunk for CI time (compile time barely depends on it, step time does); the
# images are still read, converted, evaluated and predicted at their native size.
CROP = "--config.data.crop_hw=(96,192)"


def cli(root, data_dir, workdir, *args, config="configs/kitti_semantics.py", num_steps=2):
  """`python -m lix_jax.main` on 2 CPU devices as a user runs it; asserts exit status 0."""
  env = cli_env(2)
  cmd = [sys.executable, "-m", "lix_jax.main", f"--config={config}",
         f"--workdir={workdir}", f"--config.data.root={root}", f"--config.data.data_dir={data_dir}",
         f"--config.train.num_steps={num_steps}", "--config.train.batch_size=2",
         "--config.train.eval_batch_size=2", "--config.train.log_every=1",
         "--config.train.eval_every=2", "--config.train.ckpt_every=2", *args]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
  return proc


def rehearsed(fmt: str, base, num: int) -> tuple[str, str]:
  """(root, data_dir): `num` scenes in `fmt`'s official layout at native size under `base`."""
  from lix_jax.data import rehearse  # noqa: PLC0415
  root = str(base / fmt)
  rehearse.write(fmt, root, num=num)
  return root, str(base / "data")


def labelled_pixels(run_config: dict, root: str, split: str) -> int:
  """Pixels with a train id (not 255) in `split`'s native-size labels, read through the builder."""
  from lix_jax import data  # noqa: PLC0415
  source = data.get_source(run_config["data"]["name"], split, data_dir=run_config["data"]["data_dir"],
                           manual_dir=root, builder_config=run_config["data"]["builder_config"])
  return sum(int((np.asarray(source[i]["label"]) != 255).sum()) for i in range(len(source)))


def assert_evaluated_at_native_size(workdir, root) -> None:
  """The run's final evaluations counted every labelled pixel of the native-size labels once (a
  resized or cropped evaluation counts fewer), and their mIoU is the confusion matrix's."""
  stored = json.loads((workdir / "config.json").read_text())
  final = json.loads((workdir / "final_metrics.json").read_text())
  for key in ("validation", "test"):
    split = stored["data"]["eval_split" if key == "validation" else "test_split"]
    confusion = np.asarray(final[key]["confusion"], np.float64)
    assert confusion.sum() == labelled_pixels(stored, root, split), (workdir.name, key)
    tp, union = np.diag(confusion), confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    assert final[key]["miou"] == pytest.approx(np.mean(tp[union > 0] / union[union > 0])), key


def checkpoint_state(workdir) -> dict:
  """The newest checkpoint's saved state of a run, as saved (no network built, nothing compiled)."""
  import orbax.checkpoint as ocp  # noqa: PLC0415
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.join(ckpt_dir, str(step), "state"))


def assert_started_from(got, want, what, rtol=0.05):
  """`got` is still the converted ImageNet tensor `want`, not a fresh initialisation (that would be
  >= 100 % away): exactly after zero steps; after two (one warm-up step at learning rate 0, one SGD
  step) within 5 % (the step moved the kernels seen here by 0.003-2 %)."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, (what, got.shape, want.shape)
  rel = np.linalg.norm(got - want) / np.linalg.norm(want)
  assert rel <= rtol, f"{what}: {100 * rel:.1f} % away from the converted ImageNet weights"


@pytest.mark.slow
def test_shipped_widths_start_from_torchvision_weights(tmp_path):
  from lix_jax.models import pretrained  # noqa: PLC0415
  root, data_dir = rehearsed("kitti_semantics", tmp_path, num=5)  # 4 train, 1 validation (= test)
  weights = {}
  for arch, seed in (("resnet50", 1), ("resnet18", 2)):
    sd = torchvision_state_dict(arch, seed=seed)
    weights[arch] = str(tmp_path / f"{arch}_torchvision.safetensors")
    save_file(sd, weights[arch])
    weights[arch + "/converted"] = pretrained.convert_torch_resnet(sd, backbone=arch)["params"]

  teacher = tmp_path / "teacher"
  cli(root, data_dir, teacher, "--config.mode=train_teacher", CROP,
      f"--config.teacher.pretrained={weights['resnet50']}", num_steps=0)
  assert (teacher / "checkpoints" / "0").is_dir()  # What the distillation below reads.
  stored = json.loads((teacher / "config.json").read_text())["teacher"]
  assert (stored["backbone"], stored["width"], stored["stem"], stored["fusion"]) == (
      "resnet50", 1.0, "imagenet", "intermediate")
  assert stored["pretrained"] == weights["resnet50"]
  # Both encoders started from the converted file: the RGB one as converted, the depth one too but
  # for its first conv (the RGB kernel's mean over input channels).
  r50 = weights["resnet50/converted"]
  encoders = checkpoint_state(teacher)["params"]["fusion"]
  for enc in ("rgb", "x"):
    for block in ("stage1/block0/conv1", "stage3/block5/conv2", "stage4/block2/conv3"):
      s, b, c = block.split("/")
      assert_started_from(encoders[enc][s][b][c]["kernel"], r50[s][b][c]["kernel"], f"{enc} {block}",
                          rtol=0.0)
  assert_started_from(encoders["rgb"]["stem"]["conv"]["kernel"], r50["stem"]["conv"]["kernel"],
                      "rgb stem", rtol=0.0)
  assert_started_from(encoders["x"]["stem"]["conv"]["kernel"],
                      pretrained.x_stem_kernel(r50["stem"]["conv"]["kernel"], 1), "x stem", rtol=0.0)
  assert_evaluated_at_native_size(teacher, root)

  lix = tmp_path / "lix"
  proc = cli(root, data_dir, lix, "--config.mode=distill", "--config.distill.method=lix", CROP,
             f"--config.distill.teacher_workdir={teacher}",
             f"--config.student.pretrained={weights['resnet18']}")
  assert "distill step 2/2 (100 %) loss" in proc.stderr
  stored = json.loads((lix / "config.json").read_text())
  assert (stored["student"]["backbone"], stored["student"]["width"], stored["student"]["stem"]) == (
      "resnet18", 1.0, "imagenet")
  assert stored["teacher"]["width"] == 1.0 and stored["distill"]["method"] == "lix"
  student = checkpoint_state(lix)["params"]["student"]["backbone"]
  r18 = weights["resnet18/converted"]
  for s, b, c in (("stage1", "block0", "conv1"), ("stage4", "block1", "conv2")):
    assert_started_from(student[s][b][c]["kernel"], r18[s][b][c]["kernel"], f"student {s} {b} {c}")
  assert_evaluated_at_native_size(lix, root)
