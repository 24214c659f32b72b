"""Tests of lix_jax.train.metrics against NumPy computations written from the definitions."""
from __future__ import annotations

import glob
import io
import json
import math
import os
import struct

import jax
import numpy as np
import pytest
from PIL import Image

from lix_jax import plots
from lix_jax.train import metrics as M

K = 5


def _batch(seed=0, b=3, h=6, w=7):
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal((b, h, w, K)).astype(np.float32)
  labels = rng.integers(0, K, size=(b, h, w)).astype(np.int32)
  labels[rng.random((b, h, w)) < 0.2] = 255
  # Class 3 is absent from both ground truth and prediction; class 4 only in ground truth.
  logits[..., 3] = -100.0
  labels[labels == 3] = 0
  logits[..., 4] = -100.0
  labels[0, 0, :3] = 4
  valid = np.array([True, True, False])  # the last row is eval padding
  return logits, labels, valid


def _np_confmat(preds, labels, valid):
  cm = np.zeros((K, K), np.int64)
  for i in range(labels.shape[0]):
    if not valid[i]:
      continue
    for g, p in zip(labels[i].ravel(), preds[i].ravel()):
      if g != 255:
        cm[g, p] += 1
  return cm


def test_confusion_matrix_matches_numpy():
  logits, labels, valid = _batch()
  preds = logits.argmax(-1)
  fn = jax.jit(M.confusion_matrix, static_argnums=2)
  got = np.asarray(fn(logits, labels, K, valid=valid))
  assert got.dtype == np.int32 and got.shape == (K, K)
  np.testing.assert_array_equal(got, _np_confmat(preds, labels, valid))
  # Integer predictions and no `valid` mask: every row counts.
  got_all = np.asarray(M.confusion_matrix(preds, labels, K))
  np.testing.assert_array_equal(got_all, _np_confmat(preds, labels, [True] * 3))
  with pytest.raises(ValueError, match="valid"):
    M.confusion_matrix(preds, labels, K, valid=np.ones(2, bool))
  with pytest.raises(ValueError, match="classes"):
    M.confusion_matrix(logits, labels, K + 1)


def test_segmentation_metrics_matches_definitions():
  logits, labels, valid = _batch()
  cm = _np_confmat(logits.argmax(-1), labels, valid)
  names = ["road", "car", "sky", "absent", "gt_only"]
  out = M.segmentation_metrics(cm, class_names=names)
  ious, f1s = [], []
  for c in range(K):
    tp = cm[c, c]
    fp = cm[:, c].sum() - tp
    fn = cm[c, :].sum() - tp
    if tp + fp + fn == 0:
      assert math.isnan(out["iou"][c]) and math.isnan(out[f"iou/{names[c]}"])
      continue
    ious.append(tp / (tp + fp + fn))
    f1s.append(2 * tp / (2 * tp + fp + fn))
    assert out[f"iou/{names[c]}"] == pytest.approx(ious[-1])
  assert math.isnan(out["iou"][3])  # absent from both: excluded from the mean
  assert out["iou"][4] == 0.0        # in ground truth only: counts as 0
  assert len(ious) == K - 1
  assert out["miou"] == pytest.approx(np.mean(ious))
  assert out["fscore"] == pytest.approx(np.mean(f1s))
  assert out["pixel_acc"] == pytest.approx(np.trace(cm) / cm.sum())
  np.testing.assert_array_equal(out["confusion"], cm)  # Kept for results files (which pairs).
  assert out["confusion"].dtype == np.int64
  empty = M.segmentation_metrics(np.zeros((3, 3)))
  assert math.isnan(empty["miou"]) and math.isnan(empty["pixel_acc"])
  with pytest.raises(ValueError, match="class_names"):
    M.segmentation_metrics(cm, class_names=["a"])


def _read_events(path):
  """TFRecord frames: u64 length, u32 crc, payload, u32 crc (STACK_FACTS §5)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  events = []
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      payload = f.read(length)
      f.read(4)
      ev = event_pb2.Event()
      ev.ParseFromString(payload)
      events.append(ev)
  return events


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  img = np.zeros((4, 6, 3), np.uint8)
  img[1, 2] = (255, 0, 0)
  with M.MetricWriter(tmp_path) as w:
    w.write_scalars(1, {"train/loss": np.float32(2.5), "train/lr": 0.1})
    w.write_scalars(2, {"train/loss": 1.25, "eval/miou": float("nan")})
    w.write_images(2, {"eval/grid": img})
    with pytest.raises(ValueError, match="iou"):
      w.write_scalars(3, {"iou": np.ones(3)})
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert rows == [{"step": 1, "train/loss": 2.5, "train/lr": 0.1},
                  {"step": 2, "train/loss": 1.25, "eval/miou": None}]
  assert math.isnan(plots.read_jsonl(tmp_path / "metrics.jsonl")[1]["eval/miou"])

  files = glob.glob(os.path.join(tmp_path, "tb", "events.out.tfevents.*"))
  assert len(files) == 1
  scalars, images = {}, {}
  for ev in _read_events(files[0]):
    for v in ev.summary.value:
      if v.HasField("image"):
        images[(ev.step, v.tag)] = np.asarray(Image.open(io.BytesIO(v.image.encoded_image_string)))
      else:
        scalars[(ev.step, v.tag)] = v.simple_value
  assert scalars[(1, "train/loss")] == 2.5
  assert scalars[(1, "train/lr")] == pytest.approx(0.1)
  assert scalars[(2, "train/loss")] == 1.25
  assert math.isnan(scalars[(2, "eval/miou")])
  np.testing.assert_array_equal(images[(2, "eval/grid")], img)


def test_metric_writer_non_chief_writes_nothing(tmp_path):
  with M.MetricWriter(tmp_path / "w", is_chief=False) as w:
    w.write_scalars(1, {"loss": 1.0})
    w.write_images(1, {"x": np.zeros((2, 2, 3), np.uint8)})
    w.flush()
  assert not os.path.exists(tmp_path / "w")


def test_progress_postfix_and_disabling():
  buf = io.StringIO()  # not a TTY: disabled unless forced
  quiet = M.progress(3, "train", file=buf)
  quiet.update(1, loss=1.0)
  quiet.close()
  assert buf.getvalue() == ""
  assert list(M.progress(range(4), "eval", file=buf)) == [0, 1, 2, 3]
  assert list(M.progress(range(2), "eval", file=buf, force=True, is_chief=False)) == [0, 1]
  assert list(M.progress(range(2), "eval", file=buf, force=True, enabled=False)) == [0, 1]
  assert buf.getvalue() == ""
  with M.progress(5, "train", batch_size=8, file=buf, force=True) as bar:
    for _ in range(5):
      bar.update(1, loss=0.123456)
  text = buf.getvalue()
  assert "train" in text and "loss=0.1235" in text and "img/s=" in text and "5/5" in text
  buf2 = io.StringIO()
  with M.progress(4, "distill", initial=2, file=buf2, force=True) as bar:
    bar.update(1)
    bar.set_postfix(loss="0.500", img_s="12")
    bar.update(1)
  assert "4/4" in buf2.getvalue() and "loss=0.500, img_s=12" in buf2.getvalue()
