r"""The symmetric class-balanced LIX in the labelled-only regime (the paper's), on its validation
split, at the benchmark schedule, from the benchmark's seed-0 teacher. The benchmark row
`labeled/lix_balanced_sym_kappa4_cka` (now `labeled/lix`) took κ = 4 and λ_KR = 0 from the
unlabelled regime (level with CWD on validation; test 63.1 ± 0.2, 36 % of the gap against DESIGN's
40 %, `results/benchmark.csv`); this round re-tunes the two for this regime:

  python -m lix_jax.main --config=configs/benchmark.py --sweep=configs/sweeps/balanced_sym_labeled.py \
      --workdir=workdirs/sweep_sym_labeled --config.mode=distill --config.distill.method=lix \
      --config.distill.teacher_workdir=workdirs/benchmark/teachers/intermediate_depth_seed0 \
      --config.distill.controller=balanced_sym --config.distill.kappa=4.0 \
      --config.distill.lambda_kr=0.0 --config.distill.unlabeled_split=''

On validation none of the entries beat κ = 4, λ_KR = 0. The validation scores were not committed;
rerun the command to get them.
"""


def get_sweep():
  return [
      {"name": "kappa2", "distill.kappa": 2.0},
      {"name": "kappa8", "distill.kappa": 8.0},
      {"name": "kr1", "distill.lambda_kr": 1.0},
  ]
