"""Preemption and failure handling of the training loop (signals, resumable logs, bad checkpoints).

`StopFlag` turns SIGTERM/SIGINT into a flag the loop reads after each step, so a preempted job
finishes its step, checkpoints and raises `Preempted`; `keep_log_until` and `set_aside` make a
resumed run log each step once and re-save over checkpoints that failed to restore.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time


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


def keep_log_until(path: str, last_step: int) -> None:
  """Drops the lines of `metrics.jsonl` after `last_step` (and any torn last line).

  A resumed run redoes the steps after its checkpoint; without this they would be logged twice
  (a crash or a skipped corrupt checkpoint leaves lines newer than the step resumed from).
  """
  if not os.path.exists(path):
    return
  kept = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        if int(json.loads(line)["step"]) <= last_step:
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError, TypeError):
        pass  # A line torn by a kill mid-write.
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)


def set_aside(checkpoint_dir: str, steps: list[int]) -> None:
  """Moves skipped (unrestorable) steps out of `checkpoint_dir` so that they are saved anew."""
  aside = checkpoint_dir + "_skipped"
  os.makedirs(aside, exist_ok=True)
  for s in steps:
    target = os.path.join(aside, f"{s}.{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(os.path.join(checkpoint_dir, str(s)), target)
    logging.warning("Moved the unrestorable checkpoint step %d to %s", s, target)
