"""Preemption and failure handling of the training loop (signals, resumable logs, bad checkpoints).

`StopFlag` turns SIGTERM/SIGINT into a flag the loop reads after each step, so a preempted job
finishes its step, checkpoints and raises `Preempted`; `keep_log_until` and `set_aside` make a
resumed run log each step once (moving, never dropping, lines past the resumed step) and re-save
over checkpoints that failed to restore; `stored_config`, `has_run` and `move_to_previous` let the
loop refuse a changed config and start over only when asked (`train.restart`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from typing import Any

import numpy as np


class NonFiniteError(RuntimeError):
  """Raised after `train.max_bad_steps` consecutive non-finite steps."""


class Preempted(Exception):
  """Raised by `train` after SIGTERM/SIGINT, once the current step is done and checkpointed.

  An exception rather than a return value, so that callers that go on (the pipeline's next
  student) stop too; `main` turns it into one line and exit status 0. Rerun to resume.
  """

  def __init__(self, signal_name: str, step: int, checkpoint_dir: str):
    super().__init__(f"stopped by {signal_name} after step {step}; checkpoint saved in "
                     f"{checkpoint_dir}; rerun the same command to resume")
    self.signal_name, self.step, self.checkpoint_dir = signal_name, step, checkpoint_dir


class StopFlag:
  """Turns SIGTERM/SIGINT into a flag checked after every step (preemption-safe exit)."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def keep_log_until(path: str, last_step: int) -> str | None:
  """Keeps the lines of `metrics.jsonl` up to `last_step`; later ones go to a side file.

  A resumed run redoes the steps after its checkpoint; without this they would be logged twice
  (a crash or a skipped corrupt checkpoint leaves lines newer than the step resumed from). The
  lines past `last_step` are moved, not dropped, to `metrics.after_<last_step>.jsonl` beside it
  (appended to, if an earlier resume from the same step made one). A line torn by a kill
  mid-write goes there too.

  Returns:
    The side file's path, or None when nothing was past `last_step`.
  """
  if not os.path.exists(path):
    return None
  kept, later = [], []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line if line.endswith("\n") else line + "\n"
      try:
        keep = int(json.loads(line)["step"]) <= last_step
      except (ValueError, KeyError, TypeError):
        keep = False
      (kept if keep else later).append(line)
  if not later:
    return None
  side = os.path.join(os.path.dirname(path), f"metrics.after_{last_step}.jsonl")
  with open(side, "a", encoding="utf-8") as f:
    f.writelines(later)
    f.flush()
    os.fsync(f.fileno())
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)
  logging.warning("metrics.jsonl: %d line(s) past step %d moved to %s", len(later), last_step, side)
  return side


# Files and folders that make up a run in a workdir (moved together by `move_to_previous`).
RUN_FILES = ("checkpoints", "checkpoints_skipped", "metrics.jsonl", "final_metrics.json",
             "config.json", "tb", "export")


def has_run(workdir: str) -> bool:
  """Whether `workdir` holds (part of) a run: checkpoints, logged steps or final metrics."""
  ckpt = os.path.join(workdir, "checkpoints")
  return (os.path.isdir(ckpt) and bool(os.listdir(ckpt))) or any(
      os.path.exists(os.path.join(workdir, f)) for f in ("metrics.jsonl", "final_metrics.json"))


def stored_config(workdir: str) -> dict | None:
  """The config the run in `workdir` was trained with (`config.json`), or None if none is stored.

  Raises:
    ValueError: `config.json` exists but is not valid JSON (named).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it records the config of the run in "
                     f"{workdir}: restore it, or start over with --config.train.restart=True") from e


def _json_default(value):
  """`json.dump` default: NumPy arrays and scalars as lists and numbers, other iterables as lists."""
  if isinstance(value, (np.ndarray, np.generic)):
    return value.tolist()
  try:
    return list(value)
  except TypeError:
    raise TypeError(f"{type(value).__name__} is not JSON serialisable") from None


def write_json(path: str, value: Any) -> None:
  """Writes `value` as JSON atomically (a reader sees the old file or the whole new one)."""
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1, default=_json_default)
  os.replace(path + ".tmp", path)


def write_config(workdir: str, config_dict: dict) -> None:
  """Writes `config.json` atomically."""
  write_json(os.path.join(workdir, "config.json"), config_dict)


def move_to_previous(workdir: str) -> str | None:
  """Moves the run in `workdir` (`RUN_FILES`, `metrics.after_*`, `eval_<split>.json`) to
  `previous_<time>/`.

  Returns:
    The new folder, or None when there was nothing to move.
  """
  names = [f for f in os.listdir(workdir)
           if f in RUN_FILES or f.startswith("metrics.after_") or re.fullmatch(r"eval_\w+\.json", f)]
  if not names:
    return None
  target = os.path.join(workdir, f"previous_{time.strftime('%Y%m%d-%H%M%S')}")
  suffix = 0
  while os.path.exists(target + (f"_{suffix}" if suffix else "")):
    suffix += 1
  target += f"_{suffix}" if suffix else ""
  os.makedirs(target)
  for name in names:
    os.replace(os.path.join(workdir, name), os.path.join(target, name))
  logging.warning("train.restart=True: moved the previous run of %s (%s) to %s", workdir,
                  ", ".join(sorted(names)), target)
  return target


def set_aside(checkpoint_dir: str, steps: list[int]) -> None:
  """Moves skipped (unrestorable) steps out of `checkpoint_dir` so that they are saved anew."""
  aside = checkpoint_dir + "_skipped"
  os.makedirs(aside, exist_ok=True)
  for s in steps:
    target = os.path.join(aside, f"{s}.{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(os.path.join(checkpoint_dir, str(s)), target)
    logging.warning("Moved the unrestorable checkpoint step %d to %s", s, target)
