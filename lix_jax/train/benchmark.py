"""The multi-seed benchmark of DESIGN §8 (issues 7 and 10): rows x seeds -> `benchmark.csv`.

A *row* is one line of the results table: a teacher, or a student trained by one method in one
regime (`labeled`: distillation on the labelled images only, the paper's; `unlabeled`: with the
unlabelled RGB-X frames, DESIGN §2.6) from one teacher (fusion, X modality). `ROWS` is the registry;
`benchmark.rows` picks and orders them, `benchmark.seeds` the seeds. Seed s of a student row
distils from seed s of its teacher, so teachers are trained once per (fusion, X, seed) and shared.
The plain student (`none`) never reads unlabelled frames, so its run serves both regimes.

Every run has its own sub-workdir and is re-used once finished, so the benchmark resumes where it
stopped and can be run in parts (`--config.benchmark.rows=...`). After each run `benchmark.csv`
(DESIGN §6 columns, test split), `benchmark.md` and `benchmark.png` are rewritten from every
finished run in the workdir (any row, the configured seeds), so partial results are never lost.

  python -m lix_jax.main --config=configs/benchmark.py --workdir=workdirs/benchmark
  python -m lix_jax.train.benchmark results/benchmark.csv [chart.png]  # README table (+ chart)
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import sys
from typing import Any

import ml_collections
import numpy as np

# Classes whose IoU depends most on geometry (thin, vertical or depth-bounded): shown per row.
GEOMETRY_CLASSES = ("wall", "pole", "person")


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table. `overrides` are flattened config keys applied to the student run."""
  model: str  # teacher | student
  method: str  # "-" for teachers; the name in the `method` column otherwise
  regime: str = "unlabeled"  # labeled | unlabeled
  fusion: str = "intermediate"  # of the (row's) teacher
  x_modality: str = "depth"
  distill_method: str = ""  # distill.method; "" = `method`
  overrides: tuple[tuple[str, Any], ...] = ()
  label: str = ""  # how the README table names it; "" = `method`


def _students(regime: str, specs: dict[str, dict[str, Any]]) -> dict[str, Row]:
  """Student rows named `<regime>/<name>`; `name` is the method column unless the spec sets one."""
  return {f"{regime}/{name}": Row("student", spec.pop("method", name), regime, **spec)
          for name, spec in specs.items()}


# The first formulation of LIX (DESIGN §2.3's `dynamic` controller at κ = 4, ARFD with its
# kernel-regression term): the config defaults until Nov 2026. Every row whose committed results
# were run under those defaults pins them here, so a row means what its results were run with
# whatever the defaults become; only `lix` (the default config by definition) has no overrides.
DYNAMIC = (("distill.controller", "dynamic"), ("distill.kappa", 4.0))
KR_ON = (("distill.lambda_kr", 1.0),)
# The default config of Nov 2026, spelled out for rows defined as "the default plus one change".
DEFAULT_LIX = (("distill.controller", "balanced_sym"), ("distill.kappa", 4.0),
               ("distill.class_balance", 1.0), ("distill.lambda_kr", 0.0))


def _balanced_lix(method: str, kappa: float, label: str, extra: tuple = (),
                  controller: str = "balanced", lambda_kr: float = 1.0,
                  **teacher) -> dict[str, Any]:
  """A LIX row with lix_jax's own class-balanced DWC (γ = 1; `balanced` or `balanced_sym`) at
  controller temperature `kappa`, ARFD's kernel regression at `lambda_kr`, plus `extra` overrides;
  `teacher` may set `fusion` / `x_modality`. κ = 1 and 2 are the best of the first and second
  rounds of configs/sweeps/class_balance.py, κ = 4 of configs/sweeps/balanced_round3.py, λ_KR = 0
  of configs/sweeps/balanced_round4.py, `balanced_sym` of configs/sweeps/balanced_round6.py."""
  overrides = (("distill.controller", controller), ("distill.kappa", kappa),
               ("distill.class_balance", 1.0), ("distill.lambda_kr", lambda_kr), *extra)
  return dict(method=method, distill_method="lix", overrides=overrides, label=label, **teacher)


def _lix_dynamic(**teacher) -> dict[str, Any]:
  return dict(method="lix_dynamic", distill_method="lix", overrides=DYNAMIC + KR_ON, **teacher)


ROWS: dict[str, Row] = {
    "teacher": Row("teacher", "-", label="teacher (intermediate fusion, depth)"),
    "teacher_late": Row("teacher", "-", fusion="late", label="teacher (late fusion, depth)"),
    "teacher_normal": Row("teacher", "-", x_modality="normal",
                          label="teacher (intermediate fusion, normals)"),
    "none": Row("student", "none", "labeled", label="student alone (CE)"),
    **_students("unlabeled", {
        # CE only at the images a distillation step sees (16 labelled + 16 unlabelled).
        "none_equal_images": dict(distill_method="none", overrides=(("train.batch_size", 32),),
                                  label="student alone, 2x batch (equal images)"),
        # Pseudo-labels from a perfect teacher: the same 16 + 16 images a step, but every one of
        # the 200 + 2 000 frames carries its ground-truth label (CE on all of them).
        "none_all_labeled": dict(
            distill_method="none", overrides=(("train.batch_size", 32),
                                              ("data.builder_config", "all_labeled")),
            label="student alone, every frame labelled (= perfect pseudo-labels)"),
        "kd": {}, "dkd": {}, "cwd": {}, "fitnet": {}, "pseudo_label": {},
        "dwld": dict(overrides=DYNAMIC, label="DWLD only (dynamic DWC)"),
        "arfd": dict(overrides=KR_ON, label="ARFD only"),
        "kr_only": dict(overrides=KR_ON, label="ARFD: KR only"),
        "cka_only": dict(label="ARFD: CKA only"),
        # LIX with the default config (DESIGN §2.3: symmetric class-balanced DWC, κ = 4, γ = 1;
        # §2.4: ARFD's CKA term, λ_KR = 0). No overrides: `lix` is whatever the default is.
        "lix": dict(label="LIX (default config)"),
        "lix_dynamic": _lix_dynamic(label="LIX, dynamic DWC κ = 4 + KR (first formulation)"),
        # The default with ARFD's kernel-regression term back on (DESIGN §2.4's one flag).
        "lix_kr1": dict(distill_method="lix", overrides=DEFAULT_LIX[:-1] + KR_ON,
                        label="LIX, default + kernel regression (λ_KR = 1)"),
        # The best of configs/sweeps/lix_tuning.py on the validation split (seed 0).
        "lix_kappa1": dict(distill_method="lix",
                           overrides=(("distill.controller", "dynamic"), ("distill.kappa", 1.0),
                                      *KR_ON),
                           label="LIX, dynamic κ = 1 + KR (tuned on val)"),
        "lix_balanced": _balanced_lix(
            "lix_balanced", 1.0, "LIX, class-balanced DWC, κ = 1 (lix_jax's own; tuned on val)"),
        "lix_balanced_kappa2": _balanced_lix(
            "lix_balanced_kappa2", 2.0,
            "LIX, class-balanced DWC, κ = 2 (lix_jax's own; tuned on val)"),
        "lix_balanced_kappa4": _balanced_lix(
            "lix_balanced_kappa4", 4.0,
            "LIX, class-balanced DWC, κ = 4 (lix_jax's own; tuned on val)"),
        # ARFD reduced to its CKA term: the best of configs/sweeps/balanced_round4.py and _round5.
        "lix_balanced_kappa4_cka": _balanced_lix(
            "lix_balanced_kappa4_cka", 4.0,
            "LIX, class-balanced κ = 4, ARFD's CKA term only (λ_KR = 0; tuned on val)",
            lambda_kr=0.0),
        "dwld_trust": dict(distill_method="dwld", overrides=(("distill.controller", "trust"),),
                           label="DWLD, trust controller"),
        "dwld_kappa-2": dict(distill_method="dwld", overrides=(("distill.controller", "dynamic"),
                                                               ("distill.kappa", -2.0)),
                             label="DWLD, dynamic kappa=-2"),
        "lix_dynamic_normal": _lix_dynamic(
            x_modality="normal", label="LIX, dynamic (first formulation), from normals teacher"),
        "lix_dynamic_late": _lix_dynamic(
            fusion="late", label="LIX, dynamic (first formulation), from late-fusion teacher"),
        "lix_balanced_kappa2_normal": _balanced_lix(
            "lix_balanced_kappa2", 2.0, "LIX, class-balanced κ = 2, from normals teacher",
            x_modality="normal"),
        "lix_balanced_kappa2_late": _balanced_lix(
            "lix_balanced_kappa2", 2.0, "LIX, class-balanced κ = 2, from late-fusion teacher",
            fusion="late"),
    }),
    **_students("labeled", {
        "kd": {}, "dkd": {}, "cwd": {},
        # κ and λ_KR as chosen on the unlabelled regime's validation split (not re-tuned here).
        "lix": dict(label="LIX (default config)"),
        "lix_dynamic": _lix_dynamic(label="LIX, dynamic DWC κ = 4 + KR (first formulation)"),
        "lix_balanced": _balanced_lix(
            "lix_balanced", 1.0, "LIX, class-balanced DWC, κ = 1 (lix_jax's own)"),
        # κ = 4 as chosen on the unlabelled regime's validation split (not re-tuned here).
        "lix_balanced_kappa4": _balanced_lix(
            "lix_balanced_kappa4", 4.0, "LIX, class-balanced DWC, κ = 4 (lix_jax's own)"),
        # The default with λ_L = 2: the best of configs/sweeps/balanced_sym_labeled_round2.py.
        "lix_l2": dict(distill_method="lix", overrides=DEFAULT_LIX + (("distill.lambda_l", 2.0),),
                       label="LIX, default + λ_L = 2 (tuned on val)"),
    }),
}

# Former row names, still accepted by `benchmark.rows`: the rows of the symmetric class-balanced
# LIX became `lix` when their config became the default (identical configs; results/README.md).
ALIASES = {
    "unlabeled/lix_balanced_sym_kappa4_cka": "unlabeled/lix",
    "labeled/lix_balanced_sym_kappa4_cka": "labeled/lix",
    "labeled/lix_balanced_sym_kappa4_cka_l2": "labeled/lix_l2",
    "unlabeled/lix_normal": "unlabeled/lix_dynamic_normal",
    "unlabeled/lix_late": "unlabeled/lix_dynamic_late",
}


def get_row(name: str) -> Row:
  name = ALIASES.get(name, name)
  if name not in ROWS:
    raise KeyError(f"Unknown benchmark row {name!r}. Available rows are: {sorted(ROWS)}")
  return ROWS[name]


def _teacher_key(row: Row, seed: int) -> str:
  return f"teachers/{row.fusion}_{row.x_modality}_seed{seed}"


def run_dir(name: str, seed: int) -> str:
  """The sub-workdir of row `name`, seed `seed` (relative to the benchmark workdir)."""
  row = get_row(name)
  if row.model == "teacher":
    return _teacher_key(row, seed)
  if (row.distill_method or row.method) == "none" and not row.overrides:
    return f"students/none_seed{seed}"  # One run for both regimes: it never reads unlabelled frames.
  return f"students/{row.regime}/{row.method}_{row.fusion}_{row.x_modality}_seed{seed}"


def _copy(config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(config.to_dict())


def teacher_config(config, row: Row, seed: int) -> ml_collections.ConfigDict:
  c = _copy(config)
  c.seed = seed
  c.teacher.fusion = row.fusion
  c.data.x_modality = row.x_modality
  c.train.num_steps = config.pipeline.teacher_num_steps
  return c


def student_config(config, row: Row, seed: int, teacher_workdir: str) -> ml_collections.ConfigDict:
  c = teacher_config(config, row, seed)
  c.train.num_steps = config.train.num_steps
  c.distill.method = row.distill_method or row.method
  c.distill.teacher_workdir = teacher_workdir
  c.distill.unlabeled_split = config.distill.unlabeled_split if row.regime == "unlabeled" else ""
  for key, value in row.overrides:
    section, field = key.split(".")
    if field not in c[section]:
      raise KeyError(f"benchmark row override {key!r}: no such config key")
    c[section][field] = value
  return c


def result_row(config, name: str, seed: int, metrics: dict[str, Any]) -> dict[str, Any]:
  """One `benchmark.csv` row (DESIGN §6 columns): the pipeline's row of this row's run config."""
  from lix_jax.train import experiment  # noqa: PLC0415 (the table CLI needs no jax)
  row = get_row(name)
  run_config = (teacher_config(config, row, seed) if row.model == "teacher"
                else student_config(config, row, seed, teacher_workdir=""))
  return experiment.result_row(run_config, row.model, row.method, seed, metrics)


def _finished(config, workdir: str, name: str, seed: int) -> dict[str, Any] | None:
  """The finished run of row `name`, seed `seed`, if its stored config is the row's (DESIGN §6
  re-use rule: a run of another config is an error naming the keys, never a stale result)."""
  from lix_jax.train import experiment  # noqa: PLC0415
  row = get_row(name)
  teacher_dir = os.path.join(workdir, _teacher_key(row, seed))
  if row.model == "teacher":
    run_config, role = teacher_config(config, row, seed), "teacher"
  else:
    run_config = student_config(config, row, seed, teacher_dir)
    role = experiment.role_of(run_config.distill.method)
  return experiment.finished_result(os.path.join(workdir, run_dir(name, seed)), run_config, role)


def write_outputs(config, workdir: str) -> list[dict[str, Any]]:
  """Rewrites benchmark.csv / .md / .png from every finished run in `workdir` of any row of `ROWS`
  and seed of `benchmark.seeds`, so a part run (a preset, a subset of rows) drops nothing."""
  from lix_jax.train import experiment  # noqa: PLC0415
  rows = []
  for name in ROWS:
    for seed in config.benchmark.seeds:
      result = _finished(config, workdir, name, seed)
      if result is None:
        continue
      row = result_row(config, name, seed, result["test"])
      rows.append(row)
      if get_row(name) is ROWS["none"]:  # The plain student is the reference of both regimes.
        rows.append(dict(row, regime="unlabeled"))
  if not rows:
    return rows
  columns = list(experiment.RESULT_COLUMNS) + [k for k in rows[0] if k.startswith("iou_")]
  tmp = os.path.join(workdir, "benchmark.csv.tmp")
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, os.path.join(workdir, "benchmark.csv"))
  with open(os.path.join(workdir, "benchmark.md"), "w") as f:
    f.write(table_markdown(rows))
  bar_chart(rows, os.path.join(workdir, "benchmark.png"))
  return rows


def run_benchmark(config, workdir: str) -> list[dict[str, Any]]:
  """Trains every (row, seed) of the config not finished yet, in order; returns the CSV rows."""
  from lix_jax.train import experiment  # noqa: PLC0415
  names = [ALIASES.get(n, n) for n in config.benchmark.rows]
  for name in names:
    get_row(name)  # Every name checked before hours of training.
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"benchmark.rows lists {repeated} more than once")
  os.makedirs(workdir, exist_ok=True)
  experiment.prepare_sources(config)
  for seed in config.benchmark.seeds:  # Seed-major: a stopped benchmark has whole seeds.
    for name in names:
      row = get_row(name)
      teacher_dir = os.path.join(workdir, _teacher_key(row, seed))
      experiment.run_role(teacher_config(config, row, seed), teacher_dir, None)
      if row.model == "student":
        c = student_config(config, row, seed, teacher_dir)
        result = experiment.run_role(c, os.path.join(workdir, run_dir(name, seed)),
                                     c.distill.method)
        logging.info("benchmark %s seed %d: test mIoU %.4f", name, seed, result["test"]["miou"])
      write_outputs(config, workdir)
  rows = write_outputs(config, workdir)
  _write_pictures(config, workdir)
  print(table_markdown(rows))
  return rows


def _write_pictures(config, workdir: str) -> None:
  """Prediction grid, CKA bars and DWC weight maps of the first seed's teacher, CE student and
  LIX student (default config, unlabelled regime), when those runs are finished; the first
  formulation's LIX student (`unlabeled/lix_dynamic`) joins the grid and the CKA bars when its run
  is finished too."""
  from lix_jax.train import report  # noqa: PLC0415
  seed = config.benchmark.seeds[0]
  runs = {"teacher": ("teacher", "teacher"), "student": ("none", "student"),
          "LIX student": ("unlabeled/lix", "distill")}
  if all(_finished(config, workdir, name, seed) is not None for name, _ in runs.values()):
    if _finished(config, workdir, "unlabeled/lix_dynamic", seed) is not None:
      runs["LIX, dynamic DWC"] = ("unlabeled/lix_dynamic", "distill")
    dirs = {label: (os.path.join(workdir, run_dir(name, seed)), role)
            for label, (name, role) in runs.items()}
    lix = get_row("unlabeled/lix")
    teacher_dir = os.path.join(workdir, _teacher_key(lix, seed))
    report.write_report(student_config(config, lix, seed, teacher_dir), workdir, dirs,
                        config.pipeline.num_predictions)


def _matches(row: Row, r: dict[str, Any], regime: str) -> bool:
  return ((row.model, row.method, row.fusion, row.x_modality) == (r["model"], r["method"], r["fusion"],
          r["x_modality"]) and (row.model == "teacher" or r["regime"] == regime))


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One entry per table line: teachers first, then each regime in `ROWS` order. Each has
  `regime`, `label`, `seeds`, `mean`/`std` of test mIoU over seeds (fractions), `gap` = the share
  of the teacher–student gap closed (intermediate-fusion depth teacher vs the CE-only student of
  the same regime, each the mean over its seeds; None for teachers and the reference) and
  `iou_<class>` means for the geometry-sensitive classes."""
  def mean_miou(row: Row, regime: str) -> float:
    values = [float(r["miou"]) for r in rows if _matches(row, r, regime)]
    return float(np.mean(values)) if values else math.nan

  teacher = mean_miou(ROWS["teacher"], "-")
  geometry = [c for c in GEOMETRY_CLASSES if rows and f"iou_{c}" in rows[0]]
  lines = [("-", row) for row in ROWS.values() if row.model == "teacher"]
  for regime in ("labeled", "unlabeled"):
    others = [(regime, row) for row in ROWS.values() if row.model == "student"
              and row.regime == regime and row is not ROWS["none"]
              and any(_matches(row, r, regime) for r in rows)]
    if others:  # The CE student heads each regime that has something to compare with it.
      lines += [(regime, ROWS["none"])] + others
  out = []
  for regime, row in lines:
    group = [r for r in rows if _matches(row, r, regime)]
    if not group:
      continue
    values = [float(r["miou"]) for r in group]
    student = mean_miou(ROWS["none"], regime)
    mean = float(np.mean(values))
    is_competitor = row.model == "student" and row is not ROWS["none"] and teacher > student
    entry = dict(regime=regime, label=row.label or row.method, seeds=len(group), mean=mean,
                 std=float(np.std(values)),
                 gap=(mean - student) / (teacher - student) if is_competitor else None)
    for c in geometry:
      entry[f"iou_{c}"] = float(np.mean([float(r[f"iou_{c}"]) for r in group]))
    out.append(entry)
  return out


def table_markdown(rows: list[dict[str, Any]]) -> str:
  """The README's table: `summarize(rows)` in percent."""
  entries = summarize(rows)
  geometry = [c for c in GEOMETRY_CLASSES if entries and f"iou_{c}" in entries[0]]
  lines = ["| regime | row | seeds | test mIoU (%) | gap closed | "
           + " | ".join(f"IoU {c}" for c in geometry) + " |", "|" + "---|" * (5 + len(geometry))]
  for e in entries:
    gap = "" if e["gap"] is None else f"{100 * e['gap']:.0f} %"
    cells = [f"{100 * e[f'iou_{c}']:.1f}" for c in geometry]
    lines.append(f"| {e['regime']} | {e['label']} | {e['seeds']} | {100 * e['mean']:.1f} ± "
                 f"{100 * e['std']:.1f} | {gap} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def per_seed_markdown(rows: list[dict[str, Any]], regime: str, lix: str = "lix") -> str:
  """LIX minus each other student row of `regime`, per seed, in test-mIoU points (2 decimals).

  `lix` names the row (`<regime>/<lix>` in `ROWS`) the others are subtracted from; the columns are
  the other rows of `summarize`'s table for that regime, headed by their `method`; a cell is empty
  where that row lacks the seed. The last line counts the seeds on which LIX is ahead. Returns ""
  when `rows` hold no LIX run of the regime."""
  def by_seed(row: Row) -> dict[int, float]:
    return {int(r["seed"]): 100 * float(r["miou"]) for r in rows if _matches(row, r, regime)}

  target = get_row(f"{regime}/{lix}")
  ours = by_seed(target)
  if not ours:
    return ""
  others = [row for row in ROWS.values() if row.model == "student" and row is not target
            and (row.regime == regime or row is ROWS["none"]) and by_seed(row)]
  others.sort(key=lambda row: row is not ROWS["none"])  # The CE student first, as in the table.
  columns = [(row.method, by_seed(row)) for row in others]
  seeds = sorted(ours)
  lines = [f"| seed | {lix} (%) | " + " | ".join(f"{lix} − {m}" for m, _ in columns) + " |",
           "|" + "---|" * (2 + len(columns))]
  for seed in seeds:
    cells = [f"{ours[seed] - values[seed]:+.2f}" if seed in values else "" for _, values in columns]
    lines.append(f"| {seed} | {ours[seed]:.2f} | " + " | ".join(cells) + " |")
  ahead = [f"{sum(ours[s] > v[s] for s in seeds if s in v)} of {sum(s in v for s in seeds)}"
           for _, v in columns]
  lines.append("| ahead on | | " + " | ".join(ahead) + " |")
  return "\n".join(lines) + "\n"


def figure(rows: list[dict[str, Any]], name: str, field: str = "") -> str:
  """How prose quotes row `name` (a `ROWS` key) of a results file, as the tables round it.

  `field`: "" = "mean ± std" (the table's cell), "mean" (1 decimal), "mean2" (2 decimals), "gap"
  (the table's "gap closed" cell), "seeds" (each seed's test mIoU, 1 decimal, by seed) or
  "iou_<class>" (that class's mean test IoU, 1 decimal)."""
  row = get_row(name)
  regime = "-" if row.model == "teacher" else row.regime
  if row is ROWS["none"]:
    regime = "unlabeled"
  group = [r for r in rows if _matches(row, r, regime)]
  if field == "seeds":
    group.sort(key=lambda r: int(r["seed"]))
    return ", ".join(f"{100 * float(r['miou']):.1f}" for r in group)
  if field.startswith("iou_"):
    return f"{100 * np.mean([float(r[field]) for r in group]):.1f}"
  entry = next(e for e in summarize(rows)
               if e["regime"] == regime and e["label"] == (row.label or row.method))
  return {"": f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}",
          "mean": f"{100 * entry['mean']:.1f}", "mean2": f"{100 * entry['mean']:.2f}",
          "gap": "" if entry["gap"] is None else f"{100 * entry['gap']:.0f} %"}[field]


def bar_chart(rows: list[dict[str, Any]], path: str) -> None:
  """benchmark.png: mean ± std test mIoU per table line (teachers grey)."""
  from lix_jax import viz  # noqa: PLC0415 (matplotlib only when a chart is drawn)
  prefix = {"-": "", "labeled": "labelled only: ", "unlabeled": "+ unlabelled: "}
  viz.results_bar_chart(
      [dict(method="teacher" if e["regime"] == "-" else "student",
            label=prefix[e["regime"]] + e["label"], miou=e["mean"], std=e["std"])
       for e in summarize(rows)],
      title="test mIoU, mean ± std over seeds", path=path)


def read_csv(path: str) -> list[dict[str, Any]]:
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ValueError(f"{path}: no rows")
  return rows


def _run_key(r: dict[str, Any]) -> tuple:
  return tuple(str(r[k]) for k in ("model", "method", "fusion", "x_modality", "regime", "seed"))


def merge_csv(into: str, new: str) -> list[dict[str, Any]]:
  """Appends to the results file `into` the rows of `new` (a benchmark workdir's benchmark.csv)
  whose run (model, method, fusion, X, regime, seed) `into` lacks; returns the appended rows.
  A run already in `into` is kept as it is (the committed figure stays the one quoted)."""
  with open(into, newline="") as f:
    text = f.read()
  rows = read_csv(into)
  have = {_run_key(r) for r in rows}
  added = [r for r in read_csv(new) if _run_key(r) not in have]
  if added:
    columns = list(rows[0])
    terminator = "\r\n" if "\r\n" in text else "\n"
    with open(into, "a", newline="") as f:
      csv.DictWriter(f, fieldnames=columns, lineterminator=terminator,
                     extrasaction="raise").writerows(added)
  return added


def main(argv: list[str]) -> None:
  """`python -m lix_jax.train.benchmark CSV [CHART.png] [--per-seed=REGIME] [--merge=NEW.csv]`:
  the README's table of CSV (and its chart); with `--per-seed` the per-seed LIX-minus-baseline
  table of REGIME instead; with `--merge` first append NEW.csv's runs that CSV lacks."""
  args = [a for a in argv if not a.startswith("--")]
  regimes = [a.split("=", 1)[1] for a in argv if a.startswith("--per-seed=")]
  path = args[0] if args else "results/benchmark.csv"
  for new in (a.split("=", 1)[1] for a in argv if a.startswith("--merge=")):
    for r in merge_csv(path, new):
      print(f"added {r['model']} {r['method']} {r['regime']} seed {r['seed']}: test mIoU "
            f"{100 * float(r['miou']):.2f}", file=sys.stderr)
  csv_rows = read_csv(path)
  if regimes:
    print(per_seed_markdown(csv_rows, regimes[0]), end="")
    return
  print(table_markdown(csv_rows), end="")
  if len(args) > 1:
    bar_chart(csv_rows, args[1])


if __name__ == "__main__":
  main(sys.argv[1:])
