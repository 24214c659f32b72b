r"""Issue 33 §3, stage 3: LIX's two best settings of each regime at seeds 1 and 2 (validation only).

Stages 1 (`recipe_seed0.py`: the recipe at 2 000 steps) and 2 (`recipe_patience_seed0.py`: the
winners and `off` at 4 000 and 8 000 steps) score settings at seed 0. A setting is (recipe, student
steps, unlabelled frames a step). Fixed before any of their results was seen: per regime, LIX's
(`lix`, the default config) two settings of highest seed-0 validation mIoU over both stages (the
earlier one on a tie) go on to seeds 1 and 2, and so, at each of those settings, do CWD and KD (the
same data for every method, so the comparison stays fair) and the CE student of the setting's
recipe and steps (the reference of the gap closed). The setting adopted as the default (§4) is the
one of best 3-seed validation mean; the test split is read once, by the re-run converged table.

Seed s distils from the converged seed-s teacher; train those first (4 000 steps each), then run:

  python -m lix_jax.main --config=configs/benchmark.py:converged --workdir=workdirs/benchmark_converged \
      --config.benchmark.rows="('teacher',)" --config.benchmark.seeds='(1, 2)'
  python -m lix_jax.main --config=configs/benchmark.py:converged \
      --sweep=configs/sweeps/recipe_seeds12.py --workdir=workdirs/sweep_recipe_seeds12

Entries are stage 1's names with `_seed<s>`; `sweep.csv` is committed as
`results/sweeps/recipe_seeds12_validation.csv`; once it is, a machine without the workdir adds
`--sweep_results=` that file (the same command, in two workers).
"""
from __future__ import annotations

import os

from lix_jax.experiments import sweep

_HERE = os.path.dirname(os.path.abspath(__file__))
_RESULTS = os.path.normpath(os.path.join(_HERE, "..", "..", "results", "sweeps"))
STAGE1_CSV = os.path.join(_RESULTS, "recipe_seed0_validation.csv")
STAGE2_CSV = os.path.join(_RESULTS, "recipe_patience_seed0_validation.csv")
SEEDS = (1, 2)
TEACHER = "workdirs/benchmark_converged/teachers/intermediate_depth_seed{seed}"


def _load(name: str):
  return sweep.load_module(os.path.join(_HERE, f"{name}.py"), name)


def chosen_settings(stage1_csv: str = STAGE1_CSV, stage2_csv: str = STAGE2_CSV
                    ) -> dict[str, list[tuple[str, int, int]]]:
  """regime -> LIX's two best (recipe, steps, frames) on seed-0 validation over stages 1 and 2."""
  stage1, stage2 = _load("recipe_seed0"), _load("recipe_patience_seed0")
  # Stage 1 is read (and must be finished) before stage 2 is listed: stage 2 alone would list
  # only the brackets stage 1 has finished.
  lix1 = [run for run in stage1.runs() if run[0] == "lix"]
  scored = list(zip(lix1, stage1.validation_miou(stage1_csv, lix1, "recipe_seed0")))
  lix2 = [run for run in stage2.runs(stage1_csv) if run[0] == "lix"]
  scored += zip(lix2, stage1.validation_miou(stage2_csv, lix2, "recipe_patience_seed0"))
  chosen: dict[str, list[tuple[str, int, int]]] = {}
  for (_, regime, recipe, steps, frames), _ in sorted(scored, key=lambda rs: -rs[1]):  # Stable.
    if len(chosen.setdefault(regime, [])) < 2:
      chosen[regime].append((recipe, steps, frames))
  return chosen


def runs(stage1_csv: str = STAGE1_CSV, stage2_csv: str = STAGE2_CSV
         ) -> list[tuple[str, str, str, int, int]]:
  """(method, regime, recipe, steps, frames) of one seed's entries: lix, cwd, kd at each chosen
  setting, then the CE student at each chosen (recipe, steps)."""
  methods = _load("recipe_seed0").METHODS
  chosen = chosen_settings(stage1_csv, stage2_csv)
  out = [(m, regime, recipe, steps, frames) for regime in ("labeled", "unlabeled")
         for recipe, steps, frames in chosen[regime] for m in methods]
  out += list(dict.fromkeys(("ce", "labeled", recipe, steps, 16)
                            for regime in ("labeled", "unlabeled") for recipe, steps, _ in chosen[regime]))
  return out


def get_sweep(stage1_csv: str = STAGE1_CSV, stage2_csv: str = STAGE2_CSV):
  stage1, one_seed = _load("recipe_seed0"), runs(stage1_csv, stage2_csv)
  entries = []
  for seed in SEEDS:
    for run in one_seed:
      entry = stage1.entry(*run)
      entry.update(name=f"{entry['name']}_seed{seed}", seed=seed)
      if entry["mode"] == "distill":
        entry["distill.teacher_workdir"] = TEACHER.format(seed=seed)
      entries.append(entry)
  return entries
