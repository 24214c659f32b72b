"""lix_jax.experiments.confusion: confusion rates of evaluation files and the class pairs on which
students exceed their teacher."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lix_jax.experiments import confusion
from lix_jax.train import metrics as metrics_lib

NAMES = ["road", "wall", "building"]


def _write(path, cm, split=""):
  metrics = metrics_lib.segmentation_metrics(np.asarray(cm, np.int64), class_names=NAMES)
  data = {split: metrics} if split else metrics
  with open(path, "w") as f:
    json.dump(data, f, default=lambda v: v.tolist())
  return str(path)


TEACHER = [[90, 5, 5], [0, 80, 20], [0, 10, 90]]
STUDENT = [[88, 6, 6], [0, 40, 60], [1, 9, 90]]


def test_rates_are_row_shares_and_absent_classes_are_nan():
  cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
  r = confusion.rates(cm)
  np.testing.assert_allclose(r[0], [0.75, 0.25, 0.0])
  np.testing.assert_allclose(r[2], [0.25, 0.25, 0.5])
  assert np.isnan(r[1]).all()


def test_read_both_file_kinds_and_pairs(tmp_path):
  t_cm, names, t_metrics = confusion.read(_write(tmp_path / "t.json", TEACHER))
  s_cm, _, _ = confusion.read(_write(tmp_path / "final.json", STUDENT, "validation"), "validation")
  assert names == NAMES and t_metrics["miou"] == pytest.approx(
      np.mean([90 / 100, 80 / 115, 90 / 125]))  # tp / (gt + predicted - tp)
  rows = confusion.pair_rows({"teacher": t_cm, "lix": s_cm}, names)
  assert len(rows) == 6 and all(r["true"] != r["predicted"] for r in rows)
  wall_building = next(r for r in rows if (r["true"], r["predicted"]) == ("wall", "building"))
  assert wall_building["teacher"] == pytest.approx(0.2) and wall_building["lix"] == pytest.approx(0.6)
  md = confusion.excess_markdown(rows, ["teacher", "lix"], "teacher", top=2)
  lines = md.splitlines()
  assert lines[2] == "| wall → building | 20.0 | 60.0 | +40.0 |"  # The largest excess first.
  assert len(lines) == 4


def test_read_errors_name_the_file(tmp_path):
  old = tmp_path / "old.json"
  old.write_text(json.dumps({"miou": 0.5, "iou/road": 0.5}))
  with pytest.raises(ValueError, match=r"old\.json.*no confusion matrix.*mode=eval"):
    confusion.read(str(old))
  with pytest.raises(KeyError, match="'test'"):
    confusion.read(_write(tmp_path / "f.json", TEACHER, "validation"), "test")
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"iou/road": 1.0, "confusion": [[1, 0], [0, 1]]}))
  with pytest.raises(ValueError, match=r"bad\.json.*\(2, 2\) for 1 classes"):
    confusion.read(str(bad))


def test_cli_writes_pairs_and_runs(tmp_path, capsys):
  t = _write(tmp_path / "t.json", TEACHER)
  s = _write(tmp_path / "s.json", STUDENT, "validation")
  confusion.main([f"teacher={t}", f"lix={s}:validation", f"--pairs={tmp_path / 'p.csv'}",
                  f"--runs={tmp_path / 'r.csv'}", "--top=1"])
  assert "| wall → building |" in capsys.readouterr().out
  with open(tmp_path / "r.csv") as f:
    runs = list(csv.DictReader(f))
  assert [r["run"] for r in runs] == ["teacher", "lix"]
  assert float(runs[1]["iou_wall"]) == pytest.approx(40 / (100 + 55 - 40))
  with open(tmp_path / "p.csv") as f:
    assert len(list(csv.DictReader(f))) == 6
  with pytest.raises(SystemExit, match="unknown option"):
    confusion.main([f"teacher={t}", "--top5"])


def test_fit_table_puts_train_beside_validation():
  def run(name, miou, wall):
    return {"run": name, "miou": str(miou), "pixel_acc": "0.9", "iou_wall": str(wall)}
  md = confusion.fit_markdown([run("teacher", 0.81, 0.65), run("ce", 0.706, 0.31)],
                              [run("teacher", 0.847, 0.81), run("ce", 0.768, 0.65)], ("wall",))
  lines = md.splitlines()
  assert lines[0] == "| run | mIoU train / val (%) | train − val | IoU wall train / val |"
  assert lines[3] == "| ce | 76.8 / 70.6 | +6.2 | 65.0 / 31.0 |"
  with pytest.raises(ValueError, match="other runs"):
    confusion.fit_markdown([run("a", 0.5, 0.5)], [run("b", 0.5, 0.5)], ("wall",))


def test_gap_markdown_measures_each_student_against_its_own_ce_run():
  def run(name, miou, wall):
    return {"run": name, "miou": str(miou), "iou_wall": str(wall)}
  rows = [run("teacher", 0.80, 0.6), run("ce", 0.70, 0.3), run("lix", 0.73, 0.4),
          run("ce_wide", 0.72, 0.35), run("lix_wide", 0.76, 0.5)]
  md = confusion.gap_markdown(rows, [("ce", "ce"), ("lix", "ce"), ("ce_wide", "ce_wide"),
                                     ("lix_wide", "ce_wide")], classes=("wall",))
  lines = md.splitlines()
  assert lines[0] == "| run | mIoU (%) | gap closed | IoU wall |"
  assert lines[2] == "| teacher | 80.0 |  | 60.0 |"
  assert lines[3] == "| ce | 70.0 | 0 % | 30.0 |"
  assert lines[4] == "| lix | 73.0 | 30 % | 40.0 |"  # (73 - 70) / (80 - 70)
  assert lines[6] == "| lix_wide | 76.0 | 50 % | 50.0 |"  # (76 - 72) / (80 - 72)
  with pytest.raises(ValueError, match=r"runs \['cwd'\] are not in the file"):
    confusion.gap_markdown(rows, [("cwd", "ce")])
