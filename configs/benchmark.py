r"""The 3-seed benchmark of DESIGN §8 (issues 7 and 10) on the embedded `synthetic_driving` data.

One fixed schedule for every row (documented here, the same for every method):
  teacher 1 000 steps, students 500 steps; batch 16 labelled images, + 16 unlabelled RGB-X frames
  per step in the `unlabeled` regime; AdamW 2e-3, cosine, 100 warm-up steps; 64x192 crops;
  evaluation on the validation split at the end (for tuning) and on the test split (reported).
Seeds 0, 1, 2 (seed s of a student distils from seed s of its teacher). Rows are
`lix_jax/train/benchmark.py:ROWS`, run seed-major in the order below (headline comparisons
first), each in its own resumable sub-workdir:

  python -m lix_jax.main --config=configs/benchmark.py --workdir=workdirs/benchmark
  python -m lix_jax.main --config=configs/benchmark.py --workdir=workdirs/benchmark \
      --config.benchmark.rows='("teacher","none","unlabeled/lix")' --config.benchmark.seeds='(0,)'
  python -m lix_jax.main --config=configs/benchmark.py:long --workdir=workdirs/benchmark_long
  python -m lix_jax.main --config=configs/benchmark.py:converged \
      --workdir=workdirs/benchmark_converged
  python -m lix_jax.train.benchmark results/benchmark.csv results/benchmark.png   # table, chart

Presets: (none) every row; `headline`, `labeled`, `ablations` (each with the teacher and the CE
student); `long` (students 2 000 steps); `converged` (students 2 000 steps from 4 000-step
teachers: the rows of DESIGN §8's headline, issue 23).

On this 2-core CPU machine: teacher ~4 min, CE student ~1.5 min, distillation with unlabelled
frames ~4.5 min, on labelled images only ~2.5 min; all rows x 3 seeds about 4.5 hours. `converged`:
teacher ~16 min, each distilled student 13-18 min, about 3.5 hours a seed uncontended.
Writes `benchmark.csv` (DESIGN §6 columns, test split) and `benchmark.md` after every run;
`results/benchmark.csv` is that file, committed (`results/README.md`: the commands of each file).
`lix` is LIX with the default config; a row that differs says how in its name and label.
"""
from __future__ import annotations

import ml_collections

from lix_jax.config_defaults import base_config

# Row names: `lix` is LIX with the default config (DESIGN §2.3-2.4: symmetric class-balanced DWC,
# κ = 4, ARFD's CKA term); `lix_dynamic` the first formulation (dynamic DWC, κ = 4, ARFD with
# kernel regression, the defaults until Nov 2026); the other rows pin their own configs
# (lix_jax/train/benchmark.py:ROWS).
HEADLINE = ("teacher", "none", "unlabeled/kd", "unlabeled/dkd", "unlabeled/cwd",
            "unlabeled/pseudo_label", "unlabeled/lix", "unlabeled/lix_dynamic",
            "unlabeled/lix_kappa1", "unlabeled/lix_balanced", "unlabeled/lix_balanced_kappa2",
            "unlabeled/lix_balanced_kappa4", "unlabeled/lix_balanced_kappa4_cka",
            "unlabeled/lix_kr1", "unlabeled/none_equal_images", "unlabeled/none_all_labeled")
LABELED = ("labeled/kd", "labeled/dkd", "labeled/cwd", "labeled/lix", "labeled/lix_dynamic",
           "labeled/lix_balanced", "labeled/lix_balanced_kappa4", "labeled/lix_l2")
ABLATIONS = ("unlabeled/dwld", "unlabeled/arfd", "unlabeled/kr_only",
             "unlabeled/cka_only", "unlabeled/fitnet", "unlabeled/dwld_trust",
             "unlabeled/dwld_kappa-2", "teacher_normal", "unlabeled/lix_dynamic_normal",
             "teacher_late", "unlabeled/lix_dynamic_late", "unlabeled/lix_balanced_kappa2_normal",
             "unlabeled/lix_balanced_kappa2_late")


# `long`: the headline comparison at 4x the student steps (2 000), to see how the gap closed moves
# with the schedule. Its own workdir (run directories do not name the schedule); the teachers are
# the same 1 000-step runs.
LONG = ("teacher", "none", "unlabeled/none_all_labeled", "unlabeled/cwd", "unlabeled/lix",
        "unlabeled/pseudo_label", "unlabeled/kd", "unlabeled/dkd", "unlabeled/lix_dynamic")
LONG_STUDENT_STEPS = 2000

# `converged`: the `long` students distilled from a 4 000-step teacher (test 81.1 for seed 0, against
# 72.6 at 1 000 steps), so that the teacher–student gap is the modality's, not the schedule's. Its
# own workdir too; the teachers train in it (~16 min each on 2 cores). The rows of issue 23: both
# regimes' standard baselines, LIX (default), its first formulation and the default with kernel
# regression; the CE student heads both regimes.
CONVERGED = ("teacher", "none", "unlabeled/lix", "unlabeled/cwd", "unlabeled/kd", "unlabeled/dkd",
             "unlabeled/pseudo_label", "unlabeled/none_all_labeled", "unlabeled/lix_dynamic",
             "unlabeled/lix_kr1", "labeled/lix", "labeled/cwd", "labeled/kd", "labeled/dkd")
CONVERGED_TEACHER_STEPS = 4000


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  presets = {"": HEADLINE + LABELED + ABLATIONS, "headline": HEADLINE, "labeled": HEADLINE[:2] + LABELED,
             "ablations": HEADLINE[:2] + ABLATIONS, "long": LONG,
             "converged": CONVERGED}
  if preset not in presets:
    raise KeyError(f"Unknown preset {preset!r} for configs/benchmark.py. Available presets are: "
                   f"{sorted(p for p in presets if p)} (or none: every row)")
  c = base_config()
  c.mode = "benchmark"
  c.pipeline.teacher_num_steps = 1000
  c.train.num_steps = 500
  c.train.eval_every = 500
  c.train.ckpt_every = 250
  c.train.log_every = 50
  c.benchmark.rows = presets[preset]
  c.benchmark.seeds = (0, 1, 2)
  if preset in ("long", "converged"):
    c.train.num_steps = c.train.eval_every = LONG_STUDENT_STEPS
    c.train.ckpt_every = 500
  if preset == "converged":
    c.pipeline.teacher_num_steps = CONVERGED_TEACHER_STEPS
  return c
