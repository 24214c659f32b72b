r"""LIX on Cityscapes (depth from the official disparity maps and camera files).

  python -m lix_jax.main --config=configs/cityscapes.py --workdir=workdirs/cityscapes \
      --config.data.root=/path/to/cityscapes   # holds leftImg8bit/, gtFine/, disparity/, camera/

With `train_extra` present, `--config.distill.unlabeled_split=unlabeled` distils on its frames too.
Cityscapes' test labels are withheld, so results are reported on `validation`.
"""
from lix_jax.config_real import real_config


def get_config():
  c = real_config("cityscapes", crop_hw=(512, 1024), num_steps=40_000)
  c.data.test_split = "validation"
  return c
