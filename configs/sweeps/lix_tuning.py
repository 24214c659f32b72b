r"""Tuning LIX in the unlabelled regime on the validation split (issue 10), one knob at a time
from the DESIGN defaults, at the benchmark schedule, from the benchmark's seed-0 teacher:

  python -m lix_jax.main --config=configs/benchmark.py --sweep=configs/sweeps/lix_tuning.py \
      --workdir=workdirs/sweep_tuning --config.mode=distill --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/benchmark/teachers/intermediate_depth_seed0

Knobs: β (NCLD weight; DESIGN §2.6 asks β ≤ 1), λ_U (weight of the unlabelled frames), κ (how
sharply the DWC re-weights), τ < 1 (a sharper teacher, towards pseudo-labels).
"""


def get_sweep():
  return [
      {"name": "beta0.5", "distill.beta": 0.5},
      {"name": "lambda_u2", "distill.lambda_unlabeled": 2.0},
      {"name": "kappa1", "distill.kappa": 1.0},
      {"name": "tau0.5", "distill.temperature": 0.5},
      # Second round, around the best of the first (kappa = 1).
      {"name": "kappa0.5", "distill.kappa": 0.5},
      {"name": "kappa2", "distill.kappa": 2.0},
  ]
