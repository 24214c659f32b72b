r"""LIX (symmetric class-balanced controller, κ = 4, CKA only) tuned at the converged schedule:
4 000-step seed-0 teacher (test 81.1), students 2 000 steps, unlabelled frames, validation split.
At this schedule the base gets validation 73.81 (CWD 72.88, KD 72.03, CE alone 69.79, teacher
81.0), i.e. 36 % of the validation gap. Each entry moves one knob that helped elsewhere: the logit
weight λ_L (best of the labelled-only round 2) and the feature weight λ_F:

  python -m lix_jax.main --config=configs/benchmark.py:long \
      --sweep=configs/sweeps/balanced_sym_converged.py \
      --workdir=workdirs/sweep_sym_converged --config.mode=distill --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/teacher_4000_seed0 \
      --config.distill.controller=balanced_sym --config.distill.kappa=4.0 \
      --config.distill.lambda_kr=0.0

Validation mIoU: lambda_l2 73.50, lambda_f2 73.82 (base 73.81): flat in λ_F, worse with more logit
weight; the base stays.
"""


def get_sweep():
  return [
      {"name": "lambda_l2", "distill.lambda_l": 2.0},
      {"name": "lambda_f2", "distill.lambda_f": 2.0},
  ]
