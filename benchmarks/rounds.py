"""Interleaved-rounds timing shared by the benchmarks (step_bench, inference_bench)."""
from __future__ import annotations

import statistics
import time

import jax


class Rounds:
  """Times registered entries in interleaved rounds: each round calls every entry once.

  On a shared machine the load drifts over a run; timing entries one after another lets the drift
  land on one entry and skew the ratios between them, while rounds spread it over all entries.
  """

  def __init__(self, warmup: int):
    self.warmup = warmup
    self.fns, self.images, self.first, self.ms = {}, {}, {}, {}

  def add(self, name, fn, images):
    """Compiles and warms up `fn` (the first call's seconds are kept) and queues it."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    self.first[name] = time.perf_counter() - t0
    for _ in range(self.warmup):
      jax.block_until_ready(fn())
    self.fns[name], self.images[name], self.ms[name] = fn, images, []

  def run(self, rounds: int):
    for _ in range(rounds):
      for name, fn in self.fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        self.ms[name].append(1e3 * (time.perf_counter() - t0))

  def median(self, name) -> float:
    return statistics.median(self.ms[name])

  def rows(self):
    return [(name, self.images[name], f"{self.median(name):.1f}",
             f"{1e3 * self.images[name] / self.median(name):.0f}", f"{self.first[name]:.1f}")
            for name in self.fns]
