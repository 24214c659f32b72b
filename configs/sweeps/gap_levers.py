r"""Issue 23 §2, levers: one knob at a time on LIX (default config) at the converged schedule,
from the converged seed-0 teacher, scored on the validation split (never test).

The seed-1 runs show the CE student fitting its 200 labelled images far better than it
generalises (train mIoU above validation by several points, `results/sweeps/gap_seed1_*_runs.csv`),
and the largest remaining teacher-student difference on wall → building, a pair that depth
separates. Each entry moves one knob of the default:

  python -m lix_jax.main --config=configs/benchmark.py:converged --sweep=configs/sweeps/gap_levers.py \
      --workdir=workdirs/sweep_gap_levers --config.seed=0 --config.mode=distill \
      --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/benchmark_converged/teachers/intermediate_depth_seed0

The base (LIX, default config, 16 unlabelled frames a step, taps stage3 + decoder) is the
converged benchmark's own seed-0 `unlabeled/lix` run.
"""


def get_sweep():
  return [
      # Twice the unlabelled frames per step: the labelled images are overfitted, the frames not.
      {"name": "unlabeled_batch_32", "distill.unlabeled_batch_size": 32},
      # Feature taps nearer the input, where the geometry of the duplex encoder enters.
      {"name": "taps_stage2", "distill.taps": ("stage2", "decoder")},
  ]
