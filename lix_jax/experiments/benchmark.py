"""The multi-seed benchmark of DESIGN §8 (issues 7 and 10): rows x seeds -> `benchmark.csv`.

A *row* is one line of the results table: a teacher, or a student trained by one method in one
regime (`labeled`: distillation on the labelled images only, the paper's; `unlabeled`: with the
unlabelled RGB-X frames, DESIGN §2.6) from one teacher (fusion, X modality). The rows are a table
of the config (`benchmark.table`, written in `configs/benchmark.py`, as big_vision keeps its
experiment tables in configs); `benchmark.rows` picks and orders them, `benchmark.seeds` the seeds. Seed s of a student row
distils from seed s of its teacher, so teachers are trained once per (fusion, X, seed) and shared.
The plain student (`none`) never reads unlabelled frames, so its run serves both regimes.

Every run has its own sub-workdir and is re-used once finished, so the benchmark resumes where it
stopped and can be run in parts (`--config.benchmark.rows=...`). After each run `benchmark.csv`
(DESIGN §6 columns, test split), `benchmark.md` and `benchmark.png` are rewritten from every
finished run in the workdir (any row, the configured seeds), so partial results are never lost.

  python -m lix_jax.main --config=configs/benchmark.py --workdir=workdirs/benchmark
  python -m lix_jax.experiments.benchmark results/benchmark.csv [chart.png]  # README table (+ chart)

The table functions (`summarize`, `table_markdown`, `per_seed_markdown`, `figure`, `compare`) take
the `Table` that names and orders the rows of a results file: `Table.of(config)`, or `load_table()`
for the committed `configs/benchmark.py`.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from lix_jax import config as config_lib
from lix_jax.experiments import results_csv

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


class Table:
  """The rows of a benchmark by name, in table order, and the former names still accepted."""

  def __init__(self, rows: Sequence[Mapping[str, Any]], aliases: Mapping[str, str] = ()):
    """`rows`: mappings with a `name` and `Row`'s fields (`config.benchmark.table`)."""
    self.rows: dict[str, Row] = {}
    for spec in rows:
      spec = dict(spec)
      name = spec.pop("name")
      spec["overrides"] = tuple((str(k), v) for k, v in spec.get("overrides", ()))
      self.rows[name] = Row(**spec)
    self.aliases = dict(aliases)

  @property
  def teacher(self) -> Row:
    """The reference teacher (intermediate fusion, depth): the top of the gap."""
    return self.get("teacher")

  @property
  def ce(self) -> Row:
    """The student trained alone (cross-entropy): the bottom of the gap, in both regimes."""
    return self.get("none")

  @classmethod
  def of(cls, config) -> Table:
    return cls(config.benchmark.table, config.benchmark.aliases)

  def get(self, name: str) -> Row:
    name = self.aliases.get(name, name)
    if name not in self.rows:
      raise KeyError(f"Unknown benchmark row {name!r}. Available rows are: {sorted(self.rows)}")
    return self.rows[name]

  def run_dir(self, name: str, seed: int) -> str:
    """The sub-workdir of row `name`, seed `seed` (relative to the benchmark workdir)."""
    row = self.get(name)
    if row.model == "teacher":
      return _teacher_key(row, seed)
    if (row.distill_method or row.method) == "none" and not row.overrides:
      return f"students/none_seed{seed}"  # One run for both regimes: it reads no unlabelled frames.
    return f"students/{row.regime}/{row.method}_{row.fusion}_{row.x_modality}_seed{seed}"


def load_table(path: str = "configs/benchmark.py") -> Table:
  """The table of a benchmark config file (the committed one by default, from the repo root)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such benchmark config (run from the repository root, or "
                            "pass --config=PATH)")
  spec = importlib.util.spec_from_file_location("lix_benchmark_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return Table.of(module.get_config())


def _teacher_key(row: Row, seed: int) -> str:
  return f"teachers/{row.fusion}_{row.x_modality}_seed{seed}"


def teacher_config(config, row: Row, seed: int) -> ml_collections.ConfigDict:
  return config_lib.with_overrides(config, {
      "seed": seed, "teacher.fusion": row.fusion, "data.x_modality": row.x_modality,
      "train.num_steps": config.pipeline.teacher_num_steps})


def student_config(config, row: Row, seed: int, teacher_workdir: str) -> ml_collections.ConfigDict:
  return config_lib.with_overrides(teacher_config(config, row, seed), {
      "train.num_steps": config.train.num_steps, "distill.method": row.distill_method or row.method,
      "distill.teacher_workdir": teacher_workdir,
      "distill.unlabeled_split": config.distill.unlabeled_split if row.regime == "unlabeled" else "",
      **dict(row.overrides)})


def result_row(config, table: Table, name: str, seed: int, metrics: dict[str, Any]
               ) -> dict[str, Any]:
  """One `benchmark.csv` row (DESIGN §6 columns): the pipeline's row of this row's run config."""
  from lix_jax.experiments import pipeline  # noqa: PLC0415 (the table CLI needs no jax)
  row = table.get(name)
  run_config = (teacher_config(config, row, seed) if row.model == "teacher"
                else student_config(config, row, seed, teacher_workdir=""))
  return pipeline.result_row(run_config, row.model, row.method, seed, metrics)


def _finished(config, table: Table, workdir: str, name: str, seed: int) -> dict[str, Any] | None:
  """The finished run of row `name`, seed `seed`, if its stored config is the row's (DESIGN §6
  re-use rule: a run of another config is an error naming the keys, never a stale result)."""
  from lix_jax.experiments import pipeline  # noqa: PLC0415
  row = table.get(name)
  teacher_dir = os.path.join(workdir, _teacher_key(row, seed))
  if row.model == "teacher":
    run_config, role = teacher_config(config, row, seed), "teacher"
  else:
    run_config = student_config(config, row, seed, teacher_dir)
    role = pipeline.role_of(run_config.distill.method)
  return pipeline.finished_result(os.path.join(workdir, table.run_dir(name, seed)), run_config,
                                  role)


def write_outputs(config, table: Table, workdir: str) -> list[dict[str, Any]]:
  """Rewrites benchmark.csv / .md / .png from every finished run in `workdir` of any row of the table
  and seed of `benchmark.seeds`, so a part run (a preset, a subset of rows) drops nothing."""
  rows = []
  for name in table.rows:
    for seed in config.benchmark.seeds:
      result = _finished(config, table, workdir, name, seed)
      if result is None:
        continue
      row = result_row(config, table, name, seed, result["test"])
      rows.append(row)
      if table.rows[name] is table.ce:  # The plain student is the reference of both regimes.
        rows.append(dict(row, regime="unlabeled"))
  if not rows:
    return rows
  results_csv.write_csv(os.path.join(workdir, "benchmark.csv"), rows)
  with open(os.path.join(workdir, "benchmark.md"), "w") as f:
    f.write(table_markdown(table, rows))
  bar_chart(table, rows, os.path.join(workdir, "benchmark.png"))
  return rows


def run_benchmark(config, workdir: str) -> list[dict[str, Any]]:
  """Trains every (row, seed) of the config not finished yet, in order; returns the CSV rows."""
  from lix_jax.experiments import pipeline  # noqa: PLC0415
  table = Table.of(config)
  names = [table.aliases.get(n, n) for n in config.benchmark.rows]
  for name in names:
    table.get(name)  # Every name checked before hours of training.
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"benchmark.rows lists {repeated} more than once")
  os.makedirs(workdir, exist_ok=True)
  pipeline.prepare_sources(config)
  for seed in config.benchmark.seeds:  # Seed-major: a stopped benchmark has whole seeds.
    for name in names:
      row = table.get(name)
      teacher_dir = os.path.join(workdir, _teacher_key(row, seed))
      pipeline.run_role(teacher_config(config, row, seed), teacher_dir, None)
      if row.model == "student":
        c = student_config(config, row, seed, teacher_dir)
        result = pipeline.run_role(c, os.path.join(workdir, table.run_dir(name, seed)),
                                     c.distill.method)
        logging.info("benchmark %s seed %d: test mIoU %.4f", name, seed, result["test"]["miou"])
      write_outputs(config, table, workdir)
  rows = write_outputs(config, table, workdir)
  _write_pictures(config, table, workdir)
  print(table_markdown(table, rows))
  return rows


def _write_pictures(config, table: Table, workdir: str) -> None:
  """Prediction grid, CKA bars and DWC weight maps of the first seed's teacher, CE student and
  LIX student (default config, unlabelled regime), when those runs are finished; the first
  formulation's LIX student (`unlabeled/lix_dynamic`) joins the grid and the CKA bars when its run
  is finished too."""
  from lix_jax.experiments import report  # noqa: PLC0415
  seed = config.benchmark.seeds[0]
  runs = {"teacher": ("teacher", "teacher"), "student": ("none", "student"),
          "LIX student": ("unlabeled/lix", "distill")}
  if all(_finished(config, table, workdir, name, seed) is not None for name, _ in runs.values()):
    if _finished(config, table, workdir, "unlabeled/lix_dynamic", seed) is not None:
      runs["LIX, dynamic DWC"] = ("unlabeled/lix_dynamic", "distill")
    dirs = {label: (os.path.join(workdir, table.run_dir(name, seed)), role)
            for label, (name, role) in runs.items()}
    lix = table.get("unlabeled/lix")
    teacher_dir = os.path.join(workdir, _teacher_key(lix, seed))
    report.write_report(student_config(config, lix, seed, teacher_dir), workdir, dirs,
                        config.pipeline.num_predictions)


def _matches(row: Row, r: dict[str, Any], regime: str) -> bool:
  return ((row.model, row.method, row.fusion, row.x_modality) == (r["model"], r["method"], r["fusion"],
          r["x_modality"]) and (row.model == "teacher" or r["regime"] == regime))


def summarize(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One entry per table line: teachers first, then each regime in `table` order. Each has
  `regime`, `label`, `seeds`, `mean`/`std` of test mIoU over seeds (fractions), `gap` = the share
  of the teacher–student gap closed (intermediate-fusion depth teacher vs the CE-only student of
  the same regime, each the mean over its seeds; None for teachers and the reference) and
  `iou_<class>` means for the geometry-sensitive classes."""
  def mean_miou(row: Row, regime: str) -> float:
    values = [float(r["miou"]) for r in rows if _matches(row, r, regime)]
    return float(np.mean(values)) if values else math.nan

  teacher = mean_miou(table.teacher, "-")
  geometry = [c for c in GEOMETRY_CLASSES if rows and f"iou_{c}" in rows[0]]
  lines = [("-", row) for row in table.rows.values() if row.model == "teacher"]
  for regime in ("labeled", "unlabeled"):
    others = [(regime, row) for row in table.rows.values() if row.model == "student"
              and row.regime == regime and row is not table.ce
              and any(_matches(row, r, regime) for r in rows)]
    if others:  # The CE student heads each regime that has something to compare with it.
      lines += [(regime, table.ce)] + others
  out = []
  for regime, row in lines:
    group = [r for r in rows if _matches(row, r, regime)]
    if not group:
      continue
    values = [float(r["miou"]) for r in group]
    student = mean_miou(table.ce, regime)
    mean = float(np.mean(values))
    is_competitor = row.model == "student" and row is not table.ce and teacher > student
    entry = dict(regime=regime, label=row.label or row.method, seeds=len(group), mean=mean,
                 std=float(np.std(values)),
                 gap=(mean - student) / (teacher - student) if is_competitor else None)
    for c in geometry:
      entry[f"iou_{c}"] = float(np.mean([float(r[f"iou_{c}"]) for r in group]))
    out.append(entry)
  return out


def table_markdown(table: Table, rows: list[dict[str, Any]]) -> str:
  """The README's table: `summarize(table, rows)` in percent."""
  entries = summarize(table, rows)
  geometry = [c for c in GEOMETRY_CLASSES if entries and f"iou_{c}" in entries[0]]
  lines = ["| regime | row | seeds | test mIoU (%) | gap closed | "
           + " | ".join(f"IoU {c}" for c in geometry) + " |", "|" + "---|" * (5 + len(geometry))]
  for e in entries:
    gap = "" if e["gap"] is None else f"{100 * e['gap']:.0f} %"
    cells = [f"{100 * e[f'iou_{c}']:.1f}" for c in geometry]
    lines.append(f"| {e['regime']} | {e['label']} | {e['seeds']} | {100 * e['mean']:.1f} ± "
                 f"{100 * e['std']:.1f} | {gap} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _by_seed(row: Row, rows: list[dict[str, Any]], regime: str) -> dict[int, float]:
  """Test mIoU (%) of `row`'s runs in `regime`, by seed."""
  return {int(r["seed"]): 100 * float(r["miou"]) for r in rows if _matches(row, r, regime)}


def _ahead_on(ours: dict[int, float], theirs: dict[int, float]) -> str:
  """The per-seed table's "K of N": of the N seeds both ran, the K on which `ours` is higher."""
  shared = [s for s in ours if s in theirs]
  return f"{sum(ours[s] > theirs[s] for s in shared)} of {len(shared)}"


def per_seed_markdown(table: Table, rows: list[dict[str, Any]], regime: str, lix: str = "lix"
                      ) -> str:
  """LIX minus each other student row of `regime`, per seed, in test-mIoU points (2 decimals).

  `lix` names the row (`<regime>/<lix>` of `table`) the others are subtracted from; the columns are
  the other rows of `summarize`'s table for that regime, headed by their `method`; a cell is empty
  where that row lacks the seed. The last line counts the seeds on which LIX is ahead. Returns ""
  when `rows` hold no LIX run of the regime."""
  target = table.get(f"{regime}/{lix}")
  ours = _by_seed(target, rows, regime)
  if not ours:
    return ""
  others = sorted((row for row in table.rows.values() if row.model == "student"
                   and row is not target and (row.regime == regime or row is table.ce)),
                  key=lambda row: row is not table.ce)  # The CE student first, as in the table.
  columns = [(row.method, values) for row in others if (values := _by_seed(row, rows, regime))]
  seeds = sorted(ours)
  lines = [f"| seed | {lix} (%) | " + " | ".join(f"{lix} − {m}" for m, _ in columns) + " |",
           "|" + "---|" * (2 + len(columns))]
  for seed in seeds:
    cells = [f"{ours[seed] - values[seed]:+.2f}" if seed in values else "" for _, values in columns]
    lines.append(f"| {seed} | {ours[seed]:.2f} | " + " | ".join(cells) + " |")
  lines.append("| ahead on | | " + " | ".join(_ahead_on(ours, v) for _, v in columns) + " |")
  return "\n".join(lines) + "\n"


def _quoted(table: Table, rows: list[dict[str, Any]], name: str) -> tuple[Row, str, list[dict]]:
  """Row `name`, the regime prose quotes it in, and its runs there."""
  row = table.get(name)
  regime = "-" if row.model == "teacher" else row.regime
  if row is table.ce and any(r["regime"] == "unlabeled" for r in rows):
    regime = "unlabeled"  # A benchmark file lists the CE student once per regime; quote one.
  return row, regime, [r for r in rows if _matches(row, r, regime)]


def compare(table: Table, rows: list[dict[str, Any]], a: str, b: str, field: str = "miou") -> str:
  """How prose compares row `a` with row `b` on `field` ("miou" or "iou_<class>"): "level with"
  when their means over seeds differ by less than max(pooled std, 0.1 points), the pooled std
  being sqrt((s_a² + s_b²) / 2) of the stds over seeds the tables print; else "above" / "below"."""
  x, y = (np.array([100 * float(r[field]) for r in _quoted(table, rows, n)[2]]) for n in (a, b))
  if not (x.size and y.size):
    raise ValueError(f"no runs of {a if not x.size else b!r} to compare")
  diff, level = x.mean() - y.mean(), max(math.sqrt((x.var() + y.var()) / 2), 0.1)
  return "level with" if abs(diff) < level else "above" if diff > 0 else "below"


def figure(table: Table, rows: list[dict[str, Any]], name: str, field: str = "") -> str:
  """How prose quotes row `name` (of `table`) of a results file, as the tables round it.

  `field`: "" = "mean ± std" (the table's cell), "mean" (1 decimal), "mean2" (2 decimals), "gap"
  (the table's "gap closed" cell), "seeds" (each seed's test mIoU, 1 decimal, by seed),
  "iou_<class>" (that class's mean test IoU, 1 decimal), "lead<seed>" (that seed's cell of
  `per_seed_markdown`: the regime's LIX minus this row, signed, 2 decimals, "−" for behind) or
  "ahead" (its "ahead on" cell: "K of N", the seeds both ran on which LIX is ahead)."""
  row, regime, group = _quoted(table, rows, name)
  if field.startswith("lead") or field == "ahead":
    lix = _by_seed(table.get(f"{regime}/lix"), rows, regime) if row.model != "teacher" else {}
    ours = _by_seed(row, rows, regime)
    seeds = [s for s in sorted(lix) if s in ours] if field == "ahead" else [int(field[len("lead"):])]
    if not seeds or any(s not in lix or s not in ours for s in seeds):
      raise ValueError(f"no LIX-minus-{name!r} difference on seed(s) {seeds or 'any'} in regime "
                       f"{regime!r}")
    if field == "ahead":
      return _ahead_on(lix, ours)
    return f"{lix[seeds[0]] - ours[seeds[0]]:+.2f}".replace("-", "\u2212")
  if field == "seeds":
    group.sort(key=lambda r: int(r["seed"]))
    return ", ".join(f"{100 * float(r['miou']):.1f}" for r in group)
  if field.startswith("iou_"):
    return f"{100 * np.mean([float(r[field]) for r in group]):.1f}"
  entry = next(e for e in summarize(table, rows)
               if e["regime"] == regime and e["label"] == (row.label or row.method))
  return {"": f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}",
          "mean": f"{100 * entry['mean']:.1f}", "mean2": f"{100 * entry['mean']:.2f}",
          "gap": "" if entry["gap"] is None else f"{100 * entry['gap']:.0f} %"}[field]


def bar_chart(table: Table, rows: list[dict[str, Any]], path: str) -> None:
  """benchmark.png: mean ± std test mIoU per table line (teachers grey)."""
  from lix_jax import plots  # noqa: PLC0415 (matplotlib only when a chart is drawn)
  prefix = {"-": "", "labeled": "labelled only: ", "unlabeled": "+ unlabelled: "}
  plots.results_bar_chart(
      [dict(method="teacher" if e["regime"] == "-" else "student",
            label=prefix[e["regime"]] + e["label"], miou=e["mean"], std=e["std"])
       for e in summarize(table, rows)],
      title="test mIoU, mean ± std over seeds", path=path)


def main(argv: list[str]) -> None:
  """`python -m lix_jax.experiments.benchmark CSV [CHART.png] [--per-seed=REGIME] [--merge=NEW.csv]
  [--replace=NEW.csv] [--config=configs/benchmark.py]`: the README's table of CSV (and its chart),
  rows named and ordered by the config's table; with `--per-seed` the per-seed LIX-minus-baseline
  table of REGIME instead; with `--merge` first append NEW.csv's runs that CSV lacks, with
  `--replace` also overwrite the runs both have with NEW.csv's values."""
  args = [a for a in argv if not a.startswith("--")]
  regimes = [a.split("=", 1)[1] for a in argv if a.startswith("--per-seed=")]
  table = load_table(next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
                          "configs/benchmark.py"))
  path = args[0] if args else "results/benchmark.csv"
  for option in ("--merge=", "--replace="):
    for new in (a.split("=", 1)[1] for a in argv if a.startswith(option)):
      committed = {results_csv.run_key(r) for r in results_csv.read_csv(path)}
      for r in results_csv.merge_csv(path, new, replace=option == "--replace="):
        what = "replaced" if results_csv.run_key(r) in committed else "added"
        print(f"{what} {r['model']} {r['method']} {r['regime']} seed {r['seed']}: "
              f"test mIoU {100 * float(r['miou']):.2f}", file=sys.stderr)
  csv_rows = results_csv.read_csv(path)
  if regimes:
    print(per_seed_markdown(table, csv_rows, regimes[0]), end="")
    return
  print(table_markdown(table, csv_rows), end="")
  if len(args) > 1:
    bar_chart(table, csv_rows, args[1])


if __name__ == "__main__":
  main(sys.argv[1:])
