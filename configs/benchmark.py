r"""The 3-seed benchmark of DESIGN §8 (issues 7 and 10) on the embedded `synthetic_driving` data.

One fixed schedule for every row (documented here, the same for every method):
  teacher 1 000 steps, students 500 steps; batch 16 labelled images, + 16 unlabelled RGB-X frames
  per step in the `unlabeled` regime; AdamW 2e-3, cosine, 100 warm-up steps; 64x192 crops;
  evaluation on the validation split at the end (for tuning) and on the test split (reported).
Seeds 0, 1, 2 (seed s of a student distils from seed s of its teacher). Rows are
`ROWS` below, run seed-major in the order below (headline comparisons
first), each in its own resumable sub-workdir:

  python -m lix_jax.main --config=configs/benchmark.py --workdir=workdirs/benchmark
  python -m lix_jax.main --config=configs/benchmark.py --workdir=workdirs/benchmark \
      --config.benchmark.rows='("teacher","none","unlabeled/lix")' --config.benchmark.seeds='(0,)'
  python -m lix_jax.main --config=configs/benchmark.py:long --workdir=workdirs/benchmark_long
  python -m lix_jax.main --config=configs/benchmark.py:converged \
      --workdir=workdirs/benchmark_converged
  python -m lix_jax.experiments.benchmark results/benchmark.csv results/benchmark.png   # table, chart

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

from typing import Any

import ml_collections

from lix_jax.config import base_config

# The row table: name -> row (`lix_jax.experiments.benchmark.Row`'s fields). A row's name is
# `<regime>/<name>` for students; `benchmark.rows` picks and orders them. The runner reads the table
# from the config (`benchmark.table`, `benchmark.aliases`); the results files name rows by method.
def _row(model: str, method: str, regime: str = "unlabeled", **spec) -> dict[str, Any]:
  """One row: the fields of `lix_jax.experiments.benchmark.Row` (`overrides`: flattened config keys
  applied to the student run; `label`: how the README table names it, "" = `method`)."""
  return dict(model=model, method=method, regime=regime, **spec)


def _students(regime: str, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Student rows named `<regime>/<name>`; `name` is the method column unless the spec sets one."""
  return {f"{regime}/{name}": _row("student", spec.pop("method", name), regime, **spec)
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


ROWS: dict[str, dict[str, Any]] = {
    "teacher": _row("teacher", "-", label="teacher (intermediate fusion, depth)"),
    "teacher_late": _row("teacher", "-", fusion="late", label="teacher (late fusion, depth)"),
    "teacher_normal": _row("teacher", "-", x_modality="normal",
                          label="teacher (intermediate fusion, normals)"),
    "none": _row("student", "none", "labeled", label="student alone (CE)"),
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




# Row names: `lix` is LIX with the default config (DESIGN §2.3-2.4: symmetric class-balanced DWC,
# κ = 4, ARFD's CKA term); `lix_dynamic` the first formulation (dynamic DWC, κ = 4, ARFD with
# kernel regression, the defaults until Nov 2026); the other rows pin their own configs
# (`ROWS` below).
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
  c.benchmark.table = tuple(dict(name=name, **row) for name, row in ROWS.items())  # In order.
  c.benchmark.aliases = ALIASES
  c.benchmark.seeds = (0, 1, 2)
  if preset in ("long", "converged"):
    c.train.num_steps = c.train.eval_every = LONG_STUDENT_STEPS
    c.train.ckpt_every = 500
  if preset == "converged":
    c.pipeline.teacher_num_steps = CONVERGED_TEACHER_STEPS
  return c
