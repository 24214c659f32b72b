"""Checkpoints: orbax `CheckpointManager` with data-iterator state, config and a checksum.

One orbax step `<directory>/<step>/` holds these items:
  state        the train-state pytree (`StandardSave`, OCDBT);
  data_<name>  one per grain iterator, with grain's own handler, which writes
               `process_<i>-of-<n>.json` so each host gets its own position back (JSON items keep
               only process 0's value — STACK_FACTS §3);
  config       the run's config as JSON;
  checksum     `{"sha256", "num_leaves", "unhashed_leaves"}` over the state's leaves;
  metrics      orbax's own item, written when `save(..., metrics=...)` is given.

Retention: the latest `keep` steps AND the `keep_best` steps with the highest `miou` are kept
(`AnyPreservationPolicy([LatestN, BestN])`; `max_to_keep` with `best_fn` alone would keep only the
best ones). Steps saved without metrics, or whose metrics lack a finite `miou`, rank as -inf and
are kept only while they are among the latest.

Resume (`restore_latest`) tries the steps newest first and takes the first one that restores and
whose checksum matches. Only corruption is skipped: a step whose saved state has another structure
or shape than the requested one (a changed config) raises `StateMismatchError` before anything is
moved. Corruption is what remains: orbax does not notice a truncated file until restore, nor a
flipped bit in an OCDBT data file at all (it restores wrong values silently). Every skipped step
is logged with its reason and listed in `Checkpointer.skipped`. Interrupted saves
(`<step>.orbax-checkpoint-tmp`) are never listed by orbax and are removed at start-up.

The checksum, the structure check and their errors (`ChecksumError`, `StateMismatchError`) are in
`ckpt_checks`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from lix_jax.train import ckpt_checks

log = logging.getLogger(__name__)

STATE_ITEM = "state"
CONFIG_ITEM = "config"
CHECKSUM_ITEM = "checksum"
DATA_PREFIX = "data_"


# --------------------------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------------------------
def _metric_fn(name: str) -> Callable[[Mapping[str, Any]], float]:
  """Ranking key for BestN / best_fn: metrics[name], or -inf when missing or not finite."""

  def fn(metrics: Mapping[str, Any]) -> float:
    try:
      value = float(metrics[name])
    except (KeyError, TypeError, ValueError):
      return -math.inf
    return value if math.isfinite(value) else -math.inf

  return fn


def _data_item(name: str) -> str:
  return name if name.startswith(DATA_PREFIX) else DATA_PREFIX + name


def _jsonable(tree: Any) -> Any:
  """A JSON-safe deep copy (the JSON item is written later, in a background thread)."""
  if hasattr(tree, "to_dict"):  # ml_collections.ConfigDict
    tree = tree.to_dict()

  def default(o):
    if isinstance(o, np.generic):
      return o.item()
    if isinstance(o, np.ndarray):
      return o.tolist()
    return str(o)

  return json.loads(json.dumps(tree, default=default))


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Keeps the scalar entries (per-class arrays such as `iou` are dropped)."""
  return {str(k): float(v) for k, v in metrics.items()
          if np.ndim(v) == 0 and isinstance(np.asarray(v).item(), (int, float))}


class _DropMissingMetricsWarning(logging.Filter):
  """orbax warns on every save without metrics when best_fn is set; we do that on purpose."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in record.getMessage()


@contextlib.contextmanager
def _quiet_missing_metrics():
  logger, flt = logging.getLogger("absl"), _DropMissingMetricsWarning()
  logger.addFilter(flt)
  try:
    yield
  finally:
    logger.removeFilter(flt)


def _all_processes(ok: bool) -> bool:
  """True when `ok` on every process (so all hosts take the same step or skip it together)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
  return bool(np.all(flags))


def _restore_step(mngr: ocp.CheckpointManager, step: int, abstract_state: Any,
                  data_iters: Mapping[str, Any] | None, verify: bool) -> Any:
  """Restores one step (data iterators in place) and verifies its checksum; raises on failure."""
  items: dict[str, Any] = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
  if verify:
    items[CHECKSUM_ITEM] = ocp.args.JsonRestore()
  for name, it in (data_iters or {}).items():
    items[_data_item(name)] = grain.checkpoint.CheckpointRestore(it)
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  state = restored[STATE_ITEM]
  if verify:
    ckpt_checks.verify_checksum(restored[CHECKSUM_ITEM], state)
  return state


def _restore_newest_good(mngr: ocp.CheckpointManager, steps: list[int], abstract_state: Any,
                         data_iters: Mapping[str, Any] | None, verify: bool,
                         where: str) -> tuple[Any, int | None, list[tuple[int, str]]]:
  """Tries `steps` in the given order; returns (state, step, skipped) or (None, None, skipped)."""
  skipped: list[tuple[int, str]] = []
  saved_positions = {k: it.get_state() for k, it in (data_iters or {}).items()}
  for step in steps:
    # A config change, never "corruption".
    ckpt_checks.check_structure(os.path.join(os.fspath(mngr.directory), str(step), STATE_ITEM),
                                abstract_state, step=step, where=where)
    try:
      state = _restore_step(mngr, step, abstract_state, data_iters, verify)
      reason = None
    except Exception as e:  # pylint: disable=broad-except  # Any failure means: try older.
      state, reason = None, f"{type(e).__name__}: {str(e)[:300]}"
    if not _all_processes(reason is None):
      reason = reason or "failed to restore on another process"
    if reason is None:
      return state, step, skipped
    log.warning("Checkpoint step %d in %s skipped: %s", step, where, reason)
    skipped.append((step, reason))
  # Nothing restored: put the iterators back where they were.
  for k, it in (data_iters or {}).items():
    it.set_state(saved_positions[k])
  return None, None, skipped


# --------------------------------------------------------------------------------------------
# Checkpointer.
# --------------------------------------------------------------------------------------------
class Checkpointer:
  """Saves and restores lix_jax training checkpoints (see the module docstring).

  All processes must call `save` and `restore_latest` together (orbax synchronises them); the
  directory must be shared by all hosts.

  Attributes:
    directory: the absolute checkpoint directory.
    skipped: `(step, reason)` for each step the last restore skipped.
  """

  def __init__(self, directory: str | os.PathLike, *, keep: int = 2, keep_best: int = 1,
               best_metric: str = "miou", async_save: bool = True,
               save_interval_steps: int = 1):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where steps are written (e.g. `<workdir>/checkpoints`).
      keep: how many of the newest steps to keep.
      keep_best: how many of the best steps (by `best_metric`, higher is better) to keep as well.
      best_metric: the metrics key that ranks steps.
      async_save: write in a background thread (`save` returns once the data is on the host).
      save_interval_steps: orbax skips `save` calls at other steps unless `force=True`.
    """
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    self.directory = os.path.abspath(os.fspath(directory))
    self.skipped: list[tuple[int, str]] = []
    policies = ocp.checkpoint_managers
    metric_fn = _metric_fn(best_metric)
    rules = [policies.LatestN(n=keep)]
    if keep_best > 0:
      rules.append(policies.BestN(get_metric_fn=metric_fn, n=keep_best,
                                  keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        preservation_policy=policies.AnyPreservationPolicy(rules),
        best_fn=metric_fn,
        best_mode="max",
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True,
    )
    self._mngr = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: Any, *, data_iters: Mapping[str, Any] | None = None,
           config: Any = None, metrics: Mapping[str, Any] | None = None,
           force: bool = False) -> bool:
    """Saves state, data-iterator positions, config and checksum as one orbax step.

    Args:
      step: the global step (a step that already exists is not overwritten: returns False).
      state: the train-state pytree.
      data_iters: name -> grain `DatasetIterator`; saved as items `data_<name>` (a name that
        already starts with `data_` is used as is). Restore with the same names.
      config: a dict or `ConfigDict`, stored as JSON (non-JSON values as `str`).
      metrics: e.g. `segmentation_metrics(...)` of the evaluation at this step; scalar entries are
        kept (arrays dropped) and `miou` ranks the step for keep-best.
      force: save even if `save_interval_steps` would skip this step (e.g. on pre-emption).

    Returns:
      Whether a checkpoint was written (started, when asynchronous).
    """
    step = int(step)
    if step in self._mngr.all_steps():
      log.info("Checkpoint step %d already exists in %s; not overwritten.", step, self.directory)
      return False
    items: dict[str, Any] = {
        STATE_ITEM: ocp.args.StandardSave(state),
        CONFIG_ITEM: ocp.args.JsonSave(_jsonable(config if config is not None else {})),
        CHECKSUM_ITEM: ocp.args.JsonSave(ckpt_checks.state_checksum(state)),
    }
    for name, it in (data_iters or {}).items():
      items[_data_item(name)] = grain.checkpoint.CheckpointSave(it)
    with _quiet_missing_metrics():
      return bool(self._mngr.save(
          step, args=ocp.args.Composite(**items),
          metrics=_scalar_metrics(metrics) if metrics is not None else None, force=force))

  def restore_latest(self, abstract_state: Any, *, data_iters: Mapping[str, Any] | None = None
                     ) -> tuple[Any, int] | tuple[None, None]:
    """Restores the newest step that restores cleanly and matches its checksum.

    Args:
      abstract_state: `jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh_state)`; its
        shardings decide where the restored arrays go.
      data_iters: name -> freshly built grain iterator (same names as at save time); each is set
        in place to the restored step's position (left unchanged when nothing restores).

    Returns:
      `(state, step)`, or `(None, None)` when there is no good step (each skipped step is logged
      and listed in `self.skipped`).
    """
    self._mngr.wait_until_finished()
    self._mngr.reload()
    steps = sorted(self._mngr.all_steps(), reverse=True)
    state, step, self.skipped = _restore_newest_good(
        self._mngr, steps, abstract_state, data_iters, verify=True, where=self.directory)
    if step is None and steps:
      log.warning("No checkpoint in %s could be restored (tried %s).", self.directory, steps)
    return state, step

  def restore_config(self, step: int | None = None) -> dict[str, Any]:
    """The config stored with `step` (default: the latest step)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self._mngr.restore(step, args=ocp.args.Composite(
        **{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]

  def best_step(self) -> int | None:
    """The kept step with the highest metric; None if no step was saved with metrics."""
    return self._mngr.best_step()

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def wait_until_finished(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager (required before exit when async)."""
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def stored_config(directory: str | os.PathLike) -> dict[str, Any] | None:
  """The config item of the newest step in a checkpoint directory that has a readable one.

  For workdirs whose `config.json` is missing (a run killed before writing it, or copied without
  it). None when there is no step or no step's config can be read."""
  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    return None
  options = ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False,
                                         enable_async_checkpointing=False)
  with contextlib.closing(ocp.CheckpointManager(directory, options=options)) as mngr:
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        return mngr.restore(step, args=ocp.args.Composite(
            **{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]
      except Exception:  # noqa: BLE001  (an unreadable item: try the next older step)
        continue
  return None


def restore_state_only(directory: str | os.PathLike, abstract_state: Any, *,
                       prefer_best: bool = False) -> Any:
  """Restores only the state of the newest good step, e.g. a frozen teacher for distillation.

  Args:
    directory: a checkpoint directory, or a workdir that contains `checkpoints/`.
    abstract_state: as for `Checkpointer.restore_latest`, for the saved state's structure.
    prefer_best: try the best step (by `miou`) first, then the others newest first.

  Returns:
    The restored state (checksum verified; bad steps are skipped with a warning).

  Raises:
    FileNotFoundError: when the directory does not exist or holds no finished step.
    ValueError: when no step restores and matches its checksum (the message lists each reason).
  """
  directory = os.path.abspath(os.fspath(directory))
  sub = os.path.join(directory, "checkpoints")
  if os.path.isdir(sub):
    directory = sub
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
  options = ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False,
                                         enable_async_checkpointing=False,
                                         best_fn=_metric_fn("miou"), best_mode="max")
  with contextlib.closing(ocp.CheckpointManager(directory, options=options)) as mngr:
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no finished checkpoint step in {directory}")
    best = mngr.best_step() if prefer_best else None
    if best is not None:
      steps = [best] + [s for s in steps if s != best]
    state, step, skipped = _restore_newest_good(mngr, steps, abstract_state, None, verify=True,
                                                where=directory)
  if step is None:
    reasons = "; ".join(f"step {s}: {r}" for s, r in skipped)
    raise ValueError(f"no checkpoint step in {directory} could be restored: {reasons}")
  log.info("Restored state from %s, step %d.", directory, step)
  return state
