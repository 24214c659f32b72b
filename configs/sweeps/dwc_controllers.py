r"""DWC ablation (DESIGN §2.3): fixed (= DKD) vs trust vs dynamic with kappa of both signs, and
lix_jax's own class-balanced controller.

Runs `distill` with the teacher of a finished pipeline, one sub-workdir per entry:

  python -m lix_jax.main --config=configs/synthetic.py --sweep=configs/sweeps/dwc_controllers.py \
      --workdir=workdirs/sweep_dwc --config.mode=distill \
      --config.distill.teacher_workdir=workdirs/synthetic/teacher
"""


def get_sweep():
  return [
      {"name": "fixed", "distill.method": "dwld", "distill.controller": "fixed"},
      {"name": "trust", "distill.method": "dwld", "distill.controller": "trust"},
      {"name": "dynamic_k4", "distill.method": "dwld", "distill.controller": "dynamic", "distill.kappa": 4.0},
      {"name": "dynamic_k-2", "distill.method": "dwld", "distill.controller": "dynamic", "distill.kappa": -2.0},
      {"name": "balanced_k1", "distill.method": "dwld", "distill.controller": "balanced", "distill.kappa": 1.0},
  ]
