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
`results/sweeps/recipe_seed0_validation.csv`). Axes, 40 entries:

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
4 000 and 8 000 steps; then the best two settings at seeds 1 and 2.
"""

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


def get_sweep():
  return [entry(*setting[:3], SCHEDULES[0], setting[3]) for setting in settings()]
