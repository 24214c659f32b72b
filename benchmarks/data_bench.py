"""Data benchmarks: synthetic_driving generation speed (DESIGN §5 target: >= 50 images/s at 96x320
on one core).

  python benchmarks/data_bench.py [--num 200]

Prints images/s for layout sampling + ray casting + shading + depth sensor (no file writing), by
wall clock and by process CPU time (the latter is the fair figure on a shared machine), and the time
to build the `tiny` config through TFDS (generation + zlib + ArrayRecord writing).
"""
from __future__ import annotations

import os

# One core: NumPy must not spread its work over BLAS threads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from lix_jax.data.builders import synthetic_render  # noqa: E402


def bench_generation(height: int, width: int, num: int) -> tuple[float, float]:
  """(images/s by wall clock, images/s by CPU time) of `generate_example` at height x width."""
  synthetic_render.generate_example(0, 0, 0, height, width)  # warm caches (noise tile)
  wall, cpu = time.perf_counter(), time.process_time()
  for i in range(num):
    synthetic_render.generate_example(0, 0, i, height, width)
  return num / (time.perf_counter() - wall), num / (time.process_time() - cpu)


def bench_tiny_build() -> float:
  """Seconds to build the `tiny` config (96 images, all splits) into a fresh directory."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from lix_jax import data  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory() as d:
    start = time.perf_counter()
    data.get_builder("synthetic_driving", data_dir=d, builder_config="tiny").download_and_prepare()
    return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num", type=int, default=200, help="images per resolution")
  parser.add_argument("--skip_build", action="store_true")
  args = parser.parse_args()
  for h, w in ((64, 192), (96, 320)):
    wall, cpu = bench_generation(h, w, args.num)
    print(f"synthetic_driving generation {h}x{w}: {wall:6.1f} images/s (wall), "
          f"{cpu:6.1f} images/s (CPU time, one core)")
  if not args.skip_build:
    print(f"synthetic_driving tiny build (96 images, TFDS ArrayRecord): {bench_tiny_build():.2f} s")


if __name__ == "__main__":
  main()
