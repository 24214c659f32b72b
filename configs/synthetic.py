r"""LIX on the embedded `synthetic_driving` dataset (no download).

Default preset (the README's main command; about 20 minutes on 2 CPU cores): build the dataset,
train the RGB+depth teacher on the 200 labelled images, then the RGB students of
`pipeline.methods` with the unlabelled frames (DESIGN §2.6), evaluate, and write `results.md`,
`results.csv`, plots and a prediction grid into the workdir:

  python -m lix_jax.main --config=configs/synthetic.py --workdir=workdirs/synthetic

Presets (`--config=configs/synthetic.py:PRESET`):
  (none)   the default above.
  tiny     every method for a few steps on the `tiny` builder config; <= 3 min (tests, smoke).
  labeled  the paper's regime: distillation on the labelled images only.

Any key can be overridden, e.g. `--config.distill.kappa=-2 --config.student.width=0.5`.
"""
from __future__ import annotations

import ml_collections

from lix_jax.config import base_config

ALL_METHODS = ("none", "kd", "dkd", "cwd", "pseudo_label", "lix")


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  preset = preset or "default"
  presets = ("default", "tiny", "labeled")
  if preset not in presets:
    raise KeyError(f"Unknown preset {preset!r} for configs/synthetic.py. Available presets are: {presets}")
  c = base_config()
  if preset == "labeled":
    c.distill.unlabeled_split = ""
    c.pipeline.methods = ("none", "kd", "dkd", "cwd", "lix")
  if preset == "tiny":
    c.data.builder_config = "tiny"
    c.train.num_steps = 6
    c.train.batch_size = 8
    c.train.eval_batch_size = 16
    c.train.log_every = 2
    c.train.eval_every = 6
    c.train.ckpt_every = 3
    c.train.progress = False
    c.optim.warmup_steps = 2
    c.teacher.width = 0.125
    c.teacher.decoder_channels = 16
    c.student.width = 0.125
    c.student.decoder_channels = 16
    c.distill.unlabeled_batch_size = 8
    c.pipeline.methods = ALL_METHODS
    c.pipeline.teacher_num_steps = 6
    c.pipeline.num_predictions = 2
  return c
