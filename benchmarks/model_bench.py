"""Model benchmark: parameter counts and jitted forward / forward+backward time per image.

Usage (from the repository root):
  python benchmarks/model_bench.py                          # CPU size: resnet18 ×0.25, 64×192
  python benchmarks/model_bench.py --size 96x320 --batch 4
  python benchmarks/model_bench.py --paper_timing   # also time the paper-size models (slow on CPU)

Parameter counts of the paper-size models (width 1.0, every backbone) come from `jax.eval_shape`,
so they cost no compute. Variables are filled with random values rather than `Model.init`
(the threefry initialisers take tens of seconds to compile on CPU and do not affect the timing).
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # run as a script from a checkout without `pip install .`
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lix_jax import models  # noqa: E402
from lix_jax.models import networks  # noqa: E402


def random_variables(model, hw, batch, seed=0):
  """Variables with `model.init`'s shapes and random values (He-normal kernels)."""
  variables, _ = networks.abstract_init(model, hw, batch)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(size=leaf.shape) * math.sqrt(2 / math.prod(leaf.shape[:-1])),
                         jnp.float32)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, jnp.float32)
    return jnp.zeros(leaf.shape, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, variables)


def time_model(model, hw, batch, iters):
  """Returns (compile_s, forward_ms_per_image, fwd_bwd_ms_per_image) for `model` at `hw`."""
  variables = random_variables(model, hw, batch)
  inputs = [jnp.asarray(np.random.default_rng(1).normal(size=s.shape), jnp.float32)
            for s in networks.dummy_inputs(model, hw, batch)]
  labels = jnp.asarray(np.random.default_rng(2).integers(0, 8, size=(batch, *hw)), jnp.int32)

  forward = jax.jit(lambda v, *a: model.apply(v, *a, train=False)[0])

  def loss_fn(params, batch_stats, *a):
    (logits, _), upd = model.apply({"params": params, "batch_stats": batch_stats}, *a, train=True,
                                   mutable=["batch_stats"])
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1)), upd

  fwd_bwd = jax.jit(jax.grad(loss_fn, has_aux=True))
  t0 = time.perf_counter()
  jax.block_until_ready(forward(variables, *inputs))
  jax.block_until_ready(fwd_bwd(variables["params"], variables["batch_stats"], *inputs))
  compile_s = time.perf_counter() - t0

  def per_image_ms(fn):
    t = time.perf_counter()
    for _ in range(iters):
      jax.block_until_ready(fn())
    return (time.perf_counter() - t) / iters / batch * 1e3

  fwd_ms = per_image_ms(lambda: forward(variables, *inputs))
  bwd_ms = per_image_ms(lambda: fwd_bwd(variables["params"], variables["batch_stats"], *inputs))
  return compile_s, fwd_ms, bwd_ms


def model_set(backbone, width, num_classes, x_channels, stem):
  kw = dict(backbone=backbone, width=width, stem=stem)
  return {
      "teacher/intermediate": models.Teacher(num_classes, x_channels, fusion="intermediate", **kw),
      "teacher/late": models.Teacher(num_classes, x_channels, fusion="late", **kw),
      "student": models.Student(num_classes, **kw),
  }


def params_of(model, hw=(64, 64)):
  return models.count_params(networks.abstract_init(model, hw)[0]["params"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="64x192", help="HxW of the timed CPU-size run")
  parser.add_argument("--backbone", default="resnet18")
  parser.add_argument("--width", type=float, default=0.25)
  parser.add_argument("--stem", default="imagenet")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--x_channels", type=int, default=3)
  parser.add_argument("--paper_backbone", default="resnet50")
  parser.add_argument("--paper_size", default="352x1216", help="HxW of the paper-size timing")
  parser.add_argument("--paper_timing", action="store_true", help="also time the paper-size models")
  args = parser.parse_args()
  hw = tuple(int(v) for v in args.size.split("x"))
  print(f"devices: {jax.devices()}")

  print(f"\n== {args.backbone} width {args.width}, {hw[0]}x{hw[1]}, batch {args.batch}, "
        f"K={args.num_classes}, Cx={args.x_channels}, stem {args.stem}")
  header = ("model", "params", "compile s", "fwd ms/img", "fwd+bwd ms/img")
  print(f"{header[0]:22s} {header[1]:>10s} {header[2]:>10s} {header[3]:>11s} {header[4]:>15s}")
  for name, model in model_set(args.backbone, args.width, args.num_classes, args.x_channels,
                               args.stem).items():
    compile_s, fwd, bwd = time_model(model, hw, args.batch, args.iters)
    print(f"{name:22s} {params_of(model):10,d} {compile_s:10.1f} {fwd:11.2f} {bwd:15.2f}")

  print(f"\n== parameter counts at width 1.0 (eval_shape; K={args.num_classes}, "
        f"Cx={args.x_channels})")
  for backbone in models.BACKBONES:
    counts = {n: params_of(m) for n, m in model_set(backbone, 1.0, args.num_classes,
                                                      args.x_channels, args.stem).items()}
    print(f"{backbone:9s} " + "  ".join(f"{n} {c / 1e6:7.2f}M" for n, c in counts.items()))

  if args.paper_timing:
    phw = tuple(int(v) for v in args.paper_size.split("x"))
    print(f"\n== paper size: {args.paper_backbone} width 1.0, {phw[0]}x{phw[1]}, batch 1")
    for name, model in model_set(args.paper_backbone, 1.0, args.num_classes, args.x_channels,
                                 args.stem).items():
      compile_s, fwd, bwd = time_model(model, phw, 1, max(1, args.iters // 2))
      print(f"{name:22s} {params_of(model):10,d} {compile_s:10.1f} {fwd:11.2f} {bwd:15.2f}")


if __name__ == "__main__":
  main()
