r"""Which classes a run confuses, and what a student still confuses that its teacher does not.

Every evaluation keeps its confusion matrix (rows = ground truth, columns = prediction, pixels):
`final_metrics.json` per split, and `mode=eval`'s `<workdir>/eval_<split>.json`. This module reads
those files and compares runs class pair by class pair (issue 23 §2: what the teacher knows that
the student does not):

  python -m lix_jax.main --config=configs/synthetic.py --workdir=RUN --config.mode=eval \
      --config.eval.role=teacher --config.eval.split=validation       # -> RUN/eval_validation.json
  python -m lix_jax.experiments.confusion --pairs=pairs.csv --runs=runs.csv \
      teacher=T/eval_validation.json lix=S/eval_validation.json [--reference=teacher] [--top=10]

`--pairs` gets one row per (true class, predicted class) off the diagonal with each run's rate
(the fraction of the true class's pixels predicted as that class); `--runs` one row per file
(mIoU, pixel accuracy, per-class IoU). The printed table lists the pairs on which the other runs
exceed the reference most.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lix_jax.experiments import results_csv


def read(path: str, split: str = "") -> tuple[np.ndarray, list[str], dict[str, Any]]:
  """The confusion matrix, class names and metrics of an evaluation file.

  Args:
    path: an `eval_<split>.json`, or a `final_metrics.json` with `split` ("validation" | "test").
    split: the entry of a `final_metrics.json` to read; "" for an `eval_<split>.json`.

  Returns:
    (`[K, K]` counts, the K class names in matrix order, the file's metrics).
  """
  with open(path) as f:
    data = json.load(f)
  if split:
    if split not in data:
      raise KeyError(f"{path} has no {split!r} entry (it has {sorted(data)})")
    data = data[split]
  if "confusion" not in data:
    raise ValueError(f"{path}{f' [{split}]' if split else ''} holds no confusion matrix (runs "
                     "evaluated before lix_jax kept it): evaluate the run again with "
                     "--config.mode=eval, which writes <workdir>/eval_<split>.json")
  names = [k.split("/", 1)[1] for k in data if k.startswith("iou/")]
  cm = np.asarray(data["confusion"], dtype=np.float64)
  if cm.shape != (len(names), len(names)):
    raise ValueError(f"{path}: confusion matrix of shape {cm.shape} for {len(names)} classes "
                     f"({names})")
  return cm, names, data


def rates(cm: np.ndarray) -> np.ndarray:
  """Row-normalised confusion: `[i, j]` = share of class i's pixels predicted as j (NaN rows for
  classes absent from the ground truth)."""
  cm = np.asarray(cm, dtype=np.float64)
  totals = cm.sum(axis=1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(totals > 0, cm / np.where(totals > 0, totals, 1.0), np.nan)


def pair_rows(matrices: Mapping[str, np.ndarray], class_names: Sequence[str]) -> list[dict[str, Any]]:
  """One row per off-diagonal (true, predicted) pair: each run's rate under the run's name."""
  shared = {name: rates(cm) for name, cm in matrices.items()}
  k = len(class_names)
  return [{"true": class_names[i], "predicted": class_names[j],
           **{name: float(r[i, j]) for name, r in shared.items()}}
          for i in range(k) for j in range(k) if i != j]


def excess_markdown(rows: Sequence[Mapping[str, Any]], runs: Sequence[str], reference: str,
                    top: int = 10) -> str:
  """The `top` pairs on which the other runs' mean rate exceeds the reference's most (percent)."""
  others = [r for r in runs if r != reference]
  if reference not in runs or not others:
    raise ValueError(f"reference {reference!r} must be one of the runs {list(runs)}, with others")
  rate = lambda row, run: float(row[run])  # noqa: E731 (a CSV's rows hold strings)
  excess = lambda row: np.mean([rate(row, r) for r in others]) - rate(row, reference)  # noqa: E731
  ranked = sorted((row for row in rows if np.isfinite(excess(row))), key=excess, reverse=True)
  lines = ["| true → predicted | " + " | ".join(f"{r} (%)" for r in runs)
           + f" | others − {reference} |", "|---|" + "---|" * (len(runs) + 1)]
  for row in ranked[:top]:
    lines.append(f"| {row['true']} → {row['predicted']} | "
                 + " | ".join(f"{100 * rate(row, r):.1f}" for r in runs)
                 + f" | {100 * excess(row):+.1f} |")
  return "\n".join(lines) + "\n"


def fit_markdown(validation: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]],
                 classes: Sequence[str] = ("wall", "pole", "person")) -> str:
  """Each run's mIoU on its training images against validation (rows of two `--runs` files, the
  same runs in the same order), and the same for `classes`: how much of a gap is fit, how much
  generalisation."""
  if [r["run"] for r in validation] != [r["run"] for r in train]:
    raise ValueError("the validation and train files list other runs: "
                     f"{[r['run'] for r in validation]} vs {[r['run'] for r in train]}")
  pct = lambda row, key: 100 * float(row[key])  # noqa: E731
  lines = ["| run | mIoU train / val (%) | train − val | "
           + " | ".join(f"IoU {c} train / val" for c in classes) + " |",
           "|---|---|---|" + "---|" * len(classes)]
  for v, tr in zip(validation, train):
    lines.append(f"| {v['run']} | {pct(tr, 'miou'):.1f} / {pct(v, 'miou'):.1f} | "
                 f"{pct(tr, 'miou') - pct(v, 'miou'):+.1f} | "
                 + " | ".join(f"{pct(tr, f'iou_{c}'):.1f} / {pct(v, f'iou_{c}'):.1f}" for c in classes)
                 + " |")
  return "\n".join(lines) + "\n"


def gap_markdown(rows: Sequence[Mapping[str, Any]], students: Sequence[tuple[str, str]],
                 teacher: str = "teacher", classes: Sequence[str] = ("wall", "pole", "person")) -> str:
  """Each student's mIoU and the share of the teacher − CE gap it closes, against its own CE run.

  Args:
    rows: the rows of a `--runs` file (one per run, fractions).
    students: (run, the CE run it is measured against) pairs, in table order; a CE run against
      itself closes 0 % by definition.
    teacher: the teacher's run.
    classes: the per-class IoUs to show.
  """
  by_run = {r["run"]: r for r in rows}
  missing = sorted({teacher, *(n for pair in students for n in pair)} - set(by_run))
  if missing:
    raise ValueError(f"runs {missing} are not in the file (it has {sorted(by_run)})")
  pct = lambda run, key: 100 * float(by_run[run][key])  # noqa: E731 (a CSV's rows hold strings)
  lines = ["| run | mIoU (%) | gap closed | " + " | ".join(f"IoU {c}" for c in classes) + " |",
           "|---|---|---|" + "---|" * len(classes)]
  for run, ce in [(teacher, "")] + list(students):
    gap = ""
    if ce:  # Written as `benchmark.figure` writes a gap.
      closed = (pct(run, "miou") - pct(ce, "miou")) / (pct(teacher, "miou") - pct(ce, "miou"))
      gap = f"{100 * closed:.0f} %"
    lines.append(f"| {run} | {pct(run, 'miou'):.1f} | {gap} | "
                 + " | ".join(f"{pct(run, f'iou_{c}'):.1f}" for c in classes) + " |")
  return "\n".join(lines) + "\n"


def run_row(name: str, metrics: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
  return {"run": name, "miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"],
          **{f"iou_{c}": metrics[f"iou/{c}"] for c in class_names}}


def main(argv: list[str]) -> None:
  """`python -m lix_jax.experiments.confusion NAME=FILE[:SPLIT] ... [--pairs=CSV] [--runs=CSV]
  [--reference=NAME] [--top=N]` (SPLIT picks the entry of a `final_metrics.json`)."""
  options = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--"))
  unknown = sorted(k for k, v in options.items() if k not in ("pairs", "runs", "reference", "top")
                   or not v)
  if unknown:
    raise SystemExit(f"unknown option(s) or missing value: {unknown}; the options are --pairs=CSV "
                     "--runs=CSV --reference=NAME --top=N")
  specs = [a for a in argv if not a.startswith("--")]
  if not specs or any("=" not in s for s in specs):
    raise SystemExit(f"give runs as NAME=FILE[:SPLIT], got {specs}")
  matrices, metrics, names = {}, {}, None
  for spec in specs:
    run, where = spec.split("=", 1)
    path, _, split = where.partition(":")
    cm, classes, data = read(path, split)
    if names is not None and classes != names:
      raise ValueError(f"{path}: classes {classes} differ from the first file's {names}")
    names, matrices[run], metrics[run] = classes, cm, data
  rows = pair_rows(matrices, names)
  if "pairs" in options:
    results_csv.write_csv(options["pairs"], rows, list(rows[0]))
  if "runs" in options:
    run_rows = [run_row(r, m, names) for r, m in metrics.items()]
    results_csv.write_csv(options["runs"], run_rows, list(run_rows[0]))
  reference = options.get("reference", next(iter(matrices)))
  if len(matrices) > 1:
    print(excess_markdown(rows, list(matrices), reference, int(options.get("top", 10))), end="")


if __name__ == "__main__":
  main(sys.argv[1:])
