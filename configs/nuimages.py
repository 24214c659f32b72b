r"""nuImages with the paper-sized student (nuImages ships no depth).

  python -m lix_jax.main --config=configs/nuimages.py --workdir=workdirs/nuimages \
      --config.data.root=/path/to/nuimages \
      --config.student.pretrained=workdirs/weights/resnet18.a1_in1k/model.safetensors

`data.root` holds v1.0-{train,val}/ and samples/.

Without user-made `depth/<sample_data token>.png` maps only the RGB student can be trained, so the
default mode is train_student; for a teacher, add the depth maps and use mode=pipeline.

The `pretrained` override starts the student from ImageNet (download the weights as in
`lix_jax.config.real_config`'s docstring; with a teacher add `--config.teacher.pretrained=...` too).
"""
from lix_jax.config import real_config


def get_config():
  c = real_config("nuimages", crop_hw=(448, 800), num_steps=40_000)
  c.mode = "train_student"
  c.data.test_split = "validation"
  return c
