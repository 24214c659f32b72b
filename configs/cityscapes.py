r"""LIX on Cityscapes (depth from the official disparity maps and camera files).

  python -m lix_jax.main --config=configs/cityscapes.py --workdir=workdirs/cityscapes \
      --config.data.root=/path/to/cityscapes \
      --config.teacher.pretrained=workdirs/weights/resnet50.a1_in1k/model.safetensors \
      --config.student.pretrained=workdirs/weights/resnet18.a1_in1k/model.safetensors

`data.root` holds leftImg8bit/, gtFine/, disparity/, camera/.

With `train_extra` present, `--config.distill.unlabeled_split=unlabeled` distils on its frames too.
Cityscapes' test labels are withheld, so results are reported on `validation`.

The two `pretrained` overrides start from ImageNet (as the paper does; download the weights as in
`lix_jax.config.real_config`'s docstring); without them the encoders train from scratch.
"""
from lix_jax.config import real_config


def get_config():
  c = real_config("cityscapes", crop_hw=(512, 1024), num_steps=40_000)
  c.data.test_split = "validation"
  return c
