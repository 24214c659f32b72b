r"""Issue 33 §2–3: a patient and consistent teacher (DESIGN §5) — the data recipe × patience, seed 0.

Function matching (Beyer et al., CVPR 2022; big_vision's distillation recipe) shows teacher and
student the very same, strongly varied view and trains the student for long. Here, at the
converged benchmark's schedule (students from the converged seed-0 teacher, 4 000 steps, never
re-trained: a teacher ignores the recipe), scored on the validation split (never test):

  python -m lix_jax.main --config=configs/benchmark.py:converged --sweep=configs/sweeps/recipe_seed0.py \
      --workdir=workdirs/sweep_recipe_seed0 --config.seed=0 \
      --config.distill.teacher_workdir=workdirs/benchmark_converged/teachers/intermediate_depth_seed0

(one entry: add `--sweep_index=N`; the same command without it collects `sweep.csv`, committed as
`results/sweeps/recipe_seed0_validation.csv`). Axes:

- method: lix (default config), cwd, kd; and the CE student (`ce_*`, mode train_student) on the same
  recipe, the reference of the gap closed.
- regime: `labeled` (labelled images only, `distill.unlabeled_split=""`) and `unlabeled` (16 or 32
  unlabelled frames a step, `distill.unlabeled_batch_size`).
- recipe: `off`; `photo` = `data.photometric` 0.5, i.e. ColorJitter(0.4, 0.4, 0.4, 0.1), the classic
  torchvision/MoCo-v2 strength (half of SimCLR's); `cutmix` = `data.cutmix_prob` 0.5, half the
  images keep their own view (CutMix's CIFAR setting); `both`.
- schedule (patience): students 2 000 (the converged benchmark's), 4 000, 8 000 steps.

Order: the cheap and informative entries first — 2 000 steps, the recipe axis, labelled regime
before unlabelled, 16 frames before 32 — then 4 000 and 8 000 steps with the recipe on (`both`
first) and off last. 2 000-step runs: ~13–18 min each on 2 CPU cores, 8 000 steps about 4×.
Then the best two settings at seeds 1 and 2 (a follow-up sweep file).
"""

METHODS = ("lix", "cwd", "kd")
RECIPES = {"off": {}, "photo": {"data.photometric": 0.5}, "cutmix": {"data.cutmix_prob": 0.5},
           "both": {"data.photometric": 0.5, "data.cutmix_prob": 0.5}}
SCHEDULES = (2000, 4000, 8000)


def _entry(method: str, regime: str, recipe: str, steps: int, frames: int = 16) -> dict:
  name = f"{method}_{regime}_{recipe}_s{steps}" + (f"_u{frames}" if regime == "unlabeled" else "")
  entry = {"name": name, **RECIPES[recipe], "train.num_steps": steps, "train.eval_every": steps}
  if method == "ce":
    return {**entry, "mode": "train_student"}
  entry.update({"mode": "distill", "distill.method": method})
  if regime == "labeled":
    entry["distill.unlabeled_split"] = ""
  else:
    entry["distill.unlabeled_batch_size"] = frames
  return entry


def _tier(steps: int, recipes) -> list[dict]:
  """One schedule: labelled regime, then 16 unlabelled frames, then 32, each over `recipes`."""
  out = [_entry(m, "labeled", r, steps) for r in recipes for m in METHODS]
  out += [_entry("ce", "labeled", r, steps) for r in recipes]
  for frames in (16, 32):
    out += [_entry(m, "unlabeled", r, steps, frames) for r in recipes for m in METHODS]
  return out


def get_sweep():
  entries = _tier(SCHEDULES[0], ("off", "photo", "cutmix", "both"))
  for steps in SCHEDULES[1:]:
    entries += _tier(steps, ("both", "photo", "cutmix", "off"))
  return entries
