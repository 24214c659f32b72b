r"""Third tuning round of LIX with the `balanced` DWC, on the validation split of the unlabelled
regime, at the benchmark schedule, from the benchmark's seed-0 teacher (issue 7: the best LIX so
far, balanced κ = 2, tied CWD — level on validation, 64.0 ± 0.4 vs 64.3 ± 0.2 on test,
`results/benchmark.csv` — losing on the large classes building / wall / sidewalk / vegetation):

  python -m lix_jax.main --config=configs/benchmark.py --sweep=configs/sweeps/balanced_round3.py \
      --workdir=workdirs/sweep_balance3 --config.mode=distill --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/benchmark/teachers/intermediate_depth_seed0 \
      --config.distill.controller=balanced --config.distill.kappa=2.0

Every entry starts from balanced κ = 2 (the command line) and moves one knob: the weight of the
logit term (λ_L), of the feature term (λ_F), the ARFD taps, the recalibration mix μ, the TCLD
weight α, and the DESIGN default κ = 4. Best of the round on validation: κ = 4 (with λ_L = 2),
every entry level with the others and with CWD (a plateau). The validation scores were not
committed; rerun the command to get them.
"""


def get_sweep():
  return [
      {"name": "lambda_l2", "distill.lambda_l": 2.0},
      {"name": "lambda_f0.5", "distill.lambda_f": 0.5},
      {"name": "taps_decoder", "distill.taps": ("decoder",), "distill.tap_weights": (1.0,)},
      {"name": "mix1", "distill.mix": 1.0},
      {"name": "alpha2", "distill.alpha": 2.0},
      {"name": "kappa4", "distill.kappa": 4.0},
  ]
