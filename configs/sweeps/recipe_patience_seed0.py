r"""Issue 33 §2–3, stage 2: patience (4 000 and 8 000 student steps) for what won the recipe stage.

Stage 1 (`configs/sweeps/recipe_seed0.py`, 2 000 steps) scores every recipe for each method and
regime on the validation split. A full grid at 4 000 and 8 000 steps would be 80 more runs, about
60 CPU-hours on 2 cores, most of them settings stage 1 already ruled out; so, as in successive
halving, only two settings of each method and regime go on:

- its best setting at 2 000 steps (recipe, and in the `unlabeled` regime the number of frames),
  read from stage 1's committed table `results/sweeps/recipe_seed0_validation.csv`;
- `off` (no recipe, 16 frames): the schedule's own effect, the reference of the recipe's.

The CE student (labelled images only) goes on likewise: it is the reference of the gap closed.
A (method, regime) bracket goes on as soon as all its stage-1 entries have finished, so stage 2
starts while stage 1 still runs the other brackets (entries only get added as brackets finish;
their names never change).
Entries keep stage 1's names (`lix_labeled_both_s4000`, `kd_unlabeled_photo_s8000_u32`); 4 000
steps first, then 8 000, each with the CE student first. Chosen on validation only; the test split
is read once, by the converged table with the adopted defaults (§4). Run like stage 1, in a workdir
of its own:

  python -m lix_jax.main --config=configs/benchmark.py:converged \
      --sweep=configs/sweeps/recipe_patience_seed0.py --workdir=workdirs/sweep_recipe_patience_seed0 \
      --config.seed=0 \
      --config.distill.teacher_workdir=workdirs/benchmark_converged/teachers/intermediate_depth_seed0

`sweep.csv` is committed as `results/sweeps/recipe_patience_seed0_validation.csv`; once it is, a machine
without the workdir adds `--sweep_results=` that file (the same command, in two workers).
"""
from __future__ import annotations

import os

from lix_jax.experiments import sweep

_HERE = os.path.dirname(os.path.abspath(__file__))
STAGE1_CSV = os.path.normpath(os.path.join(_HERE, "..", "..", "results", "sweeps",
                                           "recipe_seed0_validation.csv"))
SCHEDULES = (4000, 8000)


def _stage1():
  return sweep.load_module(os.path.join(_HERE, "recipe_seed0.py"), "recipe_seed0")


def best_settings(csv_path: str = STAGE1_CSV) -> dict[tuple[str, str], tuple[str, int]]:
  """(method, regime) -> (recipe, frames) of the highest validation mIoU among stage 1's entries
  (the first in run order on a tie), for each bracket whose stage-1 entries have all finished.

  Raises:
    FileNotFoundError: stage 1's table is missing.
    ValueError: an entry is missing from it (named), or no bracket has finished yet.
  """
  stage1 = _stage1()
  runs = stage1.runs()
  scores: dict[tuple[str, str], list[tuple[float | None, str, int]]] = {}
  for (method, regime, recipe, _, frames), score in zip(
      runs, stage1.validation_miou(csv_path, runs, "recipe_seed0", unfinished_ok=True)):
    scores.setdefault((method, regime), []).append((score, recipe, frames))
  best = {}
  for bracket, scored in scores.items():
    if all(score is not None for score, _, _ in scored):
      _, recipe, frames = max(scored, key=lambda s: s[0])  # max keeps the first of equals.
      best[bracket] = (recipe, frames)
  if not best:
    raise ValueError(f"{csv_path}: no (method, regime) bracket of recipe_seed0 has finished all "
                     "its entries yet; stage 2 starts with the first that does")
  return best


def runs(csv_path: str = STAGE1_CSV) -> list[tuple[str, str, str, int, int]]:
  """(method, regime, recipe, steps, frames) of each entry, in run order: per schedule the CE
  student first (the reference of every gap, and the cheapest), then stage 1's order."""
  out, best = [], best_settings(csv_path)
  brackets = sorted(best.items(), key=lambda item: item[0][0] != "ce")  # Stable.
  for steps in SCHEDULES:
    for (method, regime), winner in brackets:
      for recipe, frames in dict.fromkeys([winner, ("off", 16)]):  # Once if `off` won.
        out.append((method, regime, recipe, steps, frames))
  return out


def table_markdown(stage1_rows: list[dict], stage2_rows: list[dict], teacher_miou: float,
                   csv_path: str = STAGE1_CSV) -> str:
  """Stage 2 as a table (docs/benchmark.md): a row per (method, regime, setting) it trains, a
  column per schedule (2 000 steps from stage 1); validation mIoU (%) and in brackets the share
  of the gap to the teacher (`teacher_miou`) closed against the plain CE student of the same
  schedule, once that has run. "—": not run yet."""
  stage1 = _stage1()
  miou = {r["name"]: float(r["val_miou"]) for r in stage1_rows + stage2_rows if r["val_miou"] != ""}
  schedules = (stage1.SCHEDULES[0], *SCHEDULES)
  ce = {steps: miou.get(stage1.entry("ce", "labeled", "off", steps)["name"]) for steps in schedules}
  lines = ["| student | regime | recipe | " + " | ".join(f"{s} steps" for s in schedules) + " |",
           "|---|---|---|" + "---|" * len(schedules)]
  for method, regime, recipe, _, frames in [r for r in runs(csv_path) if r[3] == SCHEDULES[0]]:
    cells = []
    for steps in schedules:
      value = miou.get(stage1.entry(method, regime, recipe, steps, frames)["name"])
      cell = "—" if value is None else f"{100 * value:.2f}"
      if value is not None and method != "ce" and ce[steps] is not None:
        cell += f" ({stage1.gap_share(value, ce[steps], teacher_miou)})"
      cells.append(cell)
    lines.append(f"{stage1.row_label(method, regime, frames)} {recipe} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def get_sweep(csv_path: str = STAGE1_CSV):
  stage1 = _stage1()
  return [stage1.entry(*run) for run in runs(csv_path)]
