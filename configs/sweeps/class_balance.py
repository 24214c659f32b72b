r"""The `balanced` DWC (lix_jax's own: the dynamic weights times n_class^-γ) on the validation split
of the unlabelled regime, at the benchmark schedule, from the benchmark's seed-0 teacher (issue 10:
CWD led LIX on the small classes wall / pole / person):

  python -m lix_jax.main --config=configs/benchmark.py --sweep=configs/sweeps/class_balance.py \
      --workdir=workdirs/sweep_balance --config.mode=distill --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/benchmark/teachers/intermediate_depth_seed0

Compare with `configs/sweeps/lix_tuning.py` (same schedule and teacher): LIX κ = 1 is its best.
"""


def get_sweep():
  return [
      {"name": "lix_balanced_kappa1", "distill.controller": "balanced", "distill.kappa": 1.0},
      {"name": "dwld_balanced_kappa1", "distill.method": "dwld", "distill.controller": "balanced",
       "distill.kappa": 1.0},
      {"name": "lix_balanced0.5_kappa1", "distill.controller": "balanced", "distill.kappa": 1.0,
       "distill.class_balance": 0.5},
      # Second round, around the best of the first (γ = 1, κ = 1; CWD led on the large classes).
      {"name": "lix_balanced_kappa1_tau2", "distill.controller": "balanced", "distill.kappa": 1.0,
       "distill.temperature": 2.0},
      {"name": "lix_balanced0.75_kappa1", "distill.controller": "balanced", "distill.kappa": 1.0,
       "distill.class_balance": 0.75},
      {"name": "lix_balanced_kappa2", "distill.controller": "balanced", "distill.kappa": 2.0},
  ]
