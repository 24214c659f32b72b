"""Padding is never a target (issue 19 §2, DESIGN §5).

(a) The pipeline's pixel mask `valid` is False exactly on the padding of a scaled crop: where the
    normalised image and X are exactly 0 and the label is 255, and it follows the flip.
(b) A distillation step on crops that are up to half padding (the padding filled with garbage
    images, X and labels) gives exactly the loss terms of a NumPy reference that only ever sees the
    valid pixels, for every method, on labelled and unlabelled frames, at both feature taps.
(c) The same step over 8 devices, with unequal valid counts per device, equals 1 device.
(d) A train id outside [0, K) that is not 255 is an error naming the record and its split.

The networks are tiny fakes (1x1 convs, 2x2 average pooling for the half-resolution tap, as in
tests/test_distill_arithmetic.py), so the reference can be written from the DESIGN formulas over
per-image lists of valid pixels, with no mask anywhere in it.
"""
from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import fake_models

from lix_jax import losses
from lix_jax.config import base_config
from lix_jax.data import pipeline
from lix_jax.train import metrics as metrics_lib
from lix_jax.train import sharding, state as state_lib, steps

# --- (a), (d): the pipeline ----------------------------------------------------------------------

SH, SW = 20, 48  # source size
MEAN, STD = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)


def _example(i: int, num_classes: int = 4) -> dict:
  """image = (4·col, 4·row, 200): never the mean colour, so only padding normalises to 0."""
  row, col = np.mgrid[:SH, :SW]
  image = np.stack([4 * col, 4 * row, np.full_like(col, 200)], -1).astype(np.uint8)
  return {"image": image, "depth": (1 + row + col / 64).astype(np.float32),
          "label": ((row + col) % num_classes).astype(np.uint8),
          "intrinsics": np.array([50, 50, SW / 2, SH / 2], np.float32),
          "baseline": np.float32(0.5), "id": f"ex{i}".encode()}


def _train_batch(src, flip: bool, labeled: bool = True):
  it = iter(pipeline.train_dataset(src, batch_size=len(src), seed=3, x_modality="depth",
                                   crop_hw=(16, 40), scale_range=(0.4, 1.0), flip=flip, mean=MEAN,
                                   std=STD, labeled=labeled, shard_index=0, shard_count=1))
  return next(it)


def _is_rectangle(mask: np.ndarray) -> bool:
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  box = np.zeros_like(mask)
  box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
  return np.array_equal(mask, box)


@pytest.mark.parametrize("labeled", [True, False])
def test_pipeline_mask_is_false_exactly_on_padding_and_follows_the_flip(labeled):
  src = [_example(i) for i in range(8)]
  flipped, straight = _train_batch(src, True, labeled), _train_batch(src, False, labeled)
  n_flipped = 0
  for batch in (flipped, straight):
    valid = batch["valid"]
    assert valid.dtype == bool and valid.shape == batch["label"].shape == (8, 16, 40)
    assert (~valid).any() and valid.any()  # scales < 1 made padding
    np.testing.assert_array_equal(valid, np.any(batch["image"] != 0, -1))
    np.testing.assert_array_equal(valid, batch["x"][..., 0] != 0)  # depth has no holes here
    if labeled:
      np.testing.assert_array_equal(batch["label"] == 255, ~valid)  # CE never sees padding
    else:
      assert np.all(batch["label"] == 255)
    assert all(_is_rectangle(v) for v in valid)  # the scaled image, at its offset
  for b in range(8):
    # The same scale and offset were drawn; the flip mirrors image and mask together.
    col_f = flipped["image"][b, ..., 0] * STD[0] + MEAN[0]
    v_f, v_s = flipped["valid"][b], straight["valid"][b]
    row = np.flatnonzero(v_f.any(1))[0]
    cols = col_f[row][v_f[row]]
    if cols[0] > cols[-1]:  # decreasing source columns: this crop was mirrored
      n_flipped += 1
      np.testing.assert_array_equal(v_f, v_s[:, ::-1])
      np.testing.assert_array_equal(flipped["label"][b], straight["label"][b][:, ::-1])
    else:
      np.testing.assert_array_equal(v_f, v_s)
  assert 0 < n_flipped < 8
  assert not np.array_equal(flipped["valid"], straight["valid"])  # a mirrored offset shows


def test_eval_scores_original_pixels_only():
  bt = next(iter(pipeline.eval_dataset([_example(0)], batch_size=2, x_modality="depth",
                                       pad_hw=(24, 50), shard_index=0, shard_count=1)))
  assert bt["valid"].shape == (2,)  # eval masks rows; pad_hw pixels are labelled 255
  confmat = metrics_lib.confusion_matrix(np.zeros(bt["label"].shape, np.int32), bt["label"], 4,
                                         valid=bt["valid"])
  assert int(np.sum(confmat)) == SH * SW


def test_bad_train_id_names_the_record_and_split():
  src = [_example(i) for i in range(4)]
  src[2]["label"][5, 7] = 7  # K = 4
  with pytest.raises(ValueError, match=r"'ex2' of split 'train'.*\[7\].*\[0, 4\)"):
    next(iter(pipeline.train_dataset(src, batch_size=4, seed=0, x_modality="depth",
                                     crop_hw=(16, 40), num_classes=4, split="train",
                                     shard_index=0, shard_count=1)))

  class Source(list):  # K and the split from a tfds source's metadata
    split = "validation"
    dataset_info = types.SimpleNamespace(metadata={"class_names": ["a", "b", "c", "d"]})

  with pytest.raises(ValueError, match="'ex2' of split 'validation'"):
    list(pipeline.eval_dataset(Source(src), batch_size=2, x_modality="depth", shard_index=0,
                               shard_count=1))
  src[2]["label"][5, 7] = 255  # ignore is fine; unlabelled streams never read labels
  next(iter(pipeline.train_dataset(Source(src), batch_size=4, seed=0, x_modality="depth",
                                   crop_hw=(16, 40), shard_index=0, shard_count=1)))


# --- (b), (c): every loss on the valid pixels alone ----------------------------------------------

K = 4
H, W = 8, 12
N = 8  # labelled and unlabelled images each; one of each per device on 8 devices
TAPS = ("stage3", "decoder")
# (r0, r1, c0, c1) of each image's valid box (even bounds: the half-resolution tap sees the same
# box); most are about half padding, one has none, one is a 2x2 box (1 pixel at stage3, where
# CKA, needing 2 samples, does not count the image).
BOXES = [(0, 8, 0, 6), (0, 8, 6, 12), (2, 8, 2, 8), (0, 8, 0, 12), (0, 4, 0, 12), (4, 6, 4, 6),
         (2, 6, 0, 10), (0, 6, 4, 12)]
U_BOXES = [BOXES[(i + 3) % N] for i in range(N)]
# Every `distill` key at its default (lix_jax.config, the one place), then this test's values.
DISTILL_DEFAULTS = base_config().distill.to_dict()
CFG = dict(DISTILL_DEFAULTS, lambda_l=0.7, lambda_f=0.3, lambda_unlabeled=0.5, alpha=1.3, beta=0.6, temperature=2.0,
           controller="balanced_sym", kappa=2.0, class_balance=1.0, sigma=0.8, mix=0.4,
           lambda_kr=1.0, lambda_cka=0.5, kernel="linear", stride=1, taps=TAPS,
           tap_weights=(1.0, 0.5), pl_threshold=0.5, at_p=2, cwd_temperature=3.0)
METHODS = {"none": {}, "kd": {}, "dkd": {}, "dwld": {"controller": "dynamic"}, "lix": {},
           "cwd": {}, "fitnet": {}, "at": {}, "arfd": {}, "pseudo_label": {}}


def _masks(boxes):
  valid = np.zeros((len(boxes), H, W), bool)
  for b, (r0, r1, c0, c1) in enumerate(boxes):
    valid[b, r0:r1, c0:c1] = True
  return valid


def _batch():
  """Valid pixels as a pipeline gives them; padding filled with garbage (even label ids)."""
  rng = np.random.default_rng(0)
  valid, u_valid = _masks(BOXES), _masks(U_BOXES)
  garbage = lambda shape: 20.0 * rng.normal(size=shape)
  out = {}
  for prefix, mask in (("", valid), ("unlabeled_", u_valid)):
    for key, c in (("image", 3), ("x", 1)):
      out[prefix + key] = np.where(mask[..., None], rng.normal(size=(N, H, W, c)),
                                   garbage((N, H, W, c))).astype(np.float32)
    out[prefix + "valid"] = mask
  labels = rng.integers(0, K, (N, H, W)).astype(np.int32)
  ignore = np.zeros((N, H, W), bool)
  ignore[:, 1, 1:4] = ignore[:, 5, 7] = True
  labels[ignore & valid] = 255  # a few real ignore pixels inside the valid boxes
  out["label"] = labels  # NOT 255 on the padding: the step must mask it by `valid`
  return out


@functools.lru_cache(maxsize=None)
def _setup():
  return fake_models.distill_setup(fake_models.FakeStudent(K), fake_models.FakeTeacher(K),
                                   hw=(H, W), taps=TAPS,
                                   learning_rate=0.1)


@functools.lru_cache(maxsize=None)
def _run(method: str, num_devices: int | None):
  """(metrics, new params) of one distill step; None = unsharded (axis_name=None)."""
  student, teacher, adapters, t_vars, state = _setup()
  step = functools.partial(steps.distill_step, student=student, teacher=teacher,
                           adapters=adapters,
                           distill_loss=losses.make_distill_loss(method, dict(CFG, **METHODS[method])))
  if num_devices is None:
    new_state, metrics = jax.jit(functools.partial(step, axis_name=None))(state, _batch(), t_vars)
    return jax.tree.map(np.asarray, (metrics, new_state.params))
  dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:num_devices]))
  new_state, metrics = dp.wrap(step)(dp.replicate(state), dp.shard_batch(_batch()),
                                     dp.replicate(t_vars))
  return dp.fetch((metrics, new_state.params))


# The reference: DESIGN §2.1-§2.6 over lists (one entry per image) of valid pixels, float64.


def _lsm(z, axis=-1):
  z = z - z.max(axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis, keepdims=True))


def _dkd_terms(s, t, y, tau):
  onehot = y[:, None] == np.arange(K)
  p, q = np.exp(_lsm(t / tau)), np.exp(_lsm(s / tau))
  p_y, q_y = p[onehot], q[onehot]
  tcld = p_y * np.log(p_y / q_y) + (1 - p_y) * np.log((1 - p_y) / (1 - q_y))
  # The non-target distributions: the target logit masked out (-1e30: exp gives exactly 0).
  lp_hat, lq_hat = _lsm(np.where(onehot, -1e30, t / tau)), _lsm(np.where(onehot, -1e30, s / tau))
  ncld = np.sum(np.where(onehot, 0.0, np.exp(lp_hat) * (lp_hat - lq_hat)), -1)
  return tcld, ncld


def _ce(s, y):
  return np.mean(-_lsm(s)[np.arange(len(y)), y])


def _ref_logit(name, s_list, t_list, y_list, cfg):
  """L_L over the images' pixels whose target is not 255 (targets = labels or teacher arg-max)."""
  tau = cfg["temperature"]
  if name == "cwd":
    tau = cfg["cwd_temperature"]
    kls = []
    for s, t, y in zip(s_list, t_list, y_list):
      s, t = s[y != 255], t[y != 255]
      if len(s):
        lp, lq = _lsm(t / tau, 0), _lsm(s / tau, 0)  # softmax over the image's pixels
        kls.append(np.sum(np.exp(lp) * (lp - lq)))
    return tau**2 * np.sum(kls) / (K * len(kls))
  keep = np.concatenate(y_list) != 255
  s, t, y = (np.concatenate(v)[keep] for v in (s_list, t_list, y_list))
  if name == "kd":
    lp, lq = _lsm(t / tau), _lsm(s / tau)
    return tau**2 * np.mean(np.sum(np.exp(lp) * (lp - lq), -1))
  if name == "pseudo_label":
    confident = np.exp(_lsm(t)).max(-1) >= cfg["pl_threshold"]
    return _ce(s[confident], np.argmax(t, -1)[confident])
  tcld, ncld = _dkd_terms(s, t, y, tau)
  a, b = cfg["alpha"], cfg["beta"]
  if name == "dkd":
    return tau**2 * np.mean(a * tcld + b * ncld)
  rho = np.exp(_lsm(t))[np.arange(len(y)), y]
  prior = 1.0
  if cfg["controller"] == "balanced_sym":
    pred = np.argmax(s, -1)
    n = np.bincount(y, minlength=K) + np.bincount(pred, minlength=K)
    prior = np.minimum(n[y], n[pred]) ** -cfg["class_balance"]
  u_t = rho * np.exp(tcld / cfg["kappa"]) * prior
  u_n = np.exp(ncld / cfg["kappa"]) * prior
  return tau**2 * np.mean(a * u_t / u_t.mean() * tcld + b * u_n / u_n.mean() * ncld)


def _unit(v):
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-6)


def _linear_cka(a, t):
  ac, tc = a - a.mean(0), t - t.mean(0)
  fro2 = lambda x, z: np.sum((x.T @ z) ** 2)
  return fro2(ac, tc) / np.sqrt(fro2(ac, ac) * fro2(tc, tc))


def _ref_feature(name, a_list, t_list, cfg):
  """One tap's loss over the images' valid pixels (a: adapted student, t: teacher)."""
  if name == "fitnet":
    return np.mean(np.mean((np.concatenate(a_list) - np.concatenate(t_list)) ** 2, -1))
  if name == "at":
    att = lambda f: _unit(np.mean(np.abs(f) ** cfg["at_p"], -1))
    return np.mean([np.sum((att(a) - att(t)) ** 2) for a, t in zip(a_list, t_list)])
  errs, ckas = [], []
  for a, t in zip(a_list, t_list):  # ARFD: keys and queries are the image's valid pixels
    k = np.exp(-np.linalg.norm(_unit(a)[:, None] - _unit(t)[None], axis=-1) / cfg["sigma"])
    target = (1 - cfg["mix"]) * t + cfg["mix"] * (k @ t) / k.sum(-1, keepdims=True)
    errs.append(np.mean((a - target) ** 2, -1))
    if len(a) >= 2:
      ckas.append(_linear_cka(a, t))
  return (cfg["lambda_kr"] * np.mean(np.concatenate(errs))
          + cfg["lambda_cka"] * np.mean(1 - np.asarray(ckas)))


def _pixels(arr, boxes, factor=1):
  """Per image, the pixels of its valid box at 1/factor resolution: a list of [n_b, C]."""
  return [arr[b, r0 // factor:r1 // factor, c0 // factor:c1 // factor].reshape(-1, arr.shape[-1])
          for b, (r0, r1, c0, c1) in enumerate(boxes)]


def _reference(method):
  cfg = dict(CFG, **METHODS[method])
  spec = losses.get_method(method)
  student, teacher, adapters, t_vars, state = _setup()
  batch = _batch()
  images = np.concatenate([batch["image"], batch["unlabeled_image"]])
  xs = np.concatenate([batch["x"], batch["unlabeled_x"]])
  f64 = lambda tree: jax.tree.map(lambda v: np.asarray(v, np.float64), tree)
  t_logits, t_taps = f64(teacher.apply(t_vars, images, xs))
  s_vars = {"params": state.params["student"], "batch_stats": state.batch_stats}
  s_logits, s_taps = student.apply(s_vars, images)
  adapted = adapters.apply({"params": state.params["adapters"]}, s_taps)
  s_logits, s_taps, adapted = f64(s_logits), f64(s_taps), f64(adapted)
  boxes = BOXES + U_BOXES
  s_pix, t_pix = _pixels(s_logits, boxes), _pixels(t_logits, boxes)
  labels = [y[:, 0] for y in _pixels(batch["label"][..., None], BOXES)]
  teacher_argmax = [np.argmax(t, -1) for t in t_pix[N:]]
  terms = {"ce": _ce(np.concatenate(s_pix[:N])[np.concatenate(labels) != 255],
                     np.concatenate(labels)[np.concatenate(labels) != 255])}
  if spec.logit and spec.logit_on_labeled:
    terms["logit"] = _ref_logit(spec.logit, s_pix[:N], t_pix[:N], labels, cfg)
  if spec.logit:
    terms["logit_unlabeled"] = _ref_logit(spec.logit, s_pix[N:], t_pix[N:], teacher_argmax, cfg)
  if spec.feature:
    student_taps = adapted if spec.uses_adapters else s_taps
    terms["feature"] = sum(
        w * _ref_feature(spec.feature, _pixels(student_taps[tap], boxes, factor),
                         _pixels(t_taps[tap], boxes, factor), cfg)
        for tap, w, factor in zip(TAPS, cfg["tap_weights"], (2, 1)))
  total = terms["ce"] + cfg["lambda_l"] * (terms.get("logit", 0.0) + cfg["lambda_unlabeled"]
                                           * terms.get("logit_unlabeled", 0.0))
  return total + cfg["lambda_f"] * terms.get("feature", 0.0), terms


def test_fixture_has_unequal_padding_and_garbage_in_it():
  batch = _batch()
  counts = batch["valid"].sum((1, 2))
  assert len(set(counts.tolist())) > 4 and counts.min() > 0 and (counts < H * W).sum() >= 6
  assert np.abs(batch["image"][~batch["valid"]]).mean() > 5  # padding would show if read
  assert np.all(batch["label"][~batch["valid"]] != 255)
  assert 0 < np.sum(batch["label"] == 255) < 30


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_terms_equal_reference_on_valid_pixels(method):
  metrics, _ = _run(method, None)
  total, terms = _reference(method)
  reported = {k for k in ("ce", "logit", "logit_unlabeled", "feature") if k in metrics}
  assert reported == set(terms)
  for key, want in terms.items():
    np.testing.assert_allclose(metrics[key], want, rtol=2e-5, err_msg=key)
  np.testing.assert_allclose(metrics["loss"], total, rtol=2e-5)
  assert metrics["nonfinite"] == 0


@pytest.mark.parametrize("method", ["lix", "cwd", "at", "pseudo_label"])
def test_8_devices_with_unequal_valid_counts_equal_1_device(method):
  (m1, p1), (m8, p8) = _run(method, None), _run(method, 8)
  for key, value in m1.items():
    np.testing.assert_allclose(m8[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def test_supervised_step_and_distill_losses_mask_padding():
  student = fake_models.FakeStudent(K)
  batch = {k: v for k, v in _batch().items() if k in ("image", "x", "label", "valid")}
  s_vars = student.init(jax.random.key(2), jnp.zeros((1, H, W, 3)))
  tx = state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, schedule="constant", warmup_steps=0, momentum=0.0,
      weight_decay=0.0)), 1)
  state = state_lib.TrainState.create(params=s_vars["params"], batch_stats=s_vars["batch_stats"],
                                      tx=tx, rng=jax.random.key(4))
  _, metrics = jax.jit(functools.partial(steps.supervised_step, model=student, uses_x=False,
                                         axis_name=None))(state, batch)
  s_logits = np.asarray(student.apply(s_vars, batch["image"])[0], np.float64)
  labels = np.where(batch["valid"], batch["label"], 255)
  keep = labels != 255
  np.testing.assert_allclose(metrics["ce"], _ce(s_logits[keep], labels[keep]), rtol=2e-5)
  # distill_losses: garbage labels and features at the padding are masked, at the logits and taps.
  rng = np.random.default_rng(1)
  t_logits = rng.normal(size=s_logits.shape)
  feats, t_feats = rng.normal(size=(2, N, H, W, 3))
  cfg = dict(CFG, taps=("decoder",), tap_weights=(1.0,))
  got, _ = jax.jit(lambda s, t, y, f, tf, v: losses.distill_losses(
      "lix", student_logits=s, teacher_logits=t, labels=y, student_feats={"decoder": f},
      teacher_feats={"decoder": tf}, cfg=cfg, valid_mask=v))(
          s_logits.astype(np.float32), t_logits.astype(np.float32), batch["label"],
          feats.astype(np.float32), t_feats.astype(np.float32), batch["valid"])
  s_pix, t_pix = _pixels(s_logits, BOXES), _pixels(t_logits, BOXES)
  y_pix = [y[:, 0] for y in _pixels(batch["label"][..., None], BOXES)]
  np.testing.assert_allclose(got["logit"], _ref_logit("dwld", s_pix, t_pix, y_pix, cfg), rtol=2e-5)
  want = _ref_feature("arfd", _pixels(feats, BOXES), _pixels(t_feats, BOXES), cfg)
  np.testing.assert_allclose(got["feature"], want, rtol=2e-5)


def test_next_batch_passes_the_masks_to_the_step():
  from lix_jax.train import inputs  # noqa: PLC0415
  src = [_example(i) for i in range(2)]
  kw = dict(batch_size=2, x_modality="depth", crop_hw=(16, 40), scale_range=(0.4, 0.6),
            shard_index=0, shard_count=1)
  iters = {"train": iter(pipeline.train_dataset(src, seed=0, **kw)),
           "unlabeled": iter(pipeline.unlabeled_dataset(src, seed=1, **kw))}
  batch = inputs.next_batch(iters)
  assert set(batch) == {"image", "x", "label", "valid", "unlabeled_image", "unlabeled_x",
                        "unlabeled_valid"}
  for prefix in ("", "unlabeled_"):
    valid = batch[prefix + "valid"]
    assert valid.dtype == bool and valid.shape == (2, 16, 40) and not valid.all()
    np.testing.assert_array_equal(valid, np.any(batch[prefix + "image"] != 0, -1))
