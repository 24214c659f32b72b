r"""LIX on Virtual KITTI 2 (dense synthetic depth; `clone` variation by default).

  python -m lix_jax.main --config=configs/vkitti2.py --workdir=workdirs/vkitti2 \
      --config.data.root=/path/to/vkitti2 \
      --config.teacher.pretrained=workdirs/weights/resnet50.a1_in1k/model.safetensors \
      --config.student.pretrained=workdirs/weights/resnet18.a1_in1k/model.safetensors

`data.root` holds vkitti_2.0.3_{rgb,depth,classSegmentation,textgt}/.

Splits by scene: Scene01/02/06/18 train, Scene20 validation and test. Other variations:
`--config.data.builder_config=fog` (or `all`).

The two `pretrained` overrides start from ImageNet (as the paper does; download the weights as in
`lix_jax.config.real_config`'s docstring); without them the encoders train from scratch.
"""
from lix_jax.config import real_config


def get_config():
  return real_config("vkitti2", crop_hw=(368, 1216), num_steps=40_000, builder_config="clone")
