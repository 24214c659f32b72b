"""Tests of lix_jax.models: shapes, fusion, BatchNorm (incl. sharded sync), bf16, weights, registry.

Real `init` is never compiled here (threefry initialisers take ~20 s CPU to compile for one
model): variables come from `jax.eval_shape(model.init)` and are filled with NumPy random values
(`_fake_variables`), which also gives non-trivial BN statistics for the eval-mode tests.
"""
from __future__ import annotations

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lix_jax import models
from lix_jax.models import backbones, fusion, networks
from lix_jax.models.networks import Adapters, Student, Teacher

HW = (40, 72)  # not a multiple of 32 on purpose
K = 5


def _fake_variables(model, hw=HW, batch=2, seed=0):
  """Variables with the shapes of `model.init`, filled from NumPy (He-normal kernels, random BN)."""
  variables, _ = networks.abstract_init(model, hw, batch)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == "kernel":
      v = rng.normal(size=shape) * math.sqrt(2.0 / math.prod(shape[:-1]))
    elif name in ("scale", "var"):
      v = rng.uniform(0.5, 1.5, size=shape)
    else:  # bias, mean
      v = rng.normal(size=shape) * 0.1
    return jnp.asarray(v, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, variables)


@functools.lru_cache(maxsize=None)
def _jit_apply(model, train):
  """A jitted `model.apply(variables, *inputs)`, one per (model, train): tests share compilations.

  Returns ((logits, taps), {"batch_stats": ...}) in both modes (eval must leave them unchanged).
  """
  return jax.jit(lambda v, *a: model.apply(v, *a, train=train, mutable=["batch_stats"]))


def _inputs(batch=2, hw=HW, x_channels=1, seed=1):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(batch, *hw, 3)), jnp.float32),
          jnp.asarray(rng.normal(size=(batch, *hw, x_channels)), jnp.float32))


def _expected_stage_channels(backbone, width):
  expansion = 4 if backbone == "resnet50" else 1
  return [max(8, round(b * width)) * expansion for b in (64, 128, 256, 512)]


# ------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("kind", ["student", "intermediate", "late"])
def test_output_and_tap_shapes(backbone, kind):
  width, hw = 0.25, (37, 70)
  if kind == "student":
    model = Student(K, backbone=backbone, width=width)
  else:
    model = Teacher(K, 3, fusion=kind, backbone=backbone, width=width, stem="deep")
  _, (logits, taps) = networks.abstract_init(model, hw, batch=2)
  assert logits.shape == (2, *hw, K) and logits.dtype == jnp.float32
  chans = _expected_stage_channels(backbone, width) + [max(8, round(128 * width))]
  for (name, stride), c in zip([("stage1", 4), ("stage2", 8), ("stage3", 16), ("stage4", 32),
                                ("decoder", 4)], chans):
    assert taps[name].shape == (2, -(-hw[0] // stride), -(-hw[1] // stride), c), name
    assert networks.tap_shape(hw, stride) == taps[name].shape[1:3]
  assert networks.tap_channels(model, hw) == {k: v.shape[-1] for k, v in taps.items()}


def test_padding_semantics_equal_explicit_zero_padding():
  """Running on H×W equals running on the zero-padded 64×96 input and cropping (eval mode)."""
  model = Student(K, width=0.125)
  v = _fake_variables(model)
  img, _ = _inputs()
  padded = jnp.pad(img, ((0, 0), (0, 64 - HW[0]), (0, 96 - HW[1]), (0, 0)))
  (logits, taps), _ = _jit_apply(model, False)(v, img)
  (logits_p, taps_p), _ = _jit_apply(model, False)(v, padded)
  # Equal up to float32 rounding at the tensors' scale (the fake weights give logits of ~200 and
  # XLA may sum in another order per shape: ~1e-6 of the scale); padding leaking in moves ~1e-2.
  _assert_close_at_scale(logits, logits_p[:, :HW[0], :HW[1]])
  for name, t in taps.items():
    h, w = t.shape[1:3]
    _assert_close_at_scale(t, taps_p[name][:, :h, :w], err_msg=name)


def _assert_close_at_scale(actual, desired, err_msg=""):
  np.testing.assert_allclose(actual, desired, rtol=0, atol=1e-5 * float(np.max(np.abs(desired))),
                             err_msg=err_msg)


# ------------------------------------------------------------------------------------- fusion


@pytest.mark.parametrize("fusion_kind", ["intermediate", "late"])
def test_teacher_output_depends_on_x(fusion_kind):
  model = Teacher(K, 1, fusion=fusion_kind, width=0.125)
  v = _fake_variables(model)
  img, x = _inputs()
  (logits, taps), _ = _jit_apply(model, False)(v, img, x)
  (logits2, _), _ = _jit_apply(model, False)(v, img, x + 1.0)
  assert logits.shape == (2, *HW, K) and set(taps) == set(networks.TAP_STRIDES)
  assert float(jnp.max(jnp.abs(logits - logits2))) > 1e-3
  with pytest.raises(ValueError, match="x_channels"):
    model.apply(v, img, jnp.concatenate([x, x], -1), train=False)


def test_student_has_no_x_path():
  params = list(inspect.signature(Student.__call__).parameters)
  assert params == ["self", "image", "train"]
  assert list(inspect.signature(Teacher.__call__).parameters) == ["self", "image", "x", "train"]
  variables, _ = networks.abstract_init(Student(K, width=0.25), HW)
  assert set(variables["params"]) == {"backbone", "decoder", "classifier"}
  # The student's first conv sees 3 input channels only.
  assert variables["params"]["backbone"]["stem"]["conv"]["kernel"].shape[2] == 3


def test_fusion_trees_differ():
  def keys(**kw):
    variables, _ = networks.abstract_init(Teacher(K, 1, width=0.25, **kw), HW)
    return set(backbones.flatten_tree(jax.tree.map(lambda s: np.zeros(0), variables["params"])))

  inter, late = keys(fusion="intermediate"), keys(fusion="late")
  inter_add = keys(fusion="intermediate", fusion_block="add")
  assert inter != late
  assert any(k.startswith("fusion/rgb_decoder/") for k in late)
  assert not any(k.startswith("fusion/rgb_decoder/") for k in inter)
  assert {k.split("/")[1] for k in inter - inter_add} == {"fuse1", "fuse2", "fuse3", "fuse4"}
  assert not any("fuse" in k for k in inter_add)
  # The X stem sees x_channels = 1 input channel.
  assert "fusion/x/stem/conv/kernel" in inter


def test_add_and_gated_fusion_blocks():
  rng = np.random.default_rng(0)
  r = rng.normal(size=(2, 3, 4, 16)).astype(np.float32)
  x = rng.normal(size=(2, 3, 4, 16)).astype(np.float32)
  np.testing.assert_allclose(fusion.AddFusion().apply({}, r, x), r + x, rtol=1e-6)
  block = fusion.GatedFusion()
  v = block.init(jax.random.key(0), r, x)
  p = jax.tree.map(np.asarray, v["params"])
  s = np.concatenate([r, x], -1).mean(axis=(1, 2))
  h = np.maximum(s @ p["squeeze"]["kernel"] + p["squeeze"]["bias"], 0)
  g = 1 / (1 + np.exp(-(h @ p["excite"]["kernel"] + p["excite"]["bias"])))
  want = g[:, None, None, :16] * r + g[:, None, None, 16:] * x
  assert p["squeeze"]["kernel"].shape == (32, 8)  # max(8, 2C / 16)
  np.testing.assert_allclose(block.apply(v, r, x), want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- batchnorm


def _conv_np(x, w, stride, pad):
  """NumPy NHWC conv with symmetric padding (independent of lax)."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh = w.shape[0]
  win = np.lib.stride_tricks.sliding_window_view(x, (kh, kh), axis=(1, 2))[:, ::stride, ::stride]
  return np.einsum("bhwcij,ijco->bhwo", win, w)


def test_batchnorm_train_vs_eval():
  model = Student(K, width=0.125)
  v = _fake_variables(model)
  img, _ = _inputs()
  # Eval: batch_stats not updated, and an image's output is independent of the other items.
  (logits, _), upd = _jit_apply(model, False)(v, img)
  for a, b in zip(jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(v["batch_stats"])):
    np.testing.assert_array_equal(a, b)
  other = img.at[1].set(img[1] * 3.0 + 1.0)
  (logits_other, _), _ = _jit_apply(model, False)(v, other)
  np.testing.assert_allclose(logits_other[0], logits[0], atol=1e-5, rtol=1e-5)
  # Train: batch statistics are used (item 0 now depends on item 1) and running stats move by
  # momentum 0.9 toward the batch's mean and biased variance (checked on the stem's BN).
  (train_logits, _), upd = _jit_apply(model, True)(v, img)
  (train_other, _), _ = _jit_apply(model, True)(v, other)
  assert float(jnp.max(jnp.abs(train_other[0] - train_logits[0]))) > 1e-4
  padded = np.pad(np.asarray(img), ((0, 0), (0, 64 - HW[0]), (0, 96 - HW[1]), (0, 0)))
  kernel = np.asarray(v["params"]["backbone"]["stem"]["conv"]["kernel"])
  y = _conv_np(padded, kernel, stride=2, pad=3)
  old = v["batch_stats"]["backbone"]["stem"]["bn"]
  new = upd["batch_stats"]["backbone"]["stem"]["bn"]
  np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * y.mean((0, 1, 2)),
                             atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * y.var((0, 1, 2)),
                             atol=1e-4, rtol=1e-4)


def test_sharded_forward_equals_single_device():
  n = jax.device_count()
  assert n == 8, "conftest sets 8 CPU devices"
  kw = dict(num_classes=K, x_channels=1, fusion="intermediate", width=0.125)
  ref_model, sharded_model = Teacher(**kw), Teacher(**kw, bn_axis_name="data")
  v = _fake_variables(ref_model)
  img, x = _inputs(batch=n)  # one image per device: BN statistics over its pixels only

  def fwd(v, img, x):
    (logits, taps), upd = sharded_model.apply(v, img, x, train=True, mutable=["batch_stats"])
    return logits, taps["decoder"], upd["batch_stats"]

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.jit(jax.shard_map(
      fwd, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P("data"), P("data"), P()),
      check_vma=False))
  got = sharded(v, img, x)
  (logits, taps), upd = _jit_apply(ref_model, True)(v, img, x)
  want = (logits, taps["decoder"], upd["batch_stats"])
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    # float32 reductions in another order: 1e-5 relative to each array's scale.
    np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, float(np.abs(b).max())), rtol=1e-5)
  # Unsynchronised BN would differ: the statistics of 2 images are not those of 16.
  assert not np.allclose(got[2]["fusion"]["rgb"]["stem"]["bn"]["mean"],
                         v["batch_stats"]["fusion"]["rgb"]["stem"]["bn"]["mean"])


def test_bfloat16_compute():
  kw = dict(num_classes=K, x_channels=1, width=0.125)
  f32, bf16 = Teacher(**kw), Teacher(**kw, dtype=jnp.bfloat16)
  variables, _ = networks.abstract_init(bf16, HW)
  assert {l.dtype for l in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  v = _fake_variables(f32)
  img, x = _inputs(batch=8)  # the batch of the sharded test: the f32 compilation is shared
  (want, _), _ = _jit_apply(f32, True)(v, img, x)
  (got, taps), upd = _jit_apply(bf16, True)(v, img, x)
  assert got.dtype == jnp.float32 and taps["decoder"].dtype == jnp.bfloat16
  assert {l.dtype for l in jax.tree.leaves(upd)} == {jnp.dtype(jnp.float32)}
  rel = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
  assert rel < 0.05, rel


# ---------------------------------------------------------------------------- weights, registry


def test_load_pretrained_round_trip_and_errors(tmp_path):
  model = Student(K, width=0.125)
  source = _fake_variables(model, seed=1)["params"]
  target = _fake_variables(model, seed=2)["params"]
  path = tmp_path / "resnet.npz"
  flat = {}

  def collect(prefix, tree):  # written here, independently of backbones.flatten_tree
    for k, val in tree.items():
      if isinstance(val, dict):
        collect(f"{prefix}{k}/", val)
      else:
        flat[f"{prefix}{k}"] = np.asarray(val)

  collect("", source["backbone"])
  flat["fc/kernel"] = np.zeros((3, 3))  # unused keys are ignored
  np.savez(path, **flat)
  loaded = models.load_pretrained(target, path, prefix="backbone")
  for a, b in zip(jax.tree.leaves(loaded["backbone"]), jax.tree.leaves(source["backbone"])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(loaded["decoder"]), jax.tree.leaves(target["decoder"])):
    np.testing.assert_array_equal(a, b)
  # Excluded paths are left as they were.
  kept = models.load_pretrained(target, path, prefix="backbone", exclude=("stem/conv",))
  np.testing.assert_array_equal(kept["backbone"]["stem"]["conv"]["kernel"],
                                target["backbone"]["stem"]["conv"]["kernel"])
  bad = dict(flat, **{"stage2/block0/conv1/kernel": np.zeros((3, 3, 8, 7), np.float32)})
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(ValueError, match=r"stage2/block0/conv1/kernel.*\(3, 3, 8, 7\)"):
    models.load_pretrained(target, tmp_path / "bad.npz", prefix="backbone")
  missing = {k: val for k, val in flat.items() if k != "stage3/block1/bn2/scale"}
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(KeyError, match="stage3/block1/bn2/scale"):
    models.load_pretrained(target, tmp_path / "missing.npz", prefix="backbone")
  with pytest.raises(KeyError, match="nope"):
    models.load_pretrained(target, path, prefix="nope")
  with pytest.raises(FileNotFoundError):
    models.load_pretrained(target, tmp_path / "absent.npz")


def test_build_from_config_and_unknown_names():
  cfg = ml_collections.ConfigDict(dict(fusion="late", backbone="resnet34", width=0.25,
                                       fusion_block="add", stem="deep", dtype="bfloat16"))
  teacher = models.build(cfg, num_classes=K, x_channels=3, bn_axis_name="data")
  assert isinstance(teacher, Teacher)
  assert (teacher.fusion, teacher.backbone, teacher.width, teacher.fusion_block, teacher.stem,
          teacher.dtype, teacher.bn_axis_name, teacher.x_channels) == (
              "late", "resnet34", 0.25, "add", "deep", jnp.bfloat16, "data", 3)
  student = models.build(ml_collections.ConfigDict(dict(backbone="resnet18", width=0.5)),
                         num_classes=K)
  assert isinstance(student, Student) and student.width == 0.5 and student.dtype == jnp.float32
  assert isinstance(models.build(cfg, num_classes=K, kind="student"), Student)
  with pytest.raises(ValueError, match="x_channels"):
    models.build(cfg, num_classes=K)
  for key, value, names in [("backbone", "resnet101", "resnet18"), ("fusion", "early", "late"),
                            ("fusion_block", "concat", "gated"), ("dtype", "float16", "bfloat16"),
                            ("stem", "patchify", "imagenet")]:
    bad = ml_collections.ConfigDict(cfg.to_dict())
    bad[key] = value
    with pytest.raises(KeyError, match=f"{value}.*{names}"):
      models.build(bad, num_classes=K, x_channels=1)
  with pytest.raises(ValueError, match="kind"):
    models.build(cfg, num_classes=K, x_channels=1, kind="oracle")


def test_adapters():
  student, teacher = Student(K, width=0.125), Teacher(K, 1, width=0.25)
  want = networks.tap_channels(teacher, HW)
  adapters = Adapters({"stage2": want["stage2"], "decoder": want["decoder"]})
  _, (_, taps) = networks.abstract_init(student, HW)
  taps = {k: jnp.ones(t.shape, t.dtype) * (i + 1) for i, (k, t) in enumerate(taps.items())}
  v = adapters.init(jax.random.key(0), taps)
  out = adapters.apply(v, taps)
  assert set(out) == {"stage2", "decoder"}
  for name in out:
    p = v["params"][name]
    ref = np.asarray(taps[name]) @ np.asarray(p["kernel"][0, 0]) + np.asarray(p["bias"])
    assert out[name].shape == (*taps[name].shape[:3], want[name])
    np.testing.assert_allclose(out[name], ref, atol=1e-5, rtol=1e-5)
  with pytest.raises(KeyError, match="stage9"):
    Adapters({"stage9": 4}).init(jax.random.key(0), taps)


def _resnet_backbone_params(backbone, width=1.0):
  """Independent count: conv k·k·cin·cout (no bias) + 2c per BN, for the imagenet stem."""
  ch = lambda b: max(8, round(b * width))
  blocks = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}[backbone]
  conv_bn = lambda k, cin, cout: k * k * cin * cout + 2 * cout
  total, cin = conv_bn(7, 3, ch(64)), ch(64)
  for stage, n in enumerate(blocks):
    mid = ch(64 * 2**stage)
    for j in range(n):
      if backbone == "resnet50":
        out = 4 * mid
        total += conv_bn(1, cin, mid) + conv_bn(3, mid, mid) + conv_bn(1, mid, out)
      else:
        out = mid
        total += conv_bn(3, cin, mid) + conv_bn(3, mid, mid)
      if j == 0 and (cin != out or stage > 0):
        total += conv_bn(1, cin, out)
      cin = out
  return total


def test_parameter_counts():
  rows = []
  for backbone in ("resnet18", "resnet34", "resnet50"):
    counts = {}
    for name, model in [("student", Student(19, backbone=backbone)),
                        ("teacher_intermediate", Teacher(19, 1, backbone=backbone)),
                        ("teacher_late", Teacher(19, 1, fusion="late", backbone=backbone))]:
      variables, _ = networks.abstract_init(model, (64, 64))
      counts[name] = models.count_params(variables["params"])
      if backbone == "resnet18":  # independent of the input size
        large, _ = networks.abstract_init(model, (96, 320))
        assert models.count_params(large["params"]) == counts[name], name
      if name == "student":
        assert models.count_params(variables["params"]["backbone"]) == _resnet_backbone_params(
            backbone)
    assert counts["teacher_late"] > counts["student"] and counts["teacher_intermediate"] > counts[
        "student"]
    rows.append((backbone, counts))
  # torchvision's published totals minus the 1000-way fc head (ResNet-18: 11 689 512 − 513 000).
  assert _resnet_backbone_params("resnet18") == 11_689_512 - 513_000
  assert _resnet_backbone_params("resnet50") == 25_557_032 - 2_049_000
  print("\nparameters at width 1.0, 19 classes, x_channels 1 (stem imagenet):")
  for backbone, counts in rows:
    print(f"  {backbone}: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
