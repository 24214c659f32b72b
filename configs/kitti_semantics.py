r"""LIX on KITTI semantics (200 labelled images; depth from `training/depth/*.png` made by the user).

  python -m lix_jax.main --config=configs/kitti_semantics.py --workdir=workdirs/kitti \
      --config.data.root=/path/to/data_semantics \
      --config.teacher.pretrained=workdirs/weights/resnet50.a1_in1k/model.safetensors \
      --config.student.pretrained=workdirs/weights/resnet18.a1_in1k/model.safetensors

KITTI ships no depth: without `training/depth/` only students can be trained (mode=train_student).
Splits: every 5th image (sorted by name) is `validation`, the rest `train`; the test split is the
validation split.

The two `pretrained` overrides start from ImageNet (as the paper does; download the weights as in
`lix_jax.config.real_config`'s docstring); without them the encoders train from scratch.
"""
from lix_jax.config import real_config


def get_config():
  c = real_config("kitti_semantics", crop_hw=(368, 1216), num_steps=20_000)
  c.data.test_split = "validation"
  c.train.batch_size = 8
  return c
