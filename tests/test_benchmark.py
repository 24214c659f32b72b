"""The benchmark runner (lix_jax/experiments/benchmark.py): which runs it trains, with which configs, how
it resumes, and the table computed from its CSV. Training itself is replaced by a recorder."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re

import numpy as np
import pytest

from lix_jax.config import base_config
from lix_jax.experiments import benchmark, report, results_csv
from lix_jax.train import inputs, loop

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _fake_metrics(workdir: str) -> dict:
  # Deterministic, distinct per run: the CSV must carry each run's own numbers.
  h = (sum(map(ord, workdir)) % 997) / 997
  iou = [round(0.1 + 0.8 * ((h + 0.07 * i) % 1), 6) for i in range(len(inputs.class_names(base_config())))]
  return {"miou": float(np.mean(iou)), "pixel_acc": 0.5 + h / 4, "iou": iou}


@pytest.fixture
def recorder(monkeypatch):
  calls = []

  def train(config, workdir, role, *, num_steps=None, finish=None):  # run_role's re-use is real.
    calls.append((workdir, role, config))
    result = {"test": _fake_metrics(workdir), "validation": _fake_metrics(workdir + "v"),
              "step": int(num_steps or config.train.num_steps)}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(result, f)
    with open(os.path.join(workdir, "config.json"), "w") as f:  # What a re-use is checked against.
      json.dump(config.to_dict(), f, default=list)
    return result

  monkeypatch.setattr(loop, "train", train)
  monkeypatch.setattr(report, "write_report",
                      lambda config, workdir, runs, num: calls.append(("report", runs, config)))
  monkeypatch.setattr(inputs, "source", lambda config, split: None)
  return calls


def _load_benchmark_config():
  spec = importlib.util.spec_from_file_location("benchmark_config", os.path.join(ROOT, "configs",
                                                                                 "benchmark.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# The committed table (configs/benchmark.py), which names and orders the rows of the results files.
BENCHMARK_CONFIG = _load_benchmark_config()
TABLE = benchmark.Table.of(BENCHMARK_CONFIG.get_config())


def _config(rows, seeds=(0, 1)):
  c = base_config()
  c.mode = "benchmark"
  c.benchmark.table = BENCHMARK_CONFIG.get_config().benchmark.table
  c.benchmark.aliases = BENCHMARK_CONFIG.ALIASES
  c.benchmark.rows = rows
  c.benchmark.seeds = seeds
  c.pipeline.teacher_num_steps = 7
  c.train.num_steps = 5
  return c


def test_each_teacher_trains_once_per_seed_and_students_get_their_row(tmp_path, recorder):
  rows = ("teacher", "none", "unlabeled/kd", "labeled/kd", "unlabeled/lix_dynamic_late",
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
  late = trained["students/unlabeled/lix_dynamic_late_depth_seed0"][1]
  assert late.distill.method == "lix" and late.teacher.fusion == "late"
  assert late.distill.controller == "dynamic" and late.distill.lambda_kr == 1.0
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
  assert list(table[0])[:8] == list(results_csv.RESULT_COLUMNS)
  keys = [(r["model"], r["method"], r["regime"], r["seed"]) for r in table]
  assert len(keys) == len(set(keys)) == 2 * 5  # teacher, none x 2 regimes, lix x 2 regimes
  for r in table:
    name = {"teacher": "teacher", "none": "none"}.get(r["method"] if r["model"] == "student" else "teacher",
                                                      f"{r['regime']}/{r['method']}")
    expected = _fake_metrics(str(tmp_path / TABLE.run_dir(name, int(r["seed"]))))
    assert float(r["miou"]) == pytest.approx(expected["miou"])
    assert float(r["iou_pole"]) == pytest.approx(expected["iou"][inputs.class_names(config).index("pole")])


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
  md = benchmark.table_markdown(TABLE, rows)
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
  md = benchmark.table_markdown(TABLE, rows + [row("student", "kd", "labeled", 0, 0.65)])
  assert md.count("student alone (CE)") == 2 and "| labeled | kd | 1 | 65.0 ± 0.0 | " in md


def test_unknown_row_lists_the_valid_ones(tmp_path, recorder):
  with pytest.raises(KeyError, match="unlabeled/lix"):
    benchmark.run_benchmark(_config(("teacher", "unlabeled/lixx")), str(tmp_path))
  assert not recorder, "nothing may train before every row name is checked"
  with pytest.raises(ValueError, match="'none'"):
    benchmark.run_benchmark(_config(("none", "teacher", "none")), str(tmp_path))


def test_a_part_run_keeps_the_rows_of_earlier_parts(tmp_path, recorder):
  benchmark.run_benchmark(_config(("teacher", "none", "unlabeled/kd")), str(tmp_path))
  benchmark.run_benchmark(_config(("teacher", "none", "labeled/kd")), str(tmp_path))
  with open(tmp_path / "benchmark.csv", newline="") as f:
    keys = {(r["method"], r["regime"], r["seed"]) for r in csv.DictReader(f) if r["model"] == "student"}
  assert {("kd", "unlabeled", "0"), ("kd", "labeled", "1")} <= keys


# The keys whose defaults DESIGN §2.3-2.4 names (and changed in Nov 2026), by the distillation
# methods that read them (lix_jax/losses/registry.py).
_DEFAULTED = {"dwld": ("controller", "kappa", "class_balance"), "arfd": ("lambda_kr",),
              "kr_only": ("lambda_kr",),
              "lix": ("controller", "kappa", "class_balance", "lambda_kr")}


def _effective(distill) -> dict:
  """The defaulted keys the row's loss actually computes with (`fixed` and `trust` ignore κ, only
  the class-balanced controllers read γ)."""
  keys = dict.fromkeys(_DEFAULTED.get(distill.method, ()))
  if distill.controller in ("fixed", "trust"):
    keys.pop("kappa", None)
  if not distill.controller.startswith("balanced"):
    keys.pop("class_balance", None)
  return {k: distill[k] for k in keys} | {"lambda_l": distill.lambda_l, "lambda_f": distill.lambda_f}


def test_every_row_but_lix_pins_the_config_its_results_were_run_with():
  """A change of the defaults changes `lix` (the default config by definition) and no other row."""
  shipped = base_config()
  moved = base_config()
  moved.distill.update(controller="fixed", kappa=7.0, class_balance=0.5, lambda_kr=3.0)
  for name, row in TABLE.rows.items():
    if row.model == "teacher":
      continue
    a = benchmark.student_config(shipped, row, 0, "t").distill
    b = benchmark.student_config(moved, row, 0, "t").distill
    if row.method == "lix":
      assert _effective(a) != _effective(b), name
    else:
      assert _effective(a) == _effective(b), f"row {name} follows the defaults: pin them"
  # What the committed results of the renamed rows were run with (results/README.md).
  def distill(name):
    return benchmark.student_config(shipped, TABLE.get(name), 0, "t").distill

  for regime in ("unlabeled", "labeled"):
    assert _effective(distill(f"{regime}/lix_dynamic")) == dict(
        controller="dynamic", kappa=4.0, lambda_kr=1.0, lambda_l=1.0, lambda_f=1.0)
  assert _effective(distill("unlabeled/lix_kr1")) == dict(
      controller="balanced_sym", kappa=4.0, class_balance=1.0, lambda_kr=1.0, lambda_l=1.0,
      lambda_f=1.0)
  assert distill("labeled/lix_l2").lambda_l == 2.0


def test_lix_is_the_default_config_the_renamed_sym_rows_ran_with():
  """results/README.md: the `lix_balanced_sym_kappa4_cka` rows became `lix` because their pinned
  config is the default. If the default moves, their results no longer describe `lix`."""
  default = base_config().distill
  assert {k.split(".")[1]: v for k, v in BENCHMARK_CONFIG.DEFAULT_LIX} == {
      k: default[k] for k in ("controller", "kappa", "class_balance", "lambda_kr")}
  for regime in ("unlabeled", "labeled"):
    lix = TABLE.rows[f"{regime}/lix"]
    assert TABLE.get(f"{regime}/lix_balanced_sym_kappa4_cka") is lix
    assert not TABLE.rows[f"{regime}/lix"].overrides
  late = TABLE.run_dir("unlabeled/lix_late", 1)  # The former name of the dynamic late row.
  assert late == "students/unlabeled/lix_dynamic_late_depth_seed1"


def test_per_seed_table_is_lix_minus_each_row_per_seed():
  def row(method, regime, seed, miou):
    return dict(model="student", method=method, fusion="intermediate", x_modality="depth",
                regime=regime, seed=seed, miou=miou, pixel_acc=0.9)

  lix, cwd, none = [0.7332, 0.7376, 0.735], [0.7317, 0.7378], [0.70, 0.71, 0.72]
  rows = ([row("lix", "unlabeled", s, v) for s, v in enumerate(lix)]
          + [row("cwd", "unlabeled", s, v) for s, v in enumerate(cwd)]
          + [row("none", g, s, v) for g in ("labeled", "unlabeled") for s, v in enumerate(none)]
          + [row("kd", "labeled", 0, 0.9)])
  md = benchmark.per_seed_markdown(TABLE, rows, "unlabeled")
  lines = md.splitlines()
  assert lines[0] == "| seed | lix (%) | lix − none | lix − cwd |"
  assert lines[2] == f"| 0 | 73.32 | {100 * (lix[0] - none[0]):+.2f} | +0.15 |"
  assert lines[3] == "| 1 | 73.76 | +2.76 | -0.02 |"
  assert lines[4] == "| 2 | 73.50 | +1.50 |  |"  # cwd has no seed 2
  assert lines[5] == "| ahead on | | 3 of 3 | 1 of 2 |"
  assert benchmark.per_seed_markdown(TABLE, rows, "labeled") == ""  # no labelled-only LIX run
  # Prose quotes one cell of it with `figure(..., "lead<seed>")`, with a true minus sign.
  assert benchmark.figure(TABLE, rows, "unlabeled/cwd", "lead0") == "+0.15"
  assert benchmark.figure(TABLE, rows, "unlabeled/cwd", "lead1") == "\u22120.02"
  assert benchmark.figure(TABLE, rows, "none", "lead2") == "+1.50"
  assert benchmark.figure(TABLE, rows, "unlabeled/cwd", "ahead") == "1 of 2"
  assert benchmark.figure(TABLE, rows, "none", "ahead") == "3 of 3"
  with pytest.raises(ValueError, match=r"seed\(s\) \[2\]"):
    benchmark.figure(TABLE, rows, "unlabeled/cwd", "lead2")


def test_compare_is_level_within_the_pooled_std_or_a_tenth_of_a_point():
  def row(method, seed, miou, pole=0.5):
    return dict(model="student", method=method, fusion="intermediate", x_modality="depth",
                regime="unlabeled", seed=seed, miou=miou, pixel_acc=0.9, iou_pole=pole)

  def compare(a, b, field="miou"):
    rows = ([row("lix", s, v) for s, v in enumerate(a)]
            + [row("cwd", s, v, pole=v) for s, v in enumerate(b)])
    return (benchmark.compare(TABLE, rows, "unlabeled/lix", "unlabeled/cwd", field),
            benchmark.compare(TABLE, rows, "unlabeled/cwd", "unlabeled/lix", field))

  lix = [0.70, 0.72, 0.74]  # std 1.63 points: pooled with a constant row, 1.15 points
  assert np.sqrt(np.var(100 * np.array(lix)) / 2) == pytest.approx(1.155, abs=1e-3)
  assert compare(lix, [0.711] * 3) == ("level with", "level with")  # 1.0 point apart
  assert compare(lix, [0.708] * 3) == ("above", "below")  # 1.2 points
  assert compare([0.70], [0.7006]) == ("level with", "level with")  # one seed: 0.1-point floor
  assert compare([0.70], [0.6985]) == ("above", "below")
  # Per class: LIX's pole IoU is 50 % on every seed, CWD's its mIoU (72 %).
  assert compare(lix, [0.72] * 3) == ("level with", "level with")
  assert compare(lix, [0.72] * 3, "iou_pole") == ("below", "above")
  with pytest.raises(ValueError, match="unlabeled/kd"):
    benchmark.compare(TABLE, [row("lix", 0, 0.7)], "unlabeled/lix", "unlabeled/kd")


def _page(name: str) -> str:
  """README.md or a page of docs/ (the research record: docs/benchmark.md)."""
  with open(os.path.join(ROOT, name)) as f:
    return f.read()


# Figures the prose of docs/benchmark.md quotes from the results files: {FILE:row[:field]} is
# `benchmark.figure(TABLE, rows of FILE, row, field)`; B, L, C = benchmark, benchmark_long,
# benchmark_converged.csv, D = default_pipeline.csv. Whitespace (line breaks) does not count.
# Comparative words are computed too: {FILE:a,..~b,..[;a,..~b,..][:field,..][|words]} is the word
# of `benchmark.compare` for every (a, b, field) of each group (field default "miou"; `_compared`).
_WORDS = {"": {"above": "above", "level with": "level with", "below": "below"},
          "ahead": {"above": "ahead", "level with": "level", "below": "behind"}}


def _compared(rows, groups: str, fields: str, words: str) -> str:
  """The one word `benchmark.compare` gives every pair of rows of `a` x `b` of each `a~b` group on
  every field, in the vocabulary `words`; "at or below" / "at or above" where they are level with
  or all on one side; otherwise "mixed (...)", which no prose quotes."""
  pairs = [(x, y) for g in groups.split(";") for x in g.split("~")[0].split(",")
           for y in g.split("~")[1].split(",")]
  found = {benchmark.compare(TABLE, rows, x, y, f) for x, y in pairs for f in fields.split(",")}
  if len(found) == 1:
    return _WORDS[words][found.pop()]
  if not words and found in ({"level with", "below"}, {"level with", "above"}):
    return "at or " + (found - {"level with"}).pop()
  return f"mixed ({', '.join(sorted(found))})"


_PROSE = (
    "(LIX with the default config — lix_jax's symmetric class-balanced controller, further down — "
    "is {B:unlabeled/lix~unlabeled/cwd,unlabeled/kd,unlabeled/dkd;"
    "labeled/lix~labeled/cwd,labeled/kd,labeled/dkd} CWD, KD and DKD in both regimes)",
    "LIX reaches {B:unlabeled/lix_dynamic} and closes {B:unlabeled/lix_dynamic:gap} of the gap, "
    "{B:unlabeled/lix_dynamic~unlabeled/pseudo_label} pseudo-labels ({B:unlabeled/pseudo_label})",
    "on test over 3 seeds {B:unlabeled/lix_kappa1} ({B:unlabeled/lix_kappa1:gap} of the gap)",
    "DWLD alone {B:unlabeled/dwld} against DKD {B:unlabeled/dkd:mean} and dynamic LIX "
    "{B:unlabeled/lix_dynamic:mean}:",
    "ARFD alone {B:unlabeled/arfd:mean}, KR only {B:unlabeled/kr_only:mean}, CKA only "
    "{B:unlabeled/cka_only:mean}, FitNet {B:unlabeled/fitnet:mean}, all "
    "{B:unlabeled/arfd,unlabeled/kr_only,unlabeled/cka_only,unlabeled/fitnet~none} the CE student "
    "({B:none:mean})",
    "trust (reliability only) {B:unlabeled/dwld_trust:mean}, dynamic {B:unlabeled/dwld:mean}, "
    "κ = −2 (self-paced) {B:unlabeled/dwld_kappa-2:mean}",
    "The normals teacher is the strongest ({B:teacher_normal}), yet LIX from it reaches only "
    "{B:unlabeled/lix_dynamic_normal}; from the late-fusion teacher ({B:teacher_late}, "
    "{B:teacher_late~teacher} intermediate fusion) {B:unlabeled/lix_dynamic_late}",
    "**κ = 2 {B:unlabeled/lix_balanced_kappa2}, {B:unlabeled/lix_balanced_kappa2:gap} of the gap**, "
    "κ = 1 {B:unlabeled/lix_balanced} ({B:unlabeled/lix_balanced:gap}), against CWD {B:unlabeled/cwd} "
    "({B:unlabeled/cwd:gap}); labelled-only (κ = 1) {B:labeled/lix_balanced}, "
    "{B:labeled/lix_balanced:gap}, against CWD {B:labeled/cwd} ({B:labeled/cwd:gap}).",
    "**{B:unlabeled/lix_balanced_kappa4} ({B:unlabeled/lix_balanced_kappa4:gap}) against CWD "
    "{B:unlabeled/cwd} ({B:unlabeled/cwd:gap})** — seeds {B:unlabeled/lix_balanced_kappa4:seeds} "
    "against {B:unlabeled/cwd:seeds}",
    "{B:unlabeled/lix_balanced_kappa2_normal:mean} ± 0.2 from normals",
    "**{B:unlabeled/lix_balanced_kappa4_cka} against CWD {B:unlabeled/cwd}** "
    "({B:unlabeled/lix_balanced_kappa4_cka:mean2} vs {B:unlabeled/cwd:mean2}; seeds "
    "{B:unlabeled/lix_balanced_kappa4_cka:seeds} against {B:unlabeled/cwd:seeds})",
    "**with unlabelled frames: {B:unlabeled/lix} against CWD {B:unlabeled/cwd}**, "
    "{B:unlabeled/lix:gap} of the gap. It is "
    "{B:unlabeled/lix~unlabeled/kd,unlabeled/dkd,unlabeled/pseudo_label} KD "
    "({B:unlabeled/kd:mean}), DKD "
    "({B:unlabeled/dkd:mean}) and pseudo-labels ({B:unlabeled/pseudo_label:mean}), and per seed "
    "{B:unlabeled/lix:seeds} against CWD's {B:unlabeled/cwd:seeds}.",
    "**labelled only (the paper's regime): {B:labeled/lix} against CWD {B:labeled/cwd}**, "
    "{B:labeled/lix:gap} of the gap (per seed {B:labeled/lix:seeds} against {B:labeled/cwd:seeds})",
    "It recovers most of the large-class loss (building {B:unlabeled/lix:iou_building} vs "
    "{B:unlabeled/cwd:iou_building}, vegetation {B:unlabeled/lix:iou_vegetation} vs "
    "{B:unlabeled/cwd:iou_vegetation}, wall {B:unlabeled/lix:iou_wall} vs {B:unlabeled/cwd:iou_wall}) "
    "and keeps the thin-class lead (pole {B:unlabeled/lix:iou_pole} vs {B:unlabeled/cwd:iou_pole}, "
    "person {B:unlabeled/lix:iou_person} vs {B:unlabeled/cwd:iou_person});",
    "{B:unlabeled/lix_balanced_kappa4_cka~unlabeled/cwd:iou_pole,iou_person|ahead} on pole "
    "({B:unlabeled/lix_balanced_kappa4_cka:iou_pole} vs {B:unlabeled/cwd:iou_pole}) "
    "and person ({B:unlabeled/lix_balanced_kappa4_cka:iou_person} vs {B:unlabeled/cwd:iou_person}), "
    "{B:unlabeled/lix_balanced_kappa4_cka~unlabeled/cwd:iou_building,iou_sidewalk,iou_vegetation"
    "|ahead} "
    "on building ({B:unlabeled/lix_balanced_kappa4_cka:iou_building} vs "
    "{B:unlabeled/cwd:iou_building}), sidewalk ({B:unlabeled/lix_balanced_kappa4_cka:iou_sidewalk} "
    "vs {B:unlabeled/cwd:iou_sidewalk}) and vegetation "
    "({B:unlabeled/lix_balanced_kappa4_cka:iou_vegetation} vs {B:unlabeled/cwd:iou_vegetation})",
    "building {B:unlabeled/lix_balanced_kappa2:iou_building} vs {B:unlabeled/cwd:iou_building}, "
    "wall {B:unlabeled/lix_balanced_kappa2:iou_wall} vs {B:unlabeled/cwd:iou_wall}, sidewalk "
    "{B:unlabeled/lix_balanced_kappa2:iou_sidewalk} vs {B:unlabeled/cwd:iou_sidewalk}, vegetation "
    "{B:unlabeled/lix_balanced_kappa2:iou_vegetation} vs {B:unlabeled/cwd:iou_vegetation}",
    "(wall {C:unlabeled/lix:iou_wall}, pole {C:unlabeled/lix:iou_pole}, person "
    "{C:unlabeled/lix:iou_person})",
    "most on wall ({C:unlabeled/lix:iou_wall} vs {C:unlabeled/cwd:iou_wall}) and person "
    "({C:unlabeled/lix:iou_person} vs {C:unlabeled/cwd:iou_person})",
    "(IoU wall {C:teacher:iou_wall} vs {C:none:iou_wall}, pole {C:teacher:iou_pole} vs "
    "{C:none:iou_pole}, person {C:teacher:iou_person} vs {C:none:iou_person})",
    "**{B:labeled/lix_l2}, {B:labeled/lix_l2:gap} of the gap** (seeds {B:labeled/lix_l2:seeds}; "
    "against {B:labeled/lix:seeds} with λ_L = 1)",
    "it reaches {B:unlabeled/none_equal_images:mean}, "
    "{B:unlabeled/none_equal_images~unlabeled/kd} KD",
    "**{B:unlabeled/none_all_labeled}, {B:unlabeled/none_all_labeled:gap} of the gap** (seeds "
    "{B:unlabeled/none_all_labeled:seeds};",
    "the gap ({B:labeled/cwd:gap}) without any unlabelled frame, balanced LIX "
    "{B:labeled/lix_balanced:gap} (κ = 1) and {B:labeled/lix_balanced_kappa4:gap} (κ = 4, "
    "{B:labeled/lix_balanced_kappa4} against CWD's {B:labeled/cwd};",
    "(`balanced_sym`, above) is {B:labeled/lix~labeled/cwd} CWD but closes {B:labeled/lix:gap}.",
    "The CE student alone reaches **{L:none:mean}**",
    "At this length distillation is {L:unlabeled/cwd,unlabeled/lix~none} CE alone: CWD "
    "{L:unlabeled/cwd:mean}, LIX (default "
    "config) {L:unlabeled/lix:mean}.",
    "Every frame labelled (perfect pseudo-labels) reaches {L:unlabeled/none_all_labeled:mean}",
    "The 4 000-step teachers reach **{C:teacher}** ({L:teacher:mean} at 1 000 steps)",
    "Against the 2 000-step CE student ({C:none}) the gap",
    "**{C:unlabeled/lix} ({C:unlabeled/lix:gap} of the gap)** over 3 seeds",
    "CWD {C:unlabeled/cwd} ({C:unlabeled/cwd:gap}): LIX is ahead on each of the 3 seeds",
    "labelled images only (3 seeds): LIX {C:labeled/lix} ({C:labeled/lix:gap} of the gap), CWD "
    "{C:labeled/cwd}, KD {C:labeled/kd:mean}, DKD {C:labeled/dkd:mean}.",
    "against CWD it is {C:labeled/lix~labeled/cwd|ahead} ({C:labeled/lix:mean2} vs "
    "{C:labeled/cwd:mean2} on the mean; by seed "
    "{C:labeled/cwd:lead0}, {C:labeled/cwd:lead1}, {C:labeled/cwd:lead2}): in this regime",
    "with unlabelled frames it is ahead of CE on {C:none:ahead} seeds, KD on {C:unlabeled/kd:ahead}, "
    "CWD on {C:unlabeled/cwd:ahead}, pseudo-labels on {C:unlabeled/pseudo_label:ahead}, DKD on "
    "{C:unlabeled/dkd:ahead} and the every-frame-labelled student on "
    "{C:unlabeled/none_all_labeled:ahead} ({C:unlabeled/none_all_labeled:lead2} on seed 2); with "
    "labelled images only, ahead of KD on {C:labeled/kd:ahead}, DKD on "
    "{C:labeled/dkd:ahead} and CWD on {C:labeled/cwd:ahead} ({C:labeled/cwd:lead1} on seed 1). So "
    "the \"every seed\" target fails twice ({C:unlabeled/none_all_labeled:lead2} and "
    "{C:labeled/cwd:lead1} points).",
    "The student with every frame labelled reaches {C:unlabeled/none_all_labeled}: LIX is "
    "{C:unlabeled/lix~unlabeled/none_all_labeled} it ({C:unlabeled/lix:mean2} vs "
    "{C:unlabeled/none_all_labeled:mean2} on the mean; by seed "
    "{C:unlabeled/none_all_labeled:lead0}, {C:unlabeled/none_all_labeled:lead1}, "
    "{C:unlabeled/none_all_labeled:lead2}); KD {C:unlabeled/kd:mean}, pseudo-labels "
    "{C:unlabeled/pseudo_label:mean}, DKD {C:unlabeled/dkd:mean} and LIX's first formulation "
    "(dynamic DWC) {C:unlabeled/lix_dynamic:mean}, 3 seeds each.",
    "Kernel regression back on (λ_KR = 1) gives {C:unlabeled/lix_kr1}, and the default leads it on "
    "{C:unlabeled/lix_kr1:ahead} seeds ({C:unlabeled/lix_kr1:lead0}, {C:unlabeled/lix_kr1:lead1}, "
    "{C:unlabeled/lix_kr1:lead2}",
    "**Why {C:unlabeled/lix:gap} and not 40 %",
    "LIX with the default config closes {C:unlabeled/lix:gap} of it",
    "gives test mIoU: teacher {D:teacher:mean}, CE student {D:none:mean}, KD {D:unlabeled/kd:mean}, "
    "pseudo-labels {D:unlabeled/pseudo_label:mean} and LIX {D:unlabeled/lix:mean} — "
    "{D:unlabeled/lix:gap} of the gap, against {D:unlabeled/kd:gap} for KD and "
    "{D:unlabeled/pseudo_label:gap} for pseudo-labels",
)


def test_readme_and_docs_prose_quotes_the_results_files():
  files = {"B": "benchmark.csv", "L": "benchmark_long.csv", "C": "benchmark_converged.csv",
           "D": "default_pipeline.csv", "K": "rehearsal_kitti.csv"}
  rows = {k: results_csv.read_csv(os.path.join(ROOT, "results", f)) for k, f in files.items()}
  readme = (  # The sentences under the README's headline table.
      "LIX with the default config closes {C:unlabeled/lix:gap} of the gap, ahead of KD, DKD, CWD and "
      "pseudo-labels on each of the 3 seeds (by at least {C:unlabeled/pseudo_label:lead2})",
      "{C:unlabeled/lix~unlabeled/none_all_labeled} labelling every frame "
      "({C:unlabeled/lix:mean2} vs "
      "{C:unlabeled/none_all_labeled:mean2}; by seed {C:unlabeled/none_all_labeled:lead0}, "
      "{C:unlabeled/none_all_labeled:lead1}, {C:unlabeled/none_all_labeled:lead2}).",
      "{C:labeled/lix~labeled/cwd} CWD ({C:labeled/lix:mean} vs {C:labeled/cwd:mean}; by seed "
      "{C:labeled/cwd:lead0}, "
      "{C:labeled/cwd:lead1}, {C:labeled/cwd:lead2}).",
      "validation mIoU teacher {K:teacher:mean}, CE student {K:none:mean}, LIX student "
      "{K:labeled/lix:mean};")
  data = ("(KITTI's test split is its validation split): teacher {K:teacher:mean}, CE student "
          "{K:none:mean}, LIX student {K:labeled/lix:mean} mIoU at native size, "
          "{K:labeled/lix:gap} of the gap",)
  for page, templates in (("docs/benchmark.md", _PROSE), ("README.md", readme),
                          ("docs/data.md", data)):
    text = " ".join(_page(page).split())
    for template in templates:
      quote = re.sub(r"\{([BLCDK]):([\w/.,;-]+~[\w/.,;~-]+)(?::([\w,]+))?(?:\|(\w+))?\}",
                     lambda m: _compared(rows[m[1]], m[2], m[3] or "miou", m[4] or ""), template)
      quote = re.sub(r"\{([BLCDK]):([\w/.-]+)(?::(\w+))?\}",
                     lambda m: benchmark.figure(TABLE, rows[m[1]], m[2], m[3] or ""), quote)
      assert " ".join(quote.split()) in text, (
          f"{page}'s prose does not quote the results (fix {page}): {quote!r}")


def test_readme_headline_claims_hold_seed_by_seed():
  """The README's words under the headline table: with unlabelled frames LIX is ahead of KD, DKD,
  CWD and pseudo-labels on each of 3 seeds, by at least the least of those differences it quotes."""
  rows = results_csv.read_csv(os.path.join(ROOT, "results", "benchmark_converged.csv"))
  baselines = ("unlabeled/kd", "unlabeled/dkd", "unlabeled/cwd", "unlabeled/pseudo_label")
  assert [benchmark.figure(TABLE, rows, b, "ahead") for b in baselines] == ["3 of 3"] * 4
  leads = {(b, s): float(benchmark.figure(TABLE, rows, b, f"lead{s}").replace("\u2212", "-"))
           for b in baselines for s in range(3)}
  least = min(leads, key=leads.get)
  assert least == ("unlabeled/pseudo_label", 2), f"the README quotes the wrong least lead: {least}"


def test_merge_appends_only_the_runs_the_results_file_lacks(tmp_path):
  columns = list(results_csv.RESULT_COLUMNS) + ["iou_road"]

  def write(path, rows):
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\r\n")
      writer.writeheader()
      writer.writerows(rows)

  def row(model, method, regime, seed, miou):
    return dict(model=model, method=method, fusion="intermediate", x_modality="depth",
                regime=regime, seed=seed, miou=miou, pixel_acc=0.9, iou_road=0.5)

  committed = [row("teacher", "-", "unlabeled", 0, 0.81), row("student", "lix", "unlabeled", 0, 0.73)]
  write(tmp_path / "into.csv", committed)
  new = [row("teacher", "-", "unlabeled", 0, 0.80),  # Re-trained: the committed row stays.
         row("student", "lix", "labeled", 0, 0.70), row("student", "dkd", "unlabeled", 0, 0.72)]
  write(tmp_path / "new.csv", new)
  added = results_csv.merge_csv(str(tmp_path / "into.csv"), str(tmp_path / "new.csv"))
  assert [(r["method"], r["regime"]) for r in added] == [("lix", "labeled"), ("dkd", "unlabeled")]
  merged = results_csv.read_csv(str(tmp_path / "into.csv"))
  assert [float(r["miou"]) for r in merged] == [0.81, 0.73, 0.70, 0.72]
  assert b"\n\n" not in (tmp_path / "into.csv").read_bytes().replace(b"\r", b"")
  assert results_csv.merge_csv(str(tmp_path / "into.csv"), str(tmp_path / "new.csv")) == []
  before = (tmp_path / "into.csv").read_bytes()
  # --replace: runs re-done with today's code overwrite theirs in place; unchanged ones stay put.
  write(tmp_path / "redo.csv", [row("student", "lix", "unlabeled", 0, 0.74),
                                row("student", "lix", "labeled", 0, 0.70),
                                row("student", "cwd", "unlabeled", 1, 0.71)])
  changed = results_csv.merge_csv(str(tmp_path / "into.csv"), str(tmp_path / "redo.csv"), replace=True)
  assert [(r["method"], r["regime"], r["seed"]) for r in changed] == [
      ("lix", "unlabeled", "0"), ("cwd", "unlabeled", "1")]
  merged = results_csv.read_csv(str(tmp_path / "into.csv"))
  assert [float(r["miou"]) for r in merged] == [0.81, 0.74, 0.70, 0.72, 0.71]
  after = (tmp_path / "into.csv").read_bytes()
  assert after.count(b"\r\n") == 6 and after.split(b"\r\n")[0] == before.split(b"\r\n")[0]
