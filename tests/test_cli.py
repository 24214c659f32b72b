"""End to end through the CLI: the `tiny` pipeline writes every output DESIGN §6 names."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_COLUMNS = ["model", "method", "fusion", "x_modality", "regime", "seed", "miou", "pixel_acc"]


def run_cli(*args, devices: int = 2, timeout: int = 900, check: bool = True):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "lix_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"CLI failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pipeline")
  data_dir = tmp_path_factory.mktemp("data")
  proc = run_cli("--config=configs/synthetic.py:tiny", f"--workdir={workdir}",
                 f"--config.data.data_dir={data_dir}")
  return workdir, data_dir, proc


@pytest.mark.slow
def test_tiny_pipeline_writes_every_output(tiny_pipeline):
  workdir, _, proc = tiny_pipeline
  with open(workdir / "results.csv") as f:
    rows = list(csv.DictReader(f))
  header = list(rows[0])
  assert header[: len(RESULT_COLUMNS)] == RESULT_COLUMNS
  assert any(h.startswith("iou_") for h in header)
  methods = [r["method"] for r in rows if r["model"] == "student"]
  assert methods == ["none", "kd", "dkd", "cwd", "pseudo_label", "lix"]
  assert [r["model"] for r in rows].count("teacher") == 1
  for r in rows:
    assert 0.0 <= float(r["miou"]) <= 1.0 and 0.0 <= float(r["pixel_acc"]) <= 1.0
    assert r["regime"] == "unlabeled" and r["x_modality"] == "depth"
  assert "| student | lix |" in (workdir / "results.md").read_text()
  assert (workdir / "results.png").stat().st_size > 0
  for picture in ("predictions/grid.png", "cka.png", "dwc_weights.png", "training_curves.png"):
    assert (workdir / picture).stat().st_size > 0, picture
  for run in ["teacher", "students/none_seed0", "students/lix_seed0"]:
    run_dir = workdir / run
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in logged if "loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert all("learning_rate" in r and "images_per_s" in r for r in train_rows)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir / "tb"))
    assert sorted(int(s) for s in os.listdir(run_dir / "checkpoints") if s.isdigit())[-1] == 6
  lix_rows = [json.loads(line) for line in
              (workdir / "students/lix_seed0/metrics.jsonl").read_text().splitlines()]
  assert all(k in lix_rows[0] for k in ("ce", "logit", "logit_unlabeled", "feature"))


@pytest.mark.slow
def test_eval_mode_reproduces_the_pipeline_test_miou(tiny_pipeline):
  workdir, data_dir, _ = tiny_pipeline
  proc = run_cli("--config=configs/synthetic.py:tiny", f"--workdir={workdir}/teacher",
                 f"--config.data.data_dir={data_dir}", "--config.mode=eval",
                 "--config.eval.role=teacher")
  with open(workdir / "results.csv") as f:
    teacher_miou = float(next(r for r in csv.DictReader(f) if r["model"] == "teacher")["miou"])
  line = [l for l in proc.stdout.splitlines() if l.startswith("test mIoU")][0]
  assert abs(float(line.split()[2]) - 100 * teacher_miou) < 0.01


def test_bad_config_value_is_one_clear_line(tmp_path):
  proc = run_cli("--config=configs/synthetic.py:tiny", f"--workdir={tmp_path}",
                 "--config.mode=train_student", "--config.data.x_modality=lidar", check=False)
  assert proc.returncode == 2
  assert "x_modality" in proc.stderr and "lidar" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_unknown_config_key_is_rejected(tmp_path):
  proc = run_cli("--config=configs/synthetic.py:tiny", f"--workdir={tmp_path}",
                 "--config.distill.kapa=2", check=False)
  assert proc.returncode != 0 and "kapa" in proc.stderr


@pytest.mark.slow
def test_predict_mode_writes_one_colourised_png_per_image(tiny_pipeline, tmp_path):
  from PIL import Image
  import numpy as np
  workdir, data_dir, _ = tiny_pipeline
  rng = np.random.default_rng(0)
  for name in ("a.png", "b.jpg"):
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / name)
  out = tmp_path / "out"
  run_cli("--config=configs/synthetic.py:tiny", f"--workdir={workdir}/students/lix_seed0",
          f"--config.data.data_dir={data_dir}", "--config.mode=predict", "--config.eval.role=distill",
          f"--config.distill.teacher_workdir={workdir}/teacher",
          f"--config.predict.input_dir={tmp_path}", f"--config.predict.output_dir={out}")
  written = sorted(os.listdir(out))
  assert written == ["a.png", "b.png"]
  picture = np.asarray(Image.open(out / "a.png"))
  assert picture.shape == (64, 96, 3) and picture.dtype == np.uint8
