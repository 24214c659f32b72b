r"""Where does LIX lose to KD in the unlabelled regime? DWLD alone, ARFD alone, LIX with a lighter
feature weight, LIX with a self-paced controller (kappa < 0). Tune on validation, report test.

  python -m lix_jax.main --config=configs/synthetic.py --sweep=configs/sweeps/lix_ablation.py \
      --workdir=workdirs/sweep_lix --config.mode=distill \
      --config.distill.teacher_workdir=workdirs/synthetic/teacher
"""


def get_sweep():
  return [
      {"name": "dwld_only", "distill.method": "dwld"},
      {"name": "lix_lambda_f0.1", "distill.method": "lix", "distill.lambda_f": 0.1},
      {"name": "lix_kappa-2", "distill.method": "lix", "distill.kappa": -2.0},
  ]
