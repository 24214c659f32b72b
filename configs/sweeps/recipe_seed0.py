r"""Issue 33 §2–3, stage 1: a patient and consistent teacher (DESIGN §5) — the data recipe, seed 0.

Function matching (Beyer et al., CVPR 2022; big_vision's distillation recipe) shows teacher and
student the very same, strongly varied view and trains the student for long. Here, at the
converged benchmark's schedule (students from the converged seed-0 teacher, 2 000 steps; the
teacher is never re-trained: a teacher ignores the recipe), scored on the validation split (never
test):

  python -m lix_jax.main --config=configs/benchmark.py:converged --sweep=configs/sweeps/recipe_seed0.py \
      --workdir=workdirs/sweep_recipe_seed0 --config.seed=0 \
      --config.distill.teacher_workdir=workdirs/benchmark_converged/teachers/intermediate_depth_seed0

(one entry: add `--sweep_index=N`; `sweep.csv` is rewritten after every entry and committed as
`results/sweeps/recipe_seed0_validation.csv`; on a machine without the workdir add
`--sweep_results=results/sweeps/recipe_seed0_validation.csv` to skip the entries committed there;
a second worker runs the same command). Axes, 40 entries:

- method: lix (default config), cwd, kd; and the CE student (`ce_*`, mode train_student) on the same
  recipe, the reference of the gap closed.
- regime: `labeled` (labelled images only, `distill.unlabeled_split=""`) and `unlabeled` (16 or 32
  unlabelled frames a step, `distill.unlabeled_batch_size`).
- recipe: `off`; `photo` = `data.photometric` 0.5, i.e. ColorJitter(0.4, 0.4, 0.4, 0.1), the classic
  torchvision/MoCo-v2 strength (half of SimCLR's); `cutmix` = `data.cutmix_prob` 0.5, half the
  images keep their own view (CutMix's CIFAR setting); `both`.

Order: labelled regime (the paper's, furthest from its target), the CE student, then 16 unlabelled
frames, then 32. ~13–18 min a run on 2 CPU cores, about 10 hours in all. Stage 2
(`recipe_patience_seed0.py`) trains the best setting of each method and regime, and `off`, for
4 000 and 8 000 steps; stage 3 (`recipe_seeds12.py`) LIX's two best settings of each regime at
seeds 1 and 2, for every method.
"""
from __future__ import annotations

import csv
import os

METHODS = ("lix", "cwd", "kd")
RECIPES = {"off": {}, "photo": {"data.photometric": 0.5}, "cutmix": {"data.cutmix_prob": 0.5},
           "both": {"data.photometric": 0.5, "data.cutmix_prob": 0.5}}
SCHEDULES = (2000,)  # Stage 2 (recipe_patience_seed0.py) has the longer ones.


def entry(method: str, regime: str, recipe: str, steps: int, frames: int = 16) -> dict:
  """One run: `method` (lix, cwd, kd; `ce` = the CE student, labelled images only) in `regime`
  with `recipe` for `steps` student steps (`frames` unlabelled frames a step when `unlabeled`)."""
  name = f"{method}_{regime}_{recipe}_s{steps}" + (f"_u{frames}" if regime == "unlabeled" else "")
  run = {"name": name, **RECIPES[recipe], "train.num_steps": steps, "train.eval_every": steps}
  if method == "ce":
    return {**run, "mode": "train_student"}
  run.update({"mode": "distill", "distill.method": method})
  if regime == "labeled":
    run["distill.unlabeled_split"] = ""
  else:
    run["distill.unlabeled_batch_size"] = frames
  return run


def settings(recipes=tuple(RECIPES)) -> list[tuple[str, str, str, int]]:
  """(method, regime, recipe, frames) in run order: the labelled regime, the CE student, then 16
  unlabelled frames, then 32, each over `recipes`."""
  out = [(m, "labeled", r, 16) for r in recipes for m in METHODS]
  out += [("ce", "labeled", r, 16) for r in recipes]
  for frames in (16, 32):
    out += [(m, "unlabeled", r, frames) for r in recipes for m in METHODS]
  return out


def runs() -> list[tuple[str, str, str, int, int]]:
  """(method, regime, recipe, steps, frames) of each entry, in run order (`entry`'s arguments)."""
  return [(method, regime, recipe, SCHEDULES[0], frames)
          for method, regime, recipe, frames in settings()]


def validation_miou(csv_path: str, runs_, stage: str, unfinished_ok: bool = False
                    ) -> list[float | None]:
  """The validation mIoU of each of `runs_` in a committed sweep table (`sweep.csv`); with
  `unfinished_ok`, None for a run the table lists without a result yet.

  Raises:
    FileNotFoundError: the table is not there (run `stage` and commit its sweep.csv there first).
    ValueError: a run is missing from the table or (unless `unfinished_ok`) not finished (named).
  """
  if not os.path.exists(csv_path):
    raise FileNotFoundError(f"{csv_path}: {stage}'s table is missing; run configs/sweeps/"
                            f"{stage}.py and commit its sweep.csv there first")
  with open(csv_path) as f:
    miou = {row["name"]: row["val_miou"] for row in csv.DictReader(f)}
  scores = []
  for run in runs_:
    name = entry(*run)["name"]
    if name not in miou or (miou[name] == "" and not unfinished_ok):
      raise ValueError(f"{csv_path}: {stage} entry {name!r} is "
                       f"{'missing' if name not in miou else 'not finished'}")
    scores.append(float(miou[name]) if miou[name] != "" else None)
  return scores


def row_label(method: str, regime: str, frames: int) -> str:
  """`| student | regime |` of a results-table row (stages 1 and 2)."""
  where = "labelled only" if regime == "labeled" else f"+ {frames} unlabelled frames"
  return f"| {'CE' if method == 'ce' else method.upper()} | {where} |"


def gap_share(student: float, ce: float | None, teacher: float) -> str:
  """The share of the teacher–CE gap a student closes, as a table cell ("?" before CE has run)."""
  return "?" if ce is None else f"{100 * (student - ce) / (teacher - ce):.0f} %"


def table_markdown(rows: list[dict], teacher_miou: float) -> str:
  """Stage 1 as a table (docs/benchmark.md): a row per method and regime, a column per recipe;
  validation mIoU (%) and in brackets the share of the gap to the teacher (`teacher_miou`,
  validation) that the student closes, against the CE student of the same recipe | against the
  plain CE student (recipe off), each once it has run. A recipe that hurts the CE student more
  than the distilled one inflates the first share; the second does not move with the baseline.
  "—": not run yet."""
  miou = {r["name"]: float(r["val_miou"]) for r in rows if r["val_miou"] != ""}
  ce = {recipe: miou.get(entry("ce", "labeled", recipe, SCHEDULES[0])["name"]) for recipe in RECIPES}
  lines = ["| student | regime | " + " | ".join(RECIPES) + " |", "|---|---|" + "---|" * len(RECIPES)]
  for method, regime, frames in dict.fromkeys((m, r, f) for m, r, _, f in settings()):
    cells = []
    for recipe in RECIPES:
      value = miou.get(entry(method, regime, recipe, SCHEDULES[0], frames)["name"])
      cell = "—" if value is None else f"{100 * value:.2f}"
      if value is not None and method != "ce" and (ce[recipe], ce["off"]) != (None, None):
        cell += (f" ({gap_share(value, ce[recipe], teacher_miou)} \\| "
                 f"{gap_share(value, ce['off'], teacher_miou)})")
      cells.append(cell)
    lines.append(f"{row_label(method, regime, frames)} " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def get_sweep():
  return [entry(*run) for run in runs()]
