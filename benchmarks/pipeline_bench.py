"""Input-pipeline throughput (images/s) of lix_jax.data.pipeline; prints figures, asserts nothing.

  PYTHONPATH=. .venv/bin/python benchmarks/pipeline_bench.py [--data_dir=/tmp/lix_data] [--steps=30]
      [--workers 2 4]     # also with 2 and 4 grain worker processes

Sources: a fake in-memory source of 64x192 examples (random image, depth with holes) and, when it
can be built, the `synthetic_driving` `tiny` train split. For each X modality and 1 / 2 grain
threads it times the training stream (scale / crop / flip / normalise, batch 8) after a warm-up
(wall clock, so it depends on the load of the machine), and the CPU time of one example's
processing.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lix_jax.data import pipeline


def fake_source(n: int = 64, h: int = 64, w: int = 192, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    v = np.arange(h)[:, None]
    depth = np.broadcast_to(200.0 / np.maximum(v - h * 0.4, 1.0), (h, w)).astype(np.float32)
    noise = 1 + 0.001 * rng.standard_normal((h, w))
    depth = np.where(rng.random((h, w)) < 0.05, 0, depth * noise)
    out.append({"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                "depth": np.minimum(depth, 80).astype(np.float32),
                "label": rng.integers(0, 10, (h, w), dtype=np.uint8),
                "intrinsics": np.array([100, 100, w / 2, h / 2], np.float32),
                "baseline": np.float32(0.5), "id": f"fake{i}".encode()})
  return out


def images_per_s(source, *, x_modality: str, num_threads: int, crop_hw, batch_size: int = 8,
                 steps: int = 30, warmup: int = 3, num_workers: int = 0) -> float:
  it = iter(pipeline.train_dataset(source, batch_size=batch_size, seed=0, x_modality=x_modality,
                                   crop_hw=crop_hw, num_threads=num_threads, prefetch=4,
                                   shard_index=0, shard_count=1, num_workers=num_workers))
  for _ in range(warmup):
    next(it)
  t0 = time.perf_counter()
  for _ in range(steps):
    next(it)
  dt = time.perf_counter() - t0
  del it
  return steps * batch_size / dt


def cpu_ms_per_example(source, *, x_modality: str, crop_hw, n: int = 50) -> float:
  """CPU time of `process_example` alone (robust to other processes sharing the cores)."""
  rng = np.random.default_rng(0)
  examples = [source[i % len(source)] for i in range(n)]
  t0 = time.process_time()
  for ex in examples:
    pipeline.process_example(ex, rng, x_modality=x_modality, crop_hw=crop_hw)
  return (time.process_time() - t0) / n * 1e3


def run(name: str, source, crop_hw, steps: int, workers: tuple[int, ...] = ()) -> None:
  h, w = np.asarray(source[0]["image"]).shape[:2]
  print(f"\n{name}: {len(source)} examples of {h}x{w}, crop {crop_hw[0]}x{crop_hw[1]}, batch 8")
  for x_modality in ("depth", "disparity", "normal"):
    figs = [images_per_s(source, x_modality=x_modality, num_threads=t, crop_hw=crop_hw, steps=steps)
            for t in (1, 2)]
    cpu = cpu_ms_per_example(source, x_modality=x_modality, crop_hw=crop_hw)
    print(f"  x={x_modality:9s}  1 thread: {figs[0]:7.1f} img/s   2 threads: {figs[1]:7.1f} img/s"
          f"   process_example: {cpu:5.2f} ms CPU/example")
  for n in workers:  # worker processes (mp_prefetch), 1 read thread each
    ips = images_per_s(source, x_modality="depth", num_threads=1, crop_hw=crop_hw, steps=steps,
                       num_workers=n)
    print(f"  x=depth      {n} worker processes: {ips:7.1f} img/s")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", default="/tmp/lix_bench_data")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--workers", type=int, nargs="*", default=(),
                      help="also time these numbers of grain worker processes (x = depth)")
  args = parser.parse_args()
  if args.workers:
    from absl import flags  # pylint: disable=g-import-not-at-top
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read an absl flag
  run("fake", fake_source(), (64, 192), args.steps, tuple(args.workers))
  try:
    from lix_jax.data import get_source  # pylint: disable=g-import-not-at-top
    src = get_source("synthetic_driving", "train", data_dir=args.data_dir, builder_config="tiny")
  except Exception as e:  # pylint: disable=broad-except  (the builder may not exist yet)
    print(f"\nsynthetic_driving tiny: not available ({type(e).__name__}: {e})")
  else:
    run("synthetic_driving tiny", src, np.asarray(src[0]["image"]).shape[:2], args.steps)


if __name__ == "__main__":
  main()
