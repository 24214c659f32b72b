"""The data-parallel steps: 8 devices == 1 device, shard_map == pmap (and each backend really
runs), non-finite guard."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lix_jax import losses, models
from lix_jax.config import base_config, with_overrides
from lix_jax.train import loop, sharding, state as state_lib, steps

NUM_CLASSES = 5
H, W = 32, 48
GLOBAL_BATCH = 8

TEACHER = ml_collections.ConfigDict(dict(backbone="resnet18", width=0.125, fusion="intermediate",
                                         fusion_block="gated", stem="deep", decoder_channels=8))
STUDENT = ml_collections.ConfigDict(dict(backbone="resnet18", width=0.125, stem="deep",
                                         decoder_channels=8))
OPTIM = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.05, schedule="cosine",
                                       warmup_steps=1, momentum=0.9, weight_decay=1e-4))
# Every `distill` key at its default (lix_jax.config, the one place), then this test's values.
DISTILL_DEFAULTS = base_config().distill.to_dict()
DISTILL = dict(DISTILL_DEFAULTS, method="lix", lambda_l=1.0, lambda_f=1.0, alpha=1.0, beta=1.0, temperature=2.0,
               controller="dynamic", kappa=2.0, sigma=1.0, mix=0.5, lambda_kr=1.0, lambda_cka=1.0,
               kernel="linear", stride=1, taps=("stage3", "decoder"), tap_weights=(1.0, 1.0),
               lambda_unlabeled=0.5)


def _batches(num_steps: int, *, unlabeled: bool, seed: int = 0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_steps):
    labels = rng.integers(0, NUM_CLASSES, (GLOBAL_BATCH, H, W)).astype(np.int32)
    # Different numbers of ignored pixels per image, so a mean of per-device means would differ.
    for i in range(GLOBAL_BATCH):
      labels[i, : 2 * i] = 255
    # Crop padding (right-hand columns; none in image 0), also unequal per image and device.
    valid = np.arange(W) < W - 4 * np.arange(GLOBAL_BATCH)[:, None, None]
    valid = np.broadcast_to(valid, labels.shape).copy()
    labels[~valid] = 255
    batch = {"image": rng.normal(size=(GLOBAL_BATCH, H, W, 3)).astype(np.float32),
             "x": rng.normal(size=(GLOBAL_BATCH, H, W, 1)).astype(np.float32), "label": labels,
             "valid": valid}
    if unlabeled:
      batch["unlabeled_image"] = rng.normal(size=(GLOBAL_BATCH, H, W, 3)).astype(np.float32)
      batch["unlabeled_x"] = rng.normal(size=(GLOBAL_BATCH, H, W, 1)).astype(np.float32)
      batch["unlabeled_valid"] = valid[::-1].copy()
    out.append(batch)
  return out


def _init(model, inputs, seed=0):
  variables = model.init(jax.random.key(seed), *inputs, train=False)
  return variables


def _run(step_fn, state, batches, dp, extra=()):
  state = dp.replicate(state)
  extra = tuple(dp.replicate(e) for e in extra)
  losses = []
  for batch in batches:
    state, metrics = step_fn(state, dp.shard_batch(batch), *extra)
    losses.append(float(dp.fetch(metrics)["loss"]))
  return np.asarray(losses), dp.fetch(state) if dp.backend == "shard_map" else jax.tree.map(
      lambda x: np.asarray(x)[0], state)


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


def _supervised_setup(kind: str):
  build = functools.partial(models.build, TEACHER if kind == "teacher" else STUDENT,
                            num_classes=NUM_CLASSES, x_channels=1, kind=kind)
  image, x = jnp.zeros((1, H, W, 3)), jnp.zeros((1, H, W, 1))
  variables = _init(build(), (image, x) if kind == "teacher" else (image,))
  state = state_lib.TrainState.create(params=variables["params"],
                                      batch_stats=variables["batch_stats"],
                                      tx=state_lib.make_optimizer(OPTIM, 3), rng=jax.random.key(1))
  return build, state


# The student here; the teacher's multi-device training is compared in test_multiprocess.py
# (2 processes x 2 devices == 1 x 4) and its forward in the distillation test below.
@pytest.mark.parametrize("kind", ["student"])
def test_supervised_step_8_devices_equals_1_device(kind):
  build, state = _supervised_setup(kind)
  batches = _batches(3, unlabeled=False)
  uses_x = kind == "teacher"
  one = sharding.DataParallel(sharding.make_mesh(jax.devices()[:1]))
  eight = sharding.DataParallel(sharding.make_mesh(jax.devices()[:8]))
  assert eight.num_devices == 8
  step_1 = one.wrap(functools.partial(steps.supervised_step, model=build(bn_axis_name="data"),
                                      uses_x=uses_x))
  step_8 = eight.wrap(functools.partial(steps.supervised_step, model=build(bn_axis_name="data"),
                                        uses_x=uses_x))
  losses_1, final_1 = _run(step_1, state, batches, one)
  losses_8, final_8 = _run(step_8, state, batches, eight)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  assert losses_1[2] != losses_1[0]  # The steps really trained.
  _assert_trees_close(final_8.params, final_1.params)
  _assert_trees_close(final_8.batch_stats, final_1.batch_stats)
  assert int(final_8.step) == 3


def test_student_step_pmap_equals_shard_map():
  build, state = _supervised_setup("student")
  batches = _batches(2, unlabeled=False, seed=3)
  results = {}
  for backend in sharding.BACKENDS:
    dp = sharding.DataParallel(sharding.make_mesh(), backend)
    step = dp.wrap(functools.partial(steps.supervised_step, model=build(bn_axis_name="data"),
                                     uses_x=False))
    results[backend] = _run(step, state, batches, dp)
  np.testing.assert_allclose(results["pmap"][0], results["shard_map"][0], rtol=1e-6)
  _assert_trees_close(results["pmap"][1].params, results["shard_map"][1].params)



def _axis_step(state, batch):
  """A per-shard step: the state plus the global batch sum, and this shard's device index."""
  return state + jax.lax.psum(batch.sum(), "data"), jax.lax.axis_index("data")


def test_pmap_backend_runs_one_program_per_device():
  """What only `jax.pmap` produces: a state replicated on a leading device axis, the batch split
  into [devices, per-device, ...], and outputs stacked per device (each its own axis index)."""
  dp = sharding.DataParallel(sharding.make_mesh(), "pmap")
  assert dp.backend == "pmap"
  state = dp.replicate(np.float32(1.0))
  batch = dp.shard_batch({"x": np.arange(16, dtype=np.float32)})["x"]
  assert state.shape == (8,) and batch.shape == (8, 2)
  state, index = dp.wrap(_axis_step)(state, batch)
  np.testing.assert_array_equal(np.asarray(index), np.arange(8))
  np.testing.assert_array_equal(np.asarray(state), np.full(8, 121.0))
  assert dp.fetch(state) == 121.0


def test_shard_map_is_the_default_backend():
  """`DataParallel` and the base config both default to jit(shard_map): one global program whose
  replicated outputs and state have no device axis, the batch stays global."""
  assert base_config().parallel.backend == "shard_map"
  dp = sharding.DataParallel(sharding.make_mesh())
  assert dp.backend == "shard_map"
  state = dp.replicate(np.float32(1.0))
  batch = dp.shard_batch({"x": np.arange(16, dtype=np.float32)})["x"]
  assert state.shape == () and batch.shape == (16,)
  assert batch.sharding.spec == jax.sharding.PartitionSpec("data")
  step = dp.wrap(_axis_step)
  state, index = step(state, batch)
  assert state.shape == index.shape == () and float(state) == 121.0


@pytest.mark.parametrize("backend", sharding.BACKENDS)
def test_trainer_builds_the_configured_backend(tmp_path, monkeypatch, backend):
  """`loop.train` hands `parallel.backend` to `DataParallel` (stopped before it initialises)."""
  class Built(Exception):
    pass

  def stop(task, dp, *args):
    raise Built(dp)

  monkeypatch.setattr(loop, "_restore", stop)
  config = with_overrides(base_config(), {"parallel.backend": backend})
  with pytest.raises(Built) as built:
    loop.train(config, str(tmp_path), "student")
  assert built.value.args[0].backend == backend

def _distill_setup():
  teacher = models.build(TEACHER, num_classes=NUM_CLASSES, x_channels=1, kind="teacher")
  student = functools.partial(models.build, STUDENT, num_classes=NUM_CLASSES, kind="student")
  image, x = jnp.zeros((1, H, W, 3)), jnp.zeros((1, H, W, 1))
  t_vars = _init(teacher, (image, x), seed=5)
  s_vars = _init(student(), (image,), seed=6)
  t_taps = jax.eval_shape(lambda v: teacher.apply(v, image, x, train=False)[1], t_vars)
  s_taps = jax.eval_shape(lambda v: student().apply(v, image, train=False)[1], s_vars)
  adapters = models.Adapters(out_channels={t: t_taps[t].shape[-1] for t in DISTILL["taps"]})
  a_params = adapters.init(jax.random.key(7), {t: jnp.zeros(s_taps[t].shape) for t in DISTILL["taps"]})
  state = state_lib.TrainState.create(
      params={"student": s_vars["params"], "adapters": a_params["params"]},
      batch_stats=s_vars["batch_stats"], tx=state_lib.make_optimizer(OPTIM, 3), rng=jax.random.key(1))
  return teacher, student, adapters, t_vars, state


def test_distill_step_with_unlabeled_frames_8_devices_equals_1_device():
  teacher, student, adapters, t_vars, state = _distill_setup()
  batches = _batches(3, unlabeled=True, seed=1)
  out = {}
  for n in (1, 8):
    dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:n]))
    step = dp.wrap(functools.partial(
        steps.distill_step, student=student(bn_axis_name="data"), teacher=teacher,
        adapters=adapters, distill_loss=losses.make_distill_loss("lix", DISTILL)))
    out[n] = _run(step, state, batches, dp, extra=(t_vars,))
  np.testing.assert_allclose(out[8][0], out[1][0], rtol=1e-5)
  _assert_trees_close(out[8][1].params, out[1][1].params)


def test_nonfinite_step_leaves_state_unchanged_and_names_the_term():
  build, state = _supervised_setup("student")
  batch = _batches(1, unlabeled=False)[0]
  batch["image"][0, 0, 0, 0] = np.nan
  dp = sharding.DataParallel(sharding.make_mesh())
  step = dp.wrap(functools.partial(steps.supervised_step, model=build(bn_axis_name="data"),
                                   uses_x=False))
  before = jax.tree.map(np.asarray, state)
  after, metrics = step(dp.replicate(state), dp.shard_batch(batch))
  metrics, after = dp.fetch(metrics), dp.fetch(after)
  assert metrics["nonfinite"] == 1 and metrics["nonfinite/ce"] == 1
  _assert_trees_close(after.params, before.params, rtol=0, atol=0)
  assert int(after.step) == 0
