r"""A short sweep of the controller temperature kappa for the full LIX loss (tune on validation).

  python -m lix_jax.main --config=configs/synthetic.py --sweep=configs/sweeps/kappa.py \
      --workdir=workdirs/sweep_kappa --config.mode=distill \
      --config.distill.teacher_workdir=workdirs/synthetic/teacher
"""


def get_sweep():
  return [{"name": f"kappa_{k:g}", "distill.method": "lix", "distill.kappa": k}
          for k in (-4.0, -2.0, -1.0, 1.0, 2.0, 4.0)]
