r"""Fifth tuning round of LIX with the `balanced` DWC, around round 4's best: balanced κ = 4 with
ARFD's kernel-regression term off (λ_KR = 0, ARFD = its CKA term: on validation above the same
with it and above CWD; the logit-side knobs of round 4 -- κ = 8, γ = 0.75, λ_L = 2 -- all stayed
level with it). Same regime, schedule and teacher as rounds 3 and 4:

  python -m lix_jax.main --config=configs/benchmark.py --sweep=configs/sweeps/balanced_round5.py \
      --workdir=workdirs/sweep_balance5 --config.mode=distill --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/benchmark/teachers/intermediate_depth_seed0 \
      --config.distill.controller=balanced --config.distill.kappa=4.0 \
      --config.distill.lambda_kr=0.0

Entries: a heavier feature term (λ_F = 2), a third tap (stage2), and Gram-form CKA with the
Laplace kernel in place of linear CKA. None beat the base (λ_KR = 0) on validation. The
validation scores were not committed; rerun the command to get them.
"""


def get_sweep():
  return [
      {"name": "lambda_f2", "distill.lambda_f": 2.0},
      {"name": "taps_stage2", "distill.taps": ("stage2", "stage3", "decoder"),
       "distill.tap_weights": (1.0, 1.0, 1.0)},
      {"name": "cka_laplace", "distill.kernel": "laplace"},
  ]
