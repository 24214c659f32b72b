"""ONNX conversion of the networks (issue 34): random-weight Student and Teacher converted with
jax2onnx and run by onnxruntime, against `model.apply` on the normalised image.

Guards the model code: a change that breaks the conversion (or makes the ONNX graph compute
something else) fails here, within seconds, without a training run. The KITTI-size test converts
the student of the shipped real configs (`configs/kitti_semantics.py`).
"""
from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
import pytest

from lix_jax import models
from lix_jax.data import geometry, pipeline
from lix_jax.experiments import export, onnx_export
from lix_jax.models import networks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"backbone": "resnet18", "width": 0.125, "stem": "deep", "decoder_channels": 8}


def _variables(model, hw, seed=0):
  """Random weights, with BN statistics, scales and biases away from 0 / 1 too, so that a layout
  mix-up of any per-channel vector shows."""
  rng = np.random.default_rng(seed + 1)
  variables = networks.random_variables(model, hw, seed)

  def perturb(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return leaf * rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    if name in ("bias", "mean"):
      return leaf + rng.normal(0, 0.3, leaf.shape).astype(np.float32)
    return leaf

  return jax.tree_util.tree_map_with_path(perturb, variables)


def _normalise(image):
  return ((image.astype(np.float32) - np.asarray(pipeline.IMAGENET_MEAN, np.float32))
          * (1 / np.asarray(pipeline.IMAGENET_STD, np.float32)))


def _convert(kind, section, hw, num_classes=5):
  model = models.build(dict(section, dtype="float32"), num_classes=num_classes, x_channels=1,
                       kind=kind)
  variables = _variables(model, hw)
  x_modality = "depth" if kind == "teacher" else None
  fn = export.deployable_fn(model, variables, mean=pipeline.IMAGENET_MEAN,
                            std=pipeline.IMAGENET_STD, x_modality=x_modality)
  proto = onnx_export.convert(fn, export.input_specs(1 if x_modality else None))
  session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                         providers=list(onnx_export.PROVIDERS))
  return model, variables, proto, session


def _assert_close(got, ref):
  # float32 sums in another order: 1e-4 of the logits' range (a layout mix-up is O(1) of it).
  np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=0)


def _dims(value_info):
  return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_student_converts_and_onnxruntime_equals_model_apply():
  model, variables, proto, session = _convert("student", TINY, (64, 96))
  onnx.checker.check_model(proto)
  onnx.shape_inference.infer_shapes(proto, strict_mode=True)
  assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
  (image,), (labels, logits) = proto.graph.input, proto.graph.output
  assert (image.name, labels.name, logits.name) == ("image", "labels", "logits")
  assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
  assert labels.type.tensor_type.elem_type == onnx.TensorProto.INT32
  assert logits.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
  assert _dims(image) == ["b", "32*h", "32*w", 3] and _dims(logits)[-1] == 5
  apply = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
  for n, hw in ((1, (64, 96)), (3, (96, 128))):  # dynamic batch, H and W
    img = np.random.default_rng(n).integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    got_labels, got_logits = session.run(["labels", "logits"], {"image": img})
    ref = np.asarray(apply(_normalise(img)))
    assert got_labels.dtype == np.int32 and got_logits.shape == ref.shape
    _assert_close(got_logits, ref)
    assert (got_labels == ref.argmax(-1)).mean() >= 0.999


def test_teacher_with_gated_fusion_converts_and_takes_raw_x():
  section = dict(TINY, fusion="intermediate", fusion_block="gated")
  model, variables, proto, session = _convert("teacher", section, (64, 96))
  assert [i.name for i in proto.graph.input] == ["image", "x"]
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
  depth = rng.uniform(0, 60, (2, 64, 96, 1)).astype(np.float32)
  depth[:, :8] = 0  # missing
  ref = np.asarray(model.apply(variables, _normalise(img), geometry.normalize_x(depth, "depth"),
                               train=False)[0])
  got_labels, got_logits = session.run(None, {"image": img, "x": depth})
  _assert_close(got_logits, ref)
  assert (got_labels == ref.argmax(-1)).mean() >= 0.999


def test_max_pool_replay_equals_the_nhwc_max_pool():
  # The stem's max-pool is replayed on [B*C, H, W] (onnxruntime has no 4-D MaxPool); against an
  # independent NumPy 3x3 / 2 max-pool with padding 1.
  x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
  params = {"window_dimensions": (1, 3, 3, 1), "window_strides": (1, 2, 2, 1),
            "padding": ((0, 0), (1, 1), (1, 1), (0, 0))}
  got = np.asarray(onnx_export._max_pool_3d(jnp.asarray(x), params))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  want = np.stack([np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max((1, 2))
                             for j in range(6)], 1) for i in range(4)], 1)
  np.testing.assert_array_equal(got, want)


def test_onnx_artifact_names_bad_input(tmp_path):
  artifact = export.OnnxArtifact(session=None, meta={"stride": 32, "kind": "teacher",
                                                     "x_modality": "depth"})
  with pytest.raises(ValueError, match=r"uint8 \[B, H, W, 3\], got float32"):
    artifact(np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"\(40, 32\): H and W must be multiples of 32"):
    artifact(np.zeros((1, 40, 32, 3), np.uint8))
  with pytest.raises(ValueError, match=r"teacher also takes x \(depth\)"):
    artifact(np.zeros((1, 32, 32, 3), np.uint8))
  with pytest.raises(FileNotFoundError, match="meta.json"):
    export.load(str(tmp_path / "student.onnx"))


def test_kitti_config_student_converts_at_native_size():
  # configs/kitti_semantics.py's student (ResNet-18 x1.0, ImageNet stem) at KITTI's 375x1242,
  # padded to 384x1248; random weights, batch 1.
  spec = importlib.util.spec_from_file_location("kitti", os.path.join(REPO, "configs",
                                                                      "kitti_semantics.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  section = module.get_config().student.to_dict()
  assert (section["backbone"], section["width"], section["stem"]) == ("resnet18", 1.0, "imagenet")
  section.pop("pretrained", None)
  hw = (384, 1248)
  model, variables, _, session = _convert("student", section, hw, num_classes=19)
  img = np.random.default_rng(0).integers(0, 256, (1, *hw, 3), dtype=np.uint8)
  got_labels, got_logits = session.run(None, {"image": img})
  ref = np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False)[0])(_normalise(img)))
  assert got_logits.shape == (1, *hw, 19)
  _assert_close(got_logits, ref)
  assert (got_labels == ref.argmax(-1)).mean() >= 0.999
