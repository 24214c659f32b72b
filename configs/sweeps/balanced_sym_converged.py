r"""LIX (symmetric class-balanced controller, κ = 4, CKA only) tuned at the converged schedule:
4 000-step seed-0 teacher (test 81.1, `results/benchmark_converged.csv`), students 2 000 steps,
unlabelled frames, validation split. At this schedule the base is ahead of CWD, KD and CE alone on
validation. Each entry moves one knob that helped elsewhere: the logit weight λ_L (best of the
labelled-only round 2) and the feature weight λ_F:

  python -m lix_jax.main --config=configs/benchmark.py:long \
      --sweep=configs/sweeps/balanced_sym_converged.py \
      --workdir=workdirs/sweep_sym_converged --config.mode=distill --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/teacher_4000_seed0 \
      --config.distill.controller=balanced_sym --config.distill.kappa=4.0 \
      --config.distill.lambda_kr=0.0

On validation: flat in λ_F (lambda_f2 level with the base), worse with more logit weight
(lambda_l2 below it); the base stays. The validation scores were not committed; rerun the command
to get them.
"""


def get_sweep():
  return [
      {"name": "lambda_l2", "distill.lambda_l": 2.0},
      {"name": "lambda_f2", "distill.lambda_f": 2.0},
  ]
