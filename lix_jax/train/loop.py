"""The training and evaluation loops shared by teacher, student and distillation runs.

`train(config, workdir, role)` is the one loop: build data and networks, restore the newest good
checkpoint of `workdir` (resume) or initialise, run the jitted data-parallel step, log, evaluate,
checkpoint (keep-N + best by validation mIoU) and stop cleanly on SIGTERM/SIGINT after the current
step with a checkpoint. Roles: "teacher" (RGB + X, cross-entropy), "student" (RGB, cross-entropy)
and "distill" (RGB student distilled from the frozen teacher in `distill.teacher_workdir`).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lix_jax import config as config_lib
from lix_jax import data as data_lib
from lix_jax import export as export_lib
from lix_jax import losses
from lix_jax import models
from lix_jax.data import geometry, pipeline
from lix_jax.train import checkpoint as ckpt_lib
from lix_jax.train import metrics as metrics_lib
from lix_jax.train import reliability, sharding, state as state_lib, steps
from lix_jax.train.reliability import NonFiniteError, Preempted  # noqa: F401  (re-export)

ROLES = ("teacher", "student", "distill")


def class_names(config) -> tuple[str, ...]:
  return tuple(data_lib.BUILDERS[config.data.name].CLASS_NAMES)


def source(config, split: str):
  """The split's random-access source; on several processes, process 0 builds the files first."""
  get = functools.partial(data_lib.get_source, config.data.name, split,
                          data_dir=config.data.data_dir, manual_dir=config.data.root or None,
                          builder_config=config.data.builder_config or None)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    if jax.process_index() == 0:
      get()
    # Everybody waits until the ArrayRecord files exist (no concurrent writers on a shared disk).
    multihost_utils.sync_global_devices(f"lix_jax data {config.data.name} {split}")
  src = get()
  # Reading the first and last records finds truncated or garbled files now, with their names,
  # rather than as a reader error in a data thread at some later step.
  try:
    for i in sorted({0, len(src) - 1} if len(src) else set()):
      src[i]
  except Exception as e:  # noqa: BLE001  (any reader error means the same thing: broken files)
    info = getattr(src, "dataset_info", None)
    files = ([str(f) for f in info.splits[split].filepaths] if info is not None
             else [os.path.join(config.data.data_dir, config.data.name)])
    raise ValueError(f"{', '.join(files)}: split {split!r} of {config.data.name} cannot be read "
                     f"({type(e).__name__}: {e}); delete these files to rebuild them") from e
  return src


def build_networks(config, role: str, num_classes: int, *, bn_axis_name=None):
  """Returns (trained network, teacher or None, adapters or None) for `role`."""
  x_channels = geometry.MODALITIES[config.data.x_modality]
  teacher = models.build(config.teacher, num_classes=num_classes, x_channels=x_channels,
                         kind="teacher", bn_axis_name=None if role == "distill" else bn_axis_name)
  if role == "teacher":
    return teacher, None, None
  student = models.build(config.student, num_classes=num_classes, kind="student",
                         bn_axis_name=bn_axis_name)
  return student, (teacher if role == "distill" else None), None


def _dummy_inputs(config, batch: int = 1):
  h, w = config.data.crop_hw
  return (jnp.zeros((batch, h, w, 3), jnp.float32),
          jnp.zeros((batch, h, w, geometry.MODALITIES[config.data.x_modality]), jnp.float32))


def _adapters_for(config, student, teacher, student_vars, teacher_vars):
  """The ARFD adapters (1x1 convs) from the student's tap widths to the teacher's."""
  image, x = _dummy_inputs(config)
  _, s_taps = jax.eval_shape(functools.partial(student.apply, train=False), student_vars, image)
  _, t_taps = jax.eval_shape(functools.partial(teacher.apply, train=False), teacher_vars, image, x)
  taps = list(config.distill.taps)
  missing = [t for t in taps if t not in s_taps or t not in t_taps]
  if missing:
    raise KeyError(f"distill.taps {missing} do not exist. Available taps are: {sorted(s_taps)}")
  return models.networks.Adapters(out_channels={t: int(t_taps[t].shape[-1]) for t in taps}), s_taps


def init_state(config, role: str, model, *, teacher=None, teacher_vars=None, num_steps: int,
               pretrained: bool = True):
  """Initialises a host TrainState (and the adapters module for distillation).

  With `pretrained` and the role's `teacher.pretrained` / `student.pretrained` set (distill: the
  student's), the encoder(s) start from those ImageNet weights (`models.load_imagenet_encoders`).
  A resumed run restores its checkpoint over this state afterwards.
  """
  # The "rbg" PRNG only for initialisation: threefry initialisers take ~3x longer to compile on
  # CPU. The state's own rng (dropout-style randomness, if any) stays threefry.
  init_rng, adapter_rng = jax.random.split(jax.random.key(config.seed, impl="rbg"))
  state_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  image, x = _dummy_inputs(config)
  inputs = (image, x) if role == "teacher" else (image,)
  weights = ((config.teacher if role == "teacher" else config.student).get("pretrained", "")
             if pretrained else "")
  if weights:
    models.check_imagenet_fit(model, weights)  # A wrong path fails before the compile.
  variables = jax.jit(functools.partial(model.init, train=False))(init_rng, *inputs)
  if weights:
    variables = models.load_imagenet_encoders(model, variables, weights)
  params = variables["params"]
  adapters = None
  if role == "distill":
    params = {"student": params}
    spec = losses.get_method(config.distill.method)
    if spec.uses_adapters:
      adapters, s_taps = _adapters_for(config, model, teacher, variables, teacher_vars)
      feats = {t: jnp.zeros(s_taps[t].shape, s_taps[t].dtype) for t in config.distill.taps}
      params["adapters"] = jax.jit(adapters.init)(adapter_rng, feats)["params"]
  tx = state_lib.make_optimizer(config.optim, num_steps)
  state = state_lib.TrainState.create(params=params, batch_stats=variables.get("batch_stats", {}),
                                      tx=tx, rng=state_rng)
  return state, adapters


def model_variables(state, role: str) -> dict[str, Any]:
  params = state.params["student"] if role == "distill" else state.params
  return {"params": params, "batch_stats": state.batch_stats}


def restore_variables(config, workdir: str, role: str, model, *, teacher=None, teacher_vars=None):
  """Model variables of the newest good checkpoint of a `role` run in `workdir`, on the host."""
  # The checkpoint replaces every weight: no ImageNet file is read (it may be gone by now).
  state, _ = init_state(config, role, model, teacher=teacher, teacher_vars=teacher_vars, num_steps=1,
                        pretrained=False)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return model_variables(ckpt_lib.restore_state_only(os.path.join(workdir, "checkpoints"), abstract),
                         role)


def restore_teacher(config, teacher):
  """Loads the frozen teacher (newest good checkpoint of `distill.teacher_workdir`)."""
  workdir = config.distill.teacher_workdir
  if not workdir:
    raise ValueError("distill.teacher_workdir is empty: mode=distill needs a trained teacher "
                     "(train one with mode=train_teacher, or use mode=pipeline)")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    # Checked before the teacher is built (and compiled), so that a typo fails fast.
    raise FileNotFoundError(f"distill.teacher_workdir={workdir!r} has no checkpoints/ directory "
                            "(train the teacher there first with mode=train_teacher)")
  stored = reliability.stored_config(workdir)
  if stored is not None:
    config_lib.check_teacher(stored, config, where=f"distill.teacher_workdir={workdir}")
  return restore_variables(config, workdir, "teacher", teacher)


def check_has_depth(config, split: str = "train", num_examples: int = 4) -> None:
  """A teacher needs X: refuse datasets whose depth is missing (all 0), e.g. nuImages without maps."""
  src = source(config, split)
  if not any(np.any(src[i]["depth"] > 0) for i in range(min(num_examples, len(src)))):
    raise ValueError(f"data.name={config.data.name!r} split {split!r} has no depth (all-zero depth "
                     f"maps): a teacher needs X = {config.data.x_modality}. Add the dataset's depth "
                     "files (see its builder) or train a student only (mode=train_student).")


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    multihost_utils.sync_global_devices(name)


def prepare_workdir(config, workdir: str, role: str) -> None:
  """Refuses to resume a run of another config, or starts over when asked (DESIGN §6).

  The requested config is compared with the one stored in `workdir` (`config.json`, else the
  newest checkpoint's config item) before anything is built, moved or written: a change of a key
  that shapes the run raises `ConfigMismatchError` naming the keys (exit 2); keys that extend or
  observe a run (`config_lib.OBSERVE_KEYS`) may change. `train.restart=True` moves the old run to
  `previous_<time>/` instead (process 0; the others wait).
  """
  os.makedirs(workdir, exist_ok=True)
  if config.train.restart:
    if jax.process_index() == 0 and reliability.has_run(workdir):
      reliability.move_to_previous(workdir)
    _sync("lix_jax restart")
    return
  if not reliability.has_run(workdir):
    return
  stored = reliability.stored_config(workdir)
  if stored is None:
    stored = ckpt_lib.stored_config(os.path.join(workdir, "checkpoints"))
  if stored is not None:
    config_lib.check_same_run(stored, config, role, where=workdir)


def _per_host(global_size: int, name: str) -> int:
  if global_size % jax.process_count():
    raise ValueError(f"{name}={global_size} is not divisible by the {jax.process_count()} processes")
  return global_size // jax.process_count()


def make_train_iters(config, role: str) -> dict[str, Any]:
  """The labelled (and, for distillation with `distill.unlabeled_split`, unlabelled) iterators."""
  common = dict(x_modality=config.data.x_modality, crop_hw=tuple(config.data.crop_hw),
                scale_range=tuple(config.data.scale_range), flip=config.data.flip,
                num_threads=config.data.num_threads, num_workers=config.data.num_workers)
  iters = {"train": iter(pipeline.train_dataset(
      source(config, "train"), batch_size=_per_host(config.train.batch_size, "train.batch_size"),
      seed=config.seed, **common))}
  if role == "distill" and config.distill.unlabeled_split:
    iters["unlabeled"] = iter(pipeline.unlabeled_dataset(
        source(config, config.distill.unlabeled_split),
        batch_size=_per_host(config.distill.unlabeled_batch_size, "distill.unlabeled_batch_size"),
        seed=config.seed + 1, **common))
  return iters


def next_batch(iters) -> dict[str, np.ndarray]:
  """The step's batch: labelled `image`, `x`, `label`, `valid` (the crops' padding mask) and, with
  an unlabelled stream, `unlabeled_image`, `unlabeled_x`, `unlabeled_valid`."""
  batch = {k: v for k, v in next(iters["train"]).items() if k in ("image", "x", "label", "valid")}
  if "unlabeled" in iters:
    u = next(iters["unlabeled"])
    batch["unlabeled_image"], batch["unlabeled_x"] = u["image"], u["x"]
    batch["unlabeled_valid"] = u["valid"]
  return batch


def make_eval_fn(dp: sharding.DataParallel, model, role: str, num_classes: int):
  """The jitted data-parallel `(variables, batch) -> confusion matrix` of `model`."""
  return dp.wrap(functools.partial(steps.eval_step, model=model, uses_x=role == "teacher",
                                   num_classes=num_classes, axis_name=sharding.AXIS),
                 donate_argnums=())


def evaluate(config, dp: sharding.DataParallel, eval_fn, variables, split: str) -> dict[str, Any]:
  """Global confusion matrix over `split` (each example once, padding masked) -> metrics."""
  ds = pipeline.eval_dataset(source(config, split),
                             batch_size=_per_host(config.train.eval_batch_size, "train.eval_batch_size"),
                             x_modality=config.data.x_modality)
  num_classes = len(class_names(config))
  confmat = np.zeros((num_classes, num_classes), np.int64)
  for batch in ds:
    batch = {k: v for k, v in batch.items() if k in ("image", "x", "label", "valid")}
    confmat += dp.fetch(eval_fn(variables, dp.shard_batch(batch))).astype(np.int64)
  return metrics_lib.segmentation_metrics(confmat, class_names=class_names(config))


def _check_config(config, role: str):
  if role not in ROLES:
    raise KeyError(f"Unknown role {role!r}. Available roles are: {ROLES}")
  if config.data.x_modality not in geometry.MODALITIES:
    raise KeyError(f"Unknown data.x_modality {config.data.x_modality!r}. "
                   f"Available modalities are: {sorted(geometry.MODALITIES)}")
  if role == "distill":
    losses.get_method(config.distill.method)
  for name in ("train.batch_size", "train.eval_batch_size", "distill.unlabeled_batch_size"):
    value = config[name.split(".")[0]][name.split(".")[1]]
    if value % jax.device_count():
      raise ValueError(f"{name}={value} is not divisible by the {jax.device_count()} devices")


def train(config: ml_collections.ConfigDict, workdir: str, role: str,
          *, num_steps: int | None = None) -> dict[str, Any]:
  """Trains `role` in `workdir` (resuming from its newest good checkpoint) and evaluates it.

  Returns:
    {"validation": metrics, "test": metrics, "step": int}.

  Raises:
    Preempted: after SIGTERM/SIGINT, once the step is done and checkpointed.
    NonFiniteError: after `train.max_bad_steps` consecutive non-finite steps (skipped updates).
  """
  _check_config(config, role)
  num_steps = int(num_steps if num_steps is not None else config.train.num_steps)
  prepare_workdir(config, workdir, role)
  is_chief = jax.process_index() == 0
  names = class_names(config)
  num_classes = len(names)
  if role in ("teacher", "distill"):
    check_has_depth(config)
  dp = sharding.DataParallel(sharding.make_mesh(), config.parallel.backend)

  model, teacher, _ = build_networks(config, role, num_classes, bn_axis_name=sharding.AXIS)
  # Initialisation and restoring use networks without collectives (no bound axis outside steps).
  init_model, init_teacher, _ = build_networks(config, role, num_classes)
  teacher_vars = restore_teacher(config, init_teacher) if role == "distill" else None
  state, adapters = init_state(config, role, init_model, teacher=init_teacher,
                               teacher_vars=teacher_vars, num_steps=num_steps)

  iters = make_train_iters(config, role)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  checkpointer = ckpt_lib.Checkpointer(ckpt_dir, keep=config.train.keep_checkpoints)
  # Restored as global replicated arrays, the form saved: the same on one host or many.
  restored, start_step = checkpointer.restore_latest(dp.abstract(state), data_iters=iters)
  start_step = int(start_step or 0)
  if restored is not None:
    state = restored
    logging.info("Resumed %s from step %d of %s", role, start_step, workdir)
  newer_bad = [s for s, _ in checkpointer.skipped if s > start_step]
  if newer_bad:
    # Corrupt steps only (a changed config raised above): otherwise they would block the saves of
    # these steps (existing steps are kept).
    if is_chief:
      reliability.set_aside(ckpt_dir, newer_bad)
    _sync("lix_jax set aside bad checkpoints")
    checkpointer.close()
    checkpointer = ckpt_lib.Checkpointer(ckpt_dir, keep=config.train.keep_checkpoints)
  if is_chief:
    reliability.keep_log_until(os.path.join(workdir, "metrics.jsonl"), start_step)
    run_config = config.to_dict()
    run_config["train"]["num_steps"] = num_steps  # A pipeline's teacher runs its own length.
    reliability.write_config(workdir, run_config)

  uses_x = role == "teacher"
  if role == "distill":
    step_fn = dp.wrap(functools.partial(
        steps.distill_step, student=model, teacher=teacher, adapters=adapters,
        method=config.distill.method, distill_cfg=config.distill.to_dict(), axis_name=sharding.AXIS))
  else:
    step_fn = dp.wrap(functools.partial(steps.supervised_step, model=model, uses_x=uses_x,
                                        axis_name=sharding.AXIS))
  eval_fn = make_eval_fn(dp, model, role, num_classes)
  extra = (dp.replicate(teacher_vars),) if role == "distill" else ()
  schedule = state_lib.learning_rate_schedule(config.optim, num_steps)
  state = dp.replicate(state)

  def save(step, metrics=None, force=False):
    checkpointer.save(step, dp.unreplicate(state), data_iters=iters, config=config.to_dict(),
                      metrics=metrics, force=force)

  bad_steps = 0

  def check_finite(step, flags):
    """Counts consecutive skipped (non-finite) steps; raises after `train.max_bad_steps`."""
    nonlocal bad_steps
    flags = dp.fetch(flags)
    if not flags["nonfinite"]:
      bad_steps = 0
      return
    bad_steps += 1
    bad = [k.split("/", 1)[1] for k, v in flags.items() if k.startswith("nonfinite/") and v]
    bad = bad or ["gradient"]
    logging.warning("step %d: non-finite %s; update skipped (%d consecutive)", step, bad, bad_steps)
    if bad_steps >= config.train.max_bad_steps:
      raise NonFiniteError(
          f"non-finite {', '.join(bad)} at {bad_steps} consecutive steps up to step {step} "
          f"(train.max_bad_steps={config.train.max_bad_steps}); updates were skipped, the last "
          f"good checkpoint is in {ckpt_dir}")

  writer = metrics_lib.MetricWriter(workdir, is_chief=is_chief)
  val_metrics, pending = None, None
  batch_images = config.train.batch_size + (
      config.distill.unlabeled_batch_size if "unlabeled" in iters else 0)
  t_last, steps_since = time.perf_counter(), 0
  bar = metrics_lib.progress(num_steps, desc=f"{role} {os.path.basename(workdir)}",
                             initial=start_step, enabled=config.train.progress and is_chief)
  # Cluster logs (stderr not a terminal, so no bar): one line every `train.log_every` steps.
  log_lines = is_chief and not (config.train.progress and sys.stderr.isatty())
  t_start = time.perf_counter()
  try:
    with reliability.StopFlag() as stop:
      for step in range(start_step + 1, num_steps + 1):
        batch = dp.shard_batch(next_batch(iters))
        state, metrics = step_fn(state, batch, *extra)
        # The previous step's finiteness is read one step late, so the host never waits for the
        # device here (the dispatched step overlaps with the check).
        if pending is not None:
          check_finite(*pending)
        pending = (step, {k: v for k, v in metrics.items() if k.startswith("nonfinite")})
        stopping = stop.signal  # Read once: a signal arriving later is handled after the next step.
        steps_since += 1
        bar.update(1)
        if step % config.train.log_every == 0 or step == num_steps or stopping:
          metrics = dp.fetch(metrics)
          elapsed = time.perf_counter() - t_last
          scalars = {k: float(v) for k, v in metrics.items() if not k.startswith("nonfinite/")}
          scalars.update(learning_rate=float(schedule(step - 1)),
                         images_per_s=steps_since * batch_images / max(elapsed, 1e-9))
          writer.write_scalars(step, scalars)
          bar.set_postfix(loss=f"{scalars['loss']:.3f}", img_s=f"{scalars['images_per_s']:.0f}")
          if log_lines:
            logging.info("%s", progress_line(role, step, num_steps, scalars, start_step,
                                             time.perf_counter() - t_start))
          t_last, steps_since = time.perf_counter(), 0
        if step % config.train.eval_every == 0 or step == num_steps:
          val_metrics = evaluate(config, dp, eval_fn, model_variables(state, role),
                                 config.data.eval_split)
          writer.write_scalars(step, {f"eval/{k}": v for k, v in val_metrics.items()
                                      if np.ndim(v) == 0 and np.isfinite(v)})
          save(step, metrics={"miou": float(val_metrics["miou"])}, force=True)
        elif step % config.train.ckpt_every == 0:
          save(step)
        if stopping:
          save(step, force=True)
          checkpointer.wait_until_finished()
          logging.warning("Received %s: saved step %d in %s and stopped", stopping, step, ckpt_dir)
          raise Preempted(stopping, step, os.path.join(ckpt_dir, str(step)))
      if pending is not None:
        check_finite(*pending)
      bar.close()
      checkpointer.wait_until_finished()
      result = {"step": int(dp.fetch(state.step))}
      if val_metrics is None:  # Resumed at the last step (killed before this file was written).
        val_metrics = evaluate(config, dp, eval_fn, model_variables(state, role),
                               config.data.eval_split)
      result["validation"] = val_metrics
      result["test"] = evaluate(config, dp, eval_fn, model_variables(state, role),
                                config.data.test_split)
      if is_chief:
        # The deployable network (DESIGN §6 "Export"), before final_metrics.json marks the run
        # finished: a run killed in between re-exports when rerun.
        export_lib.export_run(config, workdir, role, dp.fetch(model_variables(state, role)))
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
          json.dump(result, f, indent=1, default=to_json)
      if stop.signal:
        # After the last step (saved with its evaluation): the run is complete, but a caller
        # such as the pipeline must not start the next run.
        raise Preempted(stop.signal, num_steps, os.path.join(ckpt_dir, str(num_steps)))
  finally:
    bar.close()
    writer.close()
    checkpointer.close()  # Waits for a save in flight: a finished save is never lost.
    iters.clear()  # Iterators alive at exit print noise (STACK_FACTS §2).
  return result


def progress_line(role: str, step: int, num_steps: int, scalars: dict[str, float],
                  start_step: int, elapsed_s: float) -> str:
  """`teacher step 50/800 (6 %) loss 1.2345 images/s 123 ETA 0:05:12` for logs without a bar; the
  ETA extrapolates this process's mean step time since it started (or resumed)."""
  done = max(step - start_step, 1)
  eta = int(round(elapsed_s / done * (num_steps - step)))
  loss = scalars.get("loss")
  loss_text = "nan" if loss is None or not np.isfinite(loss) else f"{loss:.4f}"
  return (f"{role} step {step}/{num_steps} ({100 * step // max(num_steps, 1)} %) loss {loss_text} "
          f"images/s {scalars.get('images_per_s', 0.0):.0f} "
          f"ETA {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}")


def to_json(value):
  """`json.dump` default for NumPy values."""
  if isinstance(value, (np.ndarray, np.generic)):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")
