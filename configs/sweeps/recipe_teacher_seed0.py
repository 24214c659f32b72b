r"""Issue 33 §3, a further lever: a teacher trained with the recipe (DESIGN §5: "a teacher is trained
as before unless a sweep shows the recipe helps it too"), seed 0, validation only.

Function matching asks the teacher for its function on strongly varied views; a teacher that never
saw such views during its own training may answer them worse. Here the converged seed-0 teacher is
trained again with the `both` recipe (`teacher.photometric` 0.5, `teacher.cutmix_prob` 0.5; 4 000
steps, as the converged teachers), then LIX, CWD and KD distil from it at 2 000 steps with the same
`both` recipe, in both regimes (16 unlabelled frames). Each student is the twin of stage 1's
`<method>_<regime>_both_s2000[_u16]` (`recipe_seed0.py`), which distils from the plain teacher:
the pair measures the teacher's recipe alone. The students' entries name their teacher's workdir
below, so the command must use this workdir:

  python -m lix_jax.main --config=configs/benchmark.py:converged \
      --sweep=configs/sweeps/recipe_teacher_seed0.py --workdir=workdirs/sweep_recipe_teacher_seed0 \
      --config.seed=0

`sweep.csv` is committed as `results/sweeps/recipe_teacher_seed0_validation.csv`; once it is, a machine
without the workdir adds `--sweep_results=` that file (the teacher trains again there while a
student of it is still to run).
"""
from __future__ import annotations

import os

from lix_jax.experiments import sweep

_HERE = os.path.dirname(os.path.abspath(__file__))
WORKDIR = "workdirs/sweep_recipe_teacher_seed0"
TEACHER_RECIPE = {"teacher.photometric": 0.5, "teacher.cutmix_prob": 0.5}
TEACHER_STEPS = 4000  # configs/benchmark.py's CONVERGED_TEACHER_STEPS.


def get_sweep():
  stage1 = sweep.load_module(os.path.join(_HERE, "recipe_seed0.py"), "recipe_seed0")
  teacher = {"name": "teacher_both", "mode": "train_teacher", **TEACHER_RECIPE,
             "train.num_steps": TEACHER_STEPS}
  students = []
  for regime in ("labeled", "unlabeled"):
    for method in stage1.METHODS:
      entry = stage1.entry(method, regime, "both", 2000)
      entry.update(TEACHER_RECIPE, name=f"{entry['name']}_teacher_both",
                   **{"distill.teacher_workdir": f"{WORKDIR}/{teacher['name']}"})
      students.append(entry)
  return [teacher, *students]
