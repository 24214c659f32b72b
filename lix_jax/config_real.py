r"""Shared settings of the real-dataset configs (`configs/{kitti_semantics,vkitti2,cityscapes,nuimages}.py`).

Paper-sized models (a ResNet-50 duplex-encoder teacher, a ResNet-18 student, both width 1.0 with
the ImageNet stem), SGD with momentum and a poly schedule, as is usual for driving-scene
segmentation. Data come from the user's local copy (`--config.data.root`, TFDS `manual_dir`);
nothing is downloaded.

ImageNet weights (DESIGN §4; the paper's runs start from them): `teacher.pretrained` and
`student.pretrained` stay "" (from scratch) by default, because a default path that does not exist
would break every run. Download timm's ResNets once, on a machine with internet:

  huggingface-cli download timm/resnet50.a1_in1k model.safetensors \
      --local-dir workdirs/weights/resnet50.a1_in1k
  huggingface-cli download timm/resnet18.a1_in1k model.safetensors \
      --local-dir workdirs/weights/resnet18.a1_in1k

(or `python -c "import timm, safetensors.torch as st; st.save_file(timm.create_model(
'resnet50.a1_in1k', pretrained=True).state_dict(), 'resnet50.a1_in1k.safetensors')"`), then add

  --config.teacher.pretrained=workdirs/weights/resnet50.a1_in1k/model.safetensors \
  --config.student.pretrained=workdirs/weights/resnet18.a1_in1k/model.safetensors

to the command of a config. The teacher's X encoder starts from the same weights (first conv: the
RGB kernel's mean over its input channels); a path that does not exist stops the run with the key.
"""
from __future__ import annotations

import ml_collections

from lix_jax.config_defaults import base_config


def real_config(name: str, *, crop_hw: tuple[int, int], num_steps: int,
                builder_config: str = "default") -> ml_collections.ConfigDict:
  c = base_config()
  c.mode = "pipeline"
  c.data.name = name
  c.data.builder_config = builder_config
  c.data.data_dir = "workdirs/data"
  c.data.crop_hw = crop_hw
  c.data.scale_range = (0.5, 2.0)
  c.data.num_threads = 8
  c.train.num_steps = num_steps
  c.train.batch_size = 16
  c.train.eval_batch_size = 8
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.ckpt_every = 1000
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.01
  c.optim.schedule = "poly"
  c.optim.warmup_steps = 500
  c.optim.weight_decay = 1e-4
  for model, backbone in ((c.teacher, "resnet50"), (c.student, "resnet18")):
    model.backbone = backbone
    model.width = 1.0
    model.stem = "imagenet"
    model.decoder_channels = 128
    model.pretrained = ""  # ImageNet weights: a local file, see the module docstring.
  c.pipeline.teacher_num_steps = num_steps
  c.pipeline.methods = ("none", "kd", "dkd", "cwd", "lix")
  c.distill.unlabeled_split = ""  # The paper's regime: labelled images only.
  # Accelerators: a few large kernel-regression blocks, not hundreds of sequential cache-sized
  # ones (H100, 256x768, B 16 + 16: ARFD 21.3 -> 11.1 ms; results/gpu/). Memory stays linear.
  c.distill.kr_block_size = 4096
  return c
