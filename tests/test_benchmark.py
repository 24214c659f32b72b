"""The benchmark runner (lix_jax/train/benchmark.py): which runs it trains, with which configs, how
it resumes, and the table computed from its CSV. Training itself is replaced by a recorder."""
from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest

from lix_jax.config_defaults import base_config
from lix_jax.train import benchmark, experiment, loop, report

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _fake_metrics(workdir: str) -> dict:
  # Deterministic, distinct per run: the CSV must carry each run's own numbers.
  h = (sum(map(ord, workdir)) % 997) / 997
  iou = [round(0.1 + 0.8 * ((h + 0.07 * i) % 1), 6) for i in range(len(loop.class_names(base_config())))]
  return {"miou": float(np.mean(iou)), "pixel_acc": 0.5 + h / 4, "iou": iou}


@pytest.fixture
def recorder(monkeypatch):
  calls = []

  def train(config, workdir, role, *, num_steps=None):  # experiment.run_role's re-use stays real.
    calls.append((workdir, role, config))
    result = {"test": _fake_metrics(workdir), "validation": _fake_metrics(workdir + "v")}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(result, f)
    return result

  monkeypatch.setattr(loop, "train", train)
  monkeypatch.setattr(report, "write_report",
                      lambda config, workdir, runs, num: calls.append(("report", runs, config)))
  monkeypatch.setattr(loop, "source", lambda config, split: None)
  return calls


def _config(rows, seeds=(0, 1)):
  c = base_config()
  c.mode = "benchmark"
  c.benchmark.rows = rows
  c.benchmark.seeds = seeds
  c.pipeline.teacher_num_steps = 7
  c.train.num_steps = 5
  return c


def test_each_teacher_trains_once_per_seed_and_students_get_their_row(tmp_path, recorder):
  rows = ("teacher", "none", "unlabeled/kd", "labeled/kd", "unlabeled/lix_late",
          "unlabeled/none_equal_images", "unlabeled/dwld_trust", "unlabeled/lix_balanced",
          "unlabeled/lix_balanced_kappa2", "unlabeled/none_all_labeled")
  benchmark.run_benchmark(_config(rows), str(tmp_path))
  recorder[:] = [c for c in recorder if c[0] != "report"]
  trained = {os.path.relpath(w, tmp_path): (m, c) for w, m, c in recorder}
  assert len(trained) == len(recorder), "a run was trained twice"
  teachers = sorted(k for k, (m, _) in trained.items() if m == "teacher")
  assert teachers == ["teachers/intermediate_depth_seed0", "teachers/intermediate_depth_seed1",
                      "teachers/late_depth_seed0", "teachers/late_depth_seed1"]
  for key in teachers:
    c = trained[key][1]
    assert c.train.num_steps == 7 and c.teacher.fusion == key.split("/")[1].split("_")[0]
    assert c.seed == int(key[-1])
  # Seed-major order: every run of seed 0 before any of seed 1.
  seeds = [int(os.path.basename(w)[-1]) for w, _, _ in recorder]
  assert seeds == sorted(seeds)
  kd_u = trained["students/unlabeled/kd_intermediate_depth_seed1"][1]
  kd_l = trained["students/labeled/kd_intermediate_depth_seed1"][1]
  assert kd_u.distill.unlabeled_split == "unlabeled" and kd_l.distill.unlabeled_split == ""
  assert kd_u.distill.teacher_workdir == os.path.join(str(tmp_path), "teachers/intermediate_depth_seed1")
  assert kd_u.seed == 1 and kd_u.train.num_steps == 5 and kd_u.distill.method == "kd"
  late = trained["students/unlabeled/lix_late_depth_seed0"][1]
  assert late.distill.method == "lix" and late.teacher.fusion == "late"
  assert late.distill.teacher_workdir.endswith("teachers/late_depth_seed0")
  equal = trained["students/unlabeled/none_equal_images_intermediate_depth_seed0"]
  assert equal[0] == "student" and equal[1].train.batch_size == 2 * base_config().train.batch_size
  assert equal[1].data.builder_config == base_config().data.builder_config
  oracle = trained["students/unlabeled/none_all_labeled_intermediate_depth_seed0"]
  assert oracle[0] == "student" and oracle[1].train.batch_size == equal[1].train.batch_size
  assert oracle[1].data.builder_config == "all_labeled"
  trust = trained["students/unlabeled/dwld_trust_intermediate_depth_seed0"][1]
  assert trust.distill.method == "dwld" and trust.distill.controller == "trust"
  balanced = trained["students/unlabeled/lix_balanced_intermediate_depth_seed0"][1]
  assert balanced.distill.method == "lix" and balanced.distill.controller == "balanced"
  assert balanced.distill.kappa == 1.0 and balanced.distill.class_balance == 1.0
  balanced2 = trained["students/unlabeled/lix_balanced_kappa2_intermediate_depth_seed0"][1]
  assert balanced2.distill.controller == "balanced" and balanced2.distill.kappa == 2.0
  assert trained["students/none_seed0"][0] == "student"
  assert trained["students/unlabeled/kd_intermediate_depth_seed0"][0] == "distill"


def test_csv_rows_carry_each_runs_metrics_and_rerun_trains_nothing(tmp_path, recorder):
  rows = ("teacher", "none", "unlabeled/lix", "labeled/lix")
  config = _config(rows)
  benchmark.run_benchmark(config, str(tmp_path))
  reports = [c for c in recorder if c[0] == "report"]
  assert len(reports) == 1
  runs, report_config = reports[0][1:]
  assert {k: (os.path.relpath(d, tmp_path), r) for k, (d, r) in runs.items()} == {
      "teacher": ("teachers/intermediate_depth_seed0", "teacher"),
      "student": ("students/none_seed0", "student"),
      "LIX student": ("students/unlabeled/lix_intermediate_depth_seed0", "distill")}
  assert report_config.distill.method == "lix" and report_config.distill.unlabeled_split
  n_trained = len(recorder)
  benchmark.run_benchmark(config, str(tmp_path))
  assert len(recorder) == n_trained + 1, "finished runs must be re-used (only the report again)"
  assert (tmp_path / "benchmark.png").stat().st_size > 0 and (tmp_path / "benchmark.md").exists()
  with open(tmp_path / "benchmark.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert list(table[0])[:8] == list(experiment.RESULT_COLUMNS)
  keys = [(r["model"], r["method"], r["regime"], r["seed"]) for r in table]
  assert len(keys) == len(set(keys)) == 2 * 5  # teacher, none x 2 regimes, lix x 2 regimes
  for r in table:
    name = {"teacher": "teacher", "none": "none"}.get(r["method"] if r["model"] == "student" else "teacher",
                                                      f"{r['regime']}/{r['method']}")
    expected = _fake_metrics(str(tmp_path / benchmark.run_dir(name, int(r["seed"]))))
    assert float(r["miou"]) == pytest.approx(expected["miou"])
    assert float(r["iou_pole"]) == pytest.approx(expected["iou"][loop.class_names(config).index("pole")])


def test_table_means_stds_and_gap_match_numpy():
  def row(model, method, regime, seed, miou):
    r = dict(model=model, method=method, fusion="intermediate", x_modality="depth", regime=regime,
             seed=seed, miou=miou, pixel_acc=0.9)
    r.update({f"iou_{c}": miou / 2 for c in benchmark.GEOMETRY_CLASSES})
    return r

  teacher, none, lix = [0.80, 0.76, 0.78], [0.60, 0.62, 0.61], [0.70, 0.75, 0.71]
  rows = [row("teacher", "-", "unlabeled", s, v) for s, v in enumerate(teacher)]
  rows += [row("student", "none", g, s, v) for g in ("labeled", "unlabeled") for s, v in enumerate(none)]
  rows += [row("student", "lix", "unlabeled", s, v) for s, v in enumerate(lix)]
  md = benchmark.table_markdown(rows)
  line = next(l for l in md.splitlines() if "| unlabeled | LIX" in l)
  cells = [c.strip() for c in line.strip("|").split("|")]
  mean, std = (float(x) for x in re.findall(r"[\d.]+", cells[3]))
  assert mean == pytest.approx(100 * np.mean(lix), abs=0.05)
  assert std == pytest.approx(100 * np.std(lix), abs=0.05)
  gap = (np.mean(lix) - np.mean(none)) / (np.mean(teacher) - np.mean(none))
  assert cells[4] == f"{100 * gap:.0f} %"
  assert float(cells[6]) == pytest.approx(100 * np.mean(lix) / 2, abs=0.05)
  # The CE student heads only the regimes that have a competitor: here the unlabelled one...
  assert md.count("student alone (CE)") == 1 and "| labeled |" not in md
  # ...and both once a labelled-only student exists.
  md = benchmark.table_markdown(rows + [row("student", "kd", "labeled", 0, 0.65)])
  assert md.count("student alone (CE)") == 2 and "| labeled | kd | 1 | 65.0 ± 0.0 | " in md


def test_unknown_row_lists_the_valid_ones(tmp_path, recorder):
  with pytest.raises(KeyError, match="unlabeled/lix"):
    benchmark.run_benchmark(_config(("teacher", "unlabeled/lixx")), str(tmp_path))
  assert not recorder, "nothing may train before every row name is checked"
  with pytest.raises(ValueError, match="'none'"):
    benchmark.run_benchmark(_config(("none", "teacher", "none")), str(tmp_path))


@pytest.mark.parametrize("name", ["benchmark.csv", "benchmark_long.csv", "benchmark_converged.csv"])
def test_readme_table_is_the_one_computed_from_results_csv(name):
  path = os.path.join(ROOT, "results", name)
  if not os.path.exists(path):
    pytest.skip(f"results/{name} not committed yet")
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  assert benchmark.table_markdown(benchmark.read_csv(path)) in readme, (
      f"README's table of results/{name} is stale: paste "
      f"`python -m lix_jax.train.benchmark results/{name}`")


def test_a_part_run_keeps_the_rows_of_earlier_parts(tmp_path, recorder):
  benchmark.run_benchmark(_config(("teacher", "none", "unlabeled/kd")), str(tmp_path))
  benchmark.run_benchmark(_config(("teacher", "none", "labeled/kd")), str(tmp_path))
  with open(tmp_path / "benchmark.csv", newline="") as f:
    keys = {(r["method"], r["regime"], r["seed"]) for r in csv.DictReader(f) if r["model"] == "student"}
  assert {("kd", "unlabeled", "0"), ("kd", "labeled", "1")} <= keys
