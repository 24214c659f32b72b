r"""Issue 23 §2, capacity: is the gap LIX leaves at the converged schedule the student's size?

The converged benchmark's student (ResNet-18 ×0.25) distilled by LIX closes 29 % of the gap to its
RGB+depth teacher, level with the same student trained on labels for every frame. If the rest of
the gap is what a student of this size cannot represent, a wider student (×0.5, about 4× the
FLOPs) should close more of it. The rows of the test, at the converged schedule (students 2 000
steps, batch 16 labelled + 16 unlabelled frames), from the converged seed-0 teacher (issue 23
asks for seed 0), scored on the validation split (never test):

  python -m lix_jax.main --config=configs/benchmark.py:converged --sweep=configs/sweeps/capacity.py \
      --workdir=workdirs/sweep_capacity --config.seed=0 \
      --config.distill.teacher_workdir=workdirs/benchmark_converged/teachers/intermediate_depth_seed0

Each entry's config is the converged benchmark row's (`configs/benchmark.py`: `none`,
`unlabeled/lix`, `unlabeled/none_all_labeled`, `unlabeled/cwd`) with `student.width=0.5`; the
×0.25 runs are the benchmark's own seed-0 runs, which must come from the same machine (runs are
bitwise only per CPU model, docs/reliability.md).
"""

WIDE = {"student.width": 0.5}


def get_sweep():
  return [
      {"name": "ce_wide", "mode": "train_student", **WIDE},
      {"name": "lix_wide", "mode": "distill", "distill.method": "lix", **WIDE},
      {"name": "all_labeled_wide", "mode": "train_student", "train.batch_size": 32,
       "data.builder_config": "all_labeled", **WIDE},
      {"name": "cwd_wide", "mode": "distill", "distill.method": "cwd", **WIDE},
  ]
