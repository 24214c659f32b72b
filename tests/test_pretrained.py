"""ImageNet weights (DESIGN §4): reading, converting and loading timm / torchvision ResNets.

The converted backbone is checked against an independent NumPy float64 forward of torchvision's
ResNet (written below from torchvision's `resnet.py`: BasicBlock, Bottleneck v1.5 with the stride
on conv2, BN eps 1e-5, 3×3/2 max-pool with padding 1), not against lix_jax's own code.
"""
import functools
import importlib.util

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import save_file

from lix_jax import models
from lix_jax.config import base_config
from lix_jax.models import pretrained
from lix_jax.models.backbones import make_backbone
from lix_jax.train.task import Task

from fixtures_real import ARCHS, PLANES, torchvision_layout, torchvision_state_dict

HW = 64  # Small inputs keep the width-1.0 ResNet-50 fast on CPU: stage 4 is 2×2.


# ------------------------------------------------------------- NumPy float64 torchvision forward


def np_conv(x, w, stride, pad):
  """NHWC x, OIHW w: a sum over kernel taps of strided windows (cross-correlation, as torch)."""
  w = w.astype(np.float64)
  o, _, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, o))
  for a in range(kh):
    for b in range(kw):
      win = xp[:, a:a + stride * (ho - 1) + 1:stride, b:b + stride * (wo - 1) + 1:stride, :]
      out += win @ w[:, :, a, b].T
  return out


def np_bn(x, sd, name):
  g = lambda k: sd[f"{name}.{k}"].astype(np.float64)
  return (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")


def np_max_pool(x):
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ho, wo = (xp.shape[1] - 3) // 2 + 1, (xp.shape[2] - 3) // 2 + 1
  return np.max([xp[:, a:a + 2 * (ho - 1) + 1:2, b:b + 2 * (wo - 1) + 1:2]
                 for a in range(3) for b in range(3)], axis=0)


def torchvision_forward(sd, arch, image):
  """Outputs of torchvision's `layer1..layer4` (NHWC, float64) for an NHWC image."""
  relu = lambda t: np.maximum(t, 0.0)
  x = relu(np_bn(np_conv(image.astype(np.float64), sd["conv1.weight"], 2, 3), sd, "bn1"))
  x = np_max_pool(x)
  feats, layer = [], "layer1"
  for p, kind, _, _, stride, downsample in torchvision_layout(arch):
    if not p.startswith(layer + "."):
      feats.append(x)
      layer = p.split(".")[0]
    if kind == "basic":
      y = relu(np_bn(np_conv(x, sd[p + "conv1.weight"], stride, 1), sd, p + "bn1"))
      y = np_bn(np_conv(y, sd[p + "conv2.weight"], 1, 1), sd, p + "bn2")
    else:
      y = relu(np_bn(np_conv(x, sd[p + "conv1.weight"], 1, 0), sd, p + "bn1"))
      y = relu(np_bn(np_conv(y, sd[p + "conv2.weight"], stride, 1), sd, p + "bn2"))
      y = np_bn(np_conv(y, sd[p + "conv3.weight"], 1, 0), sd, p + "bn3")
    identity = (np_bn(np_conv(x, sd[p + "downsample.0.weight"], stride, 0), sd, p + "downsample.1")
                if downsample else x)
    x = relu(y + identity)
  return feats + [x]


# ------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_converted_backbone_matches_torchvision(tmp_path, arch):
  sd = torchvision_state_dict(arch)
  path = tmp_path / f"{arch}.safetensors"
  save_file(sd, str(path))
  variables = pretrained.convert_torch_resnet(pretrained.read_torch_checkpoint(path), backbone=arch)
  image = np.random.default_rng(1).normal(size=(1, HW, HW, 3)).astype(np.float32)
  backbone = make_backbone(arch, width=1.0, stem="imagenet")
  got = jax.jit(functools.partial(backbone.apply, train=False))(variables, image)
  want = torchvision_forward(sd, arch, image)
  for i, (g, w) in enumerate(zip(got, want)):
    s = HW // (4 * 2 ** i)
    assert g.shape == w.shape == (1, s, s, PLANES[i] * ARCHS[arch][2]), (i, g.shape, w.shape)
    scale = float(np.abs(w).max())
    assert 0.1 < scale < 1e3, scale  # the random weights keep activations O(1)
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4 * scale,
                               err_msg=f"{arch} stage{i + 1}")


def test_prefixes_wrappers_and_bad_keys(tmp_path):
  sd = torchvision_state_dict("resnet18")
  ref = pretrained.convert_torch_resnet(sd, backbone="resnet18")
  assert ref["params"]["stage2"]["block0"]["proj_conv"]["kernel"].shape == (1, 1, 64, 128)
  np.testing.assert_array_equal(ref["params"]["stem"]["conv"]["kernel"],
                                sd["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(ref["batch_stats"]["stage4"]["block1"]["bn2"]["var"],
                                sd["layer4.1.bn2.running_var"])
  for prefix in ("module.", "model.", "module.model."):
    got = pretrained.convert_torch_resnet({prefix + k: v for k, v in sd.items()},
                                          backbone="resnet18")
    jax.tree.map(np.testing.assert_array_equal, got, ref)

  def error(state):
    with pytest.raises(ValueError) as info:
      pretrained.convert_torch_resnet(state, backbone="resnet18")
    assert "\n" not in str(info.value)
    return str(info.value)

  missing = {k: v for k, v in sd.items() if k != "layer3.1.bn2.running_mean"}
  assert "'layer3.1.bn2.running_mean' is missing" in error(missing)
  extra = dict(sd, **{"layer2.0.se.weight": np.ones(3, np.float32)})
  assert "unexpected key 'layer2.0.se.weight'" in error(extra)
  bad = dict(sd, **{"layer2.0.conv1.weight": np.zeros((128, 64, 1, 1), np.float32)})
  msg = error(bad)
  assert "'layer2.0.conv1.weight'" in msg and "(128, 64, 1, 1)" in msg and "(128, 64, 3, 3)" in msg
  bn_bad = dict(sd, **{"bn1.bias": np.zeros(63, np.float32)})
  assert "'bn1.bias'" in error(bn_bad) and "(63,)" in error(bn_bad)


def test_read_checkpoint_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="absent.safetensors"):
    pretrained.read_torch_checkpoint(tmp_path / "absent.safetensors")
  (tmp_path / "w.npy").write_bytes(b"x")
  with pytest.raises(ValueError, match=r"w\.npy.*extension"):
    pretrained.read_torch_checkpoint(tmp_path / "w.npy")
  if importlib.util.find_spec("torch") is not None:
    pytest.skip("torch is installed: .pth files are read")
  (tmp_path / "w.pth").write_bytes(b"not a pickle")
  with pytest.raises(ValueError) as info:
    pretrained.read_torch_checkpoint(tmp_path / "w.pth")
  msg = str(info.value)
  assert "\n" not in msg and "torch" in msg and "safetensors" in msg and "w.pth" in msg
  assert "weights_only=True" in msg and "st.save_file" in msg


def test_teacher_with_pretrained_rgb_and_x_encoders(tmp_path):
  sd = torchvision_state_dict("resnet18", seed=2)
  path = tmp_path / "resnet18.safetensors"
  save_file(sd, str(path))
  cfg = ml_collections.ConfigDict(dict(fusion="intermediate", backbone="resnet18", width=1.0,
                                       stem="imagenet", decoder_channels=32))
  teacher = models.build(cfg, num_classes=5, x_channels=1, kind="teacher")
  image, x = jnp.zeros((1, HW, HW, 3)), jnp.zeros((1, HW, HW, 1))
  # One compilation: the shapes from eval_shape, the values of the non-encoder parts need no
  # particular init for this test.
  abstract = jax.eval_shape(functools.partial(teacher.init, train=False), jax.random.key(0),
                            image, x)
  fresh = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), abstract)
  fresh["batch_stats"] = jax.tree.map(jnp.ones_like, fresh["batch_stats"])
  variables = pretrained.load_imagenet_encoders(teacher, fresh, path)
  rgb, xe = variables["params"]["fusion"]["rgb"], variables["params"]["fusion"]["x"]
  rgb_kernel = sd["conv1.weight"].transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(rgb["stem"]["conv"]["kernel"], rgb_kernel)
  np.testing.assert_allclose(xe["stem"]["conv"]["kernel"], rgb_kernel.mean(axis=2, keepdims=True),
                             rtol=1e-6)
  np.testing.assert_array_equal(xe["stage3"]["block1"]["conv2"]["kernel"],
                                rgb["stage3"]["block1"]["conv2"]["kernel"])
  np.testing.assert_array_equal(variables["batch_stats"]["fusion"]["x"]["stem"]["bn"]["var"],
                                sd["bn1.running_var"])
  # The rest of the tree is untouched.
  np.testing.assert_array_equal(variables["params"]["classifier"]["conv"]["kernel"],
                                fresh["params"]["classifier"]["conv"]["kernel"])
  rng = np.random.default_rng(3)
  logits, taps = jax.jit(functools.partial(teacher.apply, train=False))(
      variables, rng.normal(size=image.shape).astype(np.float32),
      rng.normal(size=x.shape).astype(np.float32))
  assert logits.shape == (1, HW, HW, 5) and taps["stage4"].shape == (1, 2, 2, 512)
  assert np.isfinite(np.asarray(logits)).all()


def test_refusals_name_the_config_key(tmp_path):
  path = tmp_path / "w.safetensors"
  save_file(torchvision_state_dict("resnet18"), str(path))
  narrow = models.Student(5, width=0.25, stem="imagenet")
  with pytest.raises(ValueError, match=r"student\.width=1\.0.*student\.width=0\.25"):
    pretrained.load_imagenet_encoders(narrow, {}, path)
  deep = models.Teacher(5, x_channels=1, width=1.0, stem="deep")
  with pytest.raises(ValueError, match=r"teacher\.stem='imagenet'.*got teacher\.stem='deep'"):
    pretrained.load_imagenet_encoders(deep, {}, path)
  with pytest.raises(FileNotFoundError, match=r"teacher\.pretrained=.*nope\.safetensors"):
    pretrained.load_imagenet_encoders(deep, {}, tmp_path / "nope.safetensors")
  r50 = models.Student(5, backbone="resnet50", width=1.0, stem="imagenet")
  with pytest.raises(ValueError,
                     match=r"student\.pretrained=.*'layer1\.0\.bn3\.running_mean' is missing"):
    pretrained.load_imagenet_encoders(r50, {}, path)


def test_init_state_loads_student_pretrained(tmp_path):
  sd = torchvision_state_dict("resnet18", seed=4)
  path = tmp_path / "r18.safetensors"
  save_file(sd, str(path))
  config = base_config()
  config.data.crop_hw = (HW, HW)
  config.student.update(width=1.0, stem="imagenet", backbone="resnet18", pretrained=str(path))
  task = Task.build(config, "student")
  state, _ = task.init_state(num_steps=10)
  got = state.params["backbone"]
  np.testing.assert_array_equal(got["stage1"]["block0"]["conv1"]["kernel"],
                                sd["layer1.0.conv1.weight"].transpose(2, 3, 1, 0))
  proj_bn = state.batch_stats["backbone"]["stage2"]["block0"]["proj_bn"]
  np.testing.assert_array_equal(proj_bn["mean"], sd["layer2.0.downsample.1.running_mean"])
  config.student.pretrained = str(tmp_path / "absent.safetensors")
  with pytest.raises(FileNotFoundError, match=r"student\.pretrained=.*absent\.safetensors"):
    task.init_state(num_steps=10)


def test_late_fusion_teacher_loads_both_branches(tmp_path):
  sd = torchvision_state_dict("resnet18", seed=5)
  path = tmp_path / "r18.safetensors"
  save_file(sd, str(path))
  teacher = models.Teacher(5, x_channels=3, fusion="late", width=1.0, stem="imagenet",
                           decoder_channels=16)
  abstract = jax.eval_shape(functools.partial(teacher.init, train=False), jax.random.key(0),
                            jnp.zeros((1, HW, HW, 3)), jnp.zeros((1, HW, HW, 3)))
  fresh = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
  variables = pretrained.load_imagenet_encoders(teacher, fresh, path)
  branches = variables["params"]["fusion"]
  kernel = sd["conv1.weight"].transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(branches["rgb"]["stem"]["conv"]["kernel"], kernel)
  x_kernel = np.asarray(branches["x"]["stem"]["conv"]["kernel"])
  assert x_kernel.shape == (7, 7, 3, 64)
  for c in range(3):  # normals: the mean kernel, repeated for each of X's 3 channels
    np.testing.assert_allclose(x_kernel[:, :, c], kernel.mean(axis=2), rtol=1e-6)
  np.testing.assert_array_equal(branches["x"]["stage4"]["block1"]["bn2"]["scale"],
                                sd["layer4.1.bn2.weight"])
  assert not np.any(np.asarray(branches["x_decoder"]["lateral1"]["kernel"]))  # untouched
