"""The training loop: one run of one role, from a config to a finished, evaluated workdir.

`train(config, workdir, role)` in three parts: build (the `Task`: networks, losses, steps), restore
(the newest good checkpoint of `workdir`, or a fresh initialisation) and run (the jitted
data-parallel step, compiled once before the loop with its memory logged, as MaxText does; logging,
evaluation, checkpoints (keep-N + best by validation mIoU) and a clean stop on SIGTERM/SIGINT after
the current step with a checkpoint). `evaluate` / `run_eval` score a network on a split.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from lix_jax import config as config_lib
from lix_jax.data import pipeline
from lix_jax.train import checkpoint as ckpt_lib
from lix_jax.train import inputs
from lix_jax.train import metrics as metrics_lib
from lix_jax.train import reliability, sharding, state as state_lib
from lix_jax.train.reliability import NonFiniteError, Preempted
from lix_jax.train.task import Task, check_config


def train(config: ml_collections.ConfigDict, workdir: str, role: str,
          *, num_steps: int | None = None,
          finish: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
  """Trains `role` in `workdir` (resuming from its newest good checkpoint) and evaluates it.

  `finish`, if given, is called on process 0 with the trained network's host variables after the
  last evaluation and before `final_metrics.json` marks the run finished (the experiments export
  the deployable network there; a run killed in between calls it again when rerun).

  Returns:
    {"validation": metrics, "test": metrics, "step": int}.

  Raises:
    Preempted: after SIGTERM/SIGINT, once the step is done and checkpointed.
    NonFiniteError: after `train.max_bad_steps` consecutive non-finite steps (skipped updates).
  """
  check_config(config, role)
  num_steps = int(num_steps if num_steps is not None else config.train.num_steps)
  prepare_workdir(config, workdir, role)
  if role in ("teacher", "distill"):
    inputs.check_has_depth(config)
  task = Task.build(config, role, bn_axis_name=sharding.AXIS)
  dp = sharding.DataParallel(sharding.make_mesh(), config.parallel.backend)
  run = _restore(task, dp, workdir, num_steps)
  return _run(task, dp, run, workdir, num_steps, finish)


@dataclasses.dataclass
class _Run:
  """What `_restore` hands to `_run`: the state to continue from and what feeds and saves it."""
  state: Any  # Host TrainState (restored: global replicated arrays).
  adapters: Any
  teacher_vars: Any
  iters: dict[str, Any]
  checkpointer: ckpt_lib.Checkpointer
  start_step: int


def _restore(task: Task, dp: sharding.DataParallel, workdir: str, num_steps: int) -> _Run:
  """Initialises the state, restores the newest good checkpoint over it (and the data iterators'
  positions), sets corrupt newer steps aside and records the run's config."""
  config, is_chief = task.config, jax.process_index() == 0
  teacher_vars = task.restore_teacher() if task.role == "distill" else None
  state, adapters = task.init_state(num_steps=num_steps, teacher_vars=teacher_vars)
  iters = inputs.make_train_iters(config, task.role)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  checkpointer = ckpt_lib.Checkpointer(ckpt_dir, keep=config.train.keep_checkpoints)
  # Restored as global replicated arrays, the form saved: the same on one host or many.
  restored, start_step = checkpointer.restore_latest(dp.abstract(state), data_iters=iters)
  start_step = int(start_step or 0)
  if restored is not None:
    state = restored
    logging.info("Resumed %s from step %d of %s", task.role, start_step, workdir)
  newer_bad = [s for s, _ in checkpointer.skipped if s > start_step]
  if newer_bad:
    # Corrupt steps only (a changed config raised before): otherwise they would block the saves of
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
  return _Run(state, adapters, teacher_vars, iters, checkpointer, start_step)


def compile_step(step_fn, *args, name: str = "step"):
  """`step_fn` lowered and compiled for `args` before the loop runs, its memory logged (per device:
  arguments, outputs, temporaries), so a run that will not fit says so before its first step."""
  compiled = step_fn.lower(*args).compile()
  memory = compiled.memory_analysis()
  if memory is not None:
    mib = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
    logging.info("%s memory per device: arguments %s, outputs %s, temporaries %s, code %s", name,
                 mib(memory.argument_size_in_bytes), mib(memory.output_size_in_bytes),
                 mib(memory.temp_size_in_bytes), mib(memory.generated_code_size_in_bytes))
  return compiled


def _run(task: Task, dp: sharding.DataParallel, run: _Run, workdir: str, num_steps: int,
         finish: Callable[[dict[str, Any]], Any] | None) -> dict[str, Any]:
  """The step loop from `run.start_step` to `num_steps`, then the final evaluations."""
  config, role, iters, checkpointer = task.config, task.role, run.iters, run.checkpointer
  start_step, is_chief = run.start_step, jax.process_index() == 0
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step_fn = dp.wrap(task.train_step(run.adapters, axis_name=sharding.AXIS))
  eval_fn = make_eval_fn(dp, task)
  extra = (dp.replicate(run.teacher_vars),) if role == "distill" else ()
  schedule = state_lib.learning_rate_schedule(config.optim, num_steps)
  state = dp.replicate(run.state)

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
  first_batch = None
  try:
    # Compiled once, before the loop (the first batch gives the shapes). Not with pmap: across
    # processes its AOT executable expects global shapes and is called with per-process ones, so
    # pmap compiles on its first call, as before.
    if start_step < num_steps and dp.backend != "pmap":
      first_batch = dp.shard_batch(inputs.next_batch(iters))
      step_fn = compile_step(step_fn, state, first_batch, *extra, name=f"{role} step")
    t_start = t_last = time.perf_counter()
    with reliability.StopFlag() as stop:
      for step in range(start_step + 1, num_steps + 1):
        batch = first_batch if first_batch is not None else dp.shard_batch(inputs.next_batch(iters))
        first_batch = None
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
          val_metrics = evaluate(config, dp, eval_fn, task.variables(state),
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
      if num_steps == 0 and checkpointer.latest_step() is None:
        # A zero-step run (initialise, e.g. from ImageNet weights; evaluate; export) still leaves
        # its state, so that it can teach or be resumed like any finished run (once: a re-run
        # resumes from it like any other).
        val_metrics = evaluate(config, dp, eval_fn, task.variables(state), config.data.eval_split)
        save(0, metrics={"miou": float(val_metrics["miou"])}, force=True)
      bar.close()
      checkpointer.wait_until_finished()
      result = {"step": int(dp.fetch(state.step))}
      if val_metrics is None:  # Resumed at the last step (killed before this file was written).
        val_metrics = evaluate(config, dp, eval_fn, task.variables(state),
                               config.data.eval_split)
      result["validation"] = val_metrics
      result["test"] = evaluate(config, dp, eval_fn, task.variables(state),
                                config.data.test_split)
      if is_chief:
        if finish is not None:
          finish(dp.fetch(task.variables(state)))
        # Atomic: this file marks the run finished (a half-written one would be a broken run).
        reliability.write_json(os.path.join(workdir, "final_metrics.json"), result)
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


def make_eval_fn(dp: sharding.DataParallel, task: Task):
  """The jitted data-parallel `(variables, batch) -> confusion matrix` of the task's network."""
  return dp.wrap(task.eval_step(axis_name=sharding.AXIS), donate_argnums=())


def evaluate(config, dp: sharding.DataParallel, eval_fn, variables, split: str) -> dict[str, Any]:
  """Global confusion matrix over `split` (each example once, padding masked) -> metrics."""
  ds = pipeline.eval_dataset(inputs.source(config, split),
                             batch_size=inputs.per_host(config.train.eval_batch_size, "train.eval_batch_size"),
                             x_modality=config.data.x_modality)
  num_classes = len(inputs.class_names(config))
  confmat = np.zeros((num_classes, num_classes), np.int64)
  for batch in ds:
    batch = {k: v for k, v in batch.items() if k in ("image", "x", "label", "valid")}
    confmat += dp.fetch(eval_fn(variables, dp.shard_batch(batch))).astype(np.int64)
  return metrics_lib.segmentation_metrics(confmat, class_names=inputs.class_names(config))


def run_eval(config, workdir: str, role: str, split: str | None = None) -> dict[str, Any]:
  """Evaluates the newest good checkpoint of `workdir` on `split` (default: the test split) and
  writes the metrics, confusion matrix included, to `<workdir>/eval_<split>.json`."""
  split = split or config.data.test_split
  task = Task.build(config, role, bn_axis_name=sharding.AXIS)
  variables = task.load_run(workdir)
  dp = sharding.DataParallel(sharding.make_mesh(), config.parallel.backend)
  metrics = evaluate(config, dp, make_eval_fn(dp, task), dp.replicate(variables), split)
  if jax.process_index() == 0:
    reliability.write_json(os.path.join(workdir, f"eval_{split}.json"),
                           {"role": role, "split": split, **metrics})
  return metrics


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


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    multihost_utils.sync_global_devices(name)


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

