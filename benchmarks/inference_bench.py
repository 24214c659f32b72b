r"""Inference benchmark (DESIGN §8, issues 22, 34): the exported RGB student against the RGB-X
teacher, and the student's ONNX artifact under ONNX Runtime (the inference peer).

Each network is exported exactly as a finished run ships it (`lix_jax.experiments.export`: uint8 image in,
normalisation inside, int32 labels and float32 logits out; symbolic batch and H = 32·h, W = 32·w),
serialised, deserialised, and timed through `jax.jit(exported.call)`: latency at batch 1 and
throughput at batch 16, in interleaved rounds (each round calls every entry once, so load that
drifts during the run hits all entries alike); median and range over the rounds. Also parameters
and FLOPs per image (XLA's `cost_analysis()` of the compiled batch-1 artifact). The student is also
converted to `student.onnx` as a finished run writes it (`lix_jax.experiments.onnx_export`) and
timed in the same rounds by onnxruntime's CPU execution provider ("student onnxruntime B=…"
rows; NumPy inputs, as a car-side caller passes them). Without onnxruntime / jax2onnx installed
those rows are left out (said in the report).

Sizes:
  cpu    64×192, the CPU models of configs/benchmark.py (ResNet-18 ×0.25, deep stem, decoder 32).
  kitti  KITTI's 375×1242 with the paper-sized models (ResNet-18 student, ResNet-50 duplex
         teacher with gated intermediate fusion, width 1.0, ImageNet stem, decoder 128). The
         artifact takes multiples of 32, so the image is padded to 384×1248 (what
         `lix_jax.experiments.export.segment` does) and that is what is timed.
Random weights (timing does not depend on them).

Usage (from the repository root):
  python benchmarks/inference_bench.py                     # cpu size (CPU-sized student)
  python benchmarks/inference_bench.py --size kitti --rounds 3 --warmup 0   # slow on 2 CPU cores
  python benchmarks/inference_bench.py --out results/cpu/inference_bench_cpu2_$(date -u +%Y-%m).txt
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script from a checkout without `pip install .`
  sys.path.insert(0, str(REPO))

from lix_jax import models  # noqa: E402
from lix_jax.experiments import export, onnx_export  # noqa: E402
from lix_jax.data import geometry, pipeline  # noqa: E402
from lix_jax.models import networks  # noqa: E402
from benchmarks.rounds import Rounds  # noqa: E402

NUM_CLASSES = 19  # Cityscapes / KITTI train ids (the synthetic data has 10; cost barely changes).
BATCHES = (1, 16)
PAPER = {"student": {"backbone": "resnet18", "width": 1.0, "stem": "imagenet",
                     "decoder_channels": None},
         "teacher": {"backbone": "resnet50", "width": 1.0, "stem": "imagenet",
                     "decoder_channels": None, "fusion": "intermediate", "fusion_block": "gated"}}
SIZES = {"cpu": (64, 192), "kitti": (375, 1242)}


def load_config(preset: str = ""):
  spec = importlib.util.spec_from_file_location("bench_config", REPO / "configs" / "benchmark.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def model_sections(size: str) -> dict[str, dict]:
  """kind -> model config section: the benchmark config's CPU models, or the paper's."""
  if size == "kitti":
    return PAPER
  config = load_config()
  return {"student": config.student.to_dict(), "teacher": config.teacher.to_dict()}


def padded(hw: tuple[int, int], stride: int = export.STRIDE) -> tuple[int, int]:
  return tuple(-(-n // stride) * stride for n in hw)


def random_variables(model, hw, seed=0):
  """`model.init`'s shapes with random values (He-normal kernels); no init compile."""
  return networks.random_variables(model, hw, seed)


class Network:
  """One exported network: its artifact (through bytes, as shipped), parameter count, inputs; with
  `onnx`, also its ONNX artifact in an onnxruntime session (`session`, else None)."""

  def __init__(self, kind: str, section: dict, hw: tuple[int, int], x_modality: str = "depth",
               dtype: str = "float32", onnx: bool = False):
    self.kind, self.hw = kind, padded(hw)
    x_channels = geometry.MODALITIES[x_modality]
    model = models.build(dict(section, dtype=dtype), num_classes=NUM_CLASSES,
                         x_channels=x_channels, kind=kind)
    variables = random_variables(model, self.hw)
    self.num_params = networks.count_params(variables["params"])
    self.x_channels = x_channels if kind == "teacher" else None
    fn = export.deployable_fn(model, variables, mean=pipeline.IMAGENET_MEAN,
                              std=pipeline.IMAGENET_STD, dtype=dtype,
                              x_modality=x_modality if kind == "teacher" else None)
    t0 = time.perf_counter()
    blob, _ = export.export_fn(fn, export.input_specs(self.x_channels), platforms=("cpu",))
    self.export_s = time.perf_counter() - t0
    self.artifact_mb = len(blob) / 2**20
    self.call = jax.jit(jax.export.deserialize(bytearray(blob)).call)
    self.session, self.onnx_s, self.onnx_mb = None, float("nan"), float("nan")
    if onnx:
      import onnxruntime  # noqa: PLC0415  (only for the ONNX rows)
      from lix_jax.experiments import onnx_export  # noqa: PLC0415
      t0 = time.perf_counter()
      proto = onnx_export.convert(fn, export.input_specs(self.x_channels)).SerializeToString()
      self.onnx_s, self.onnx_mb = time.perf_counter() - t0, len(proto) / 2**20
      self.session = onnxruntime.InferenceSession(proto, providers=list(onnx_export.PROVIDERS))

  def inputs(self, batch: int, seed: int = 0) -> tuple[jax.Array, ...]:
    """Device arrays: uint8 image [batch, H, W, 3] (and raw depth [batch, H, W, 1])."""
    rng = np.random.default_rng(seed)
    out = (jnp.asarray(rng.integers(0, 256, (batch, *self.hw, 3), dtype=np.uint8)),)
    if self.x_channels:
      out += (jnp.asarray(rng.uniform(0, 80, (batch, *self.hw, self.x_channels)), jnp.float32),)
    return out

  def flops_per_image(self) -> float:
    """XLA's cost analysis of the compiled batch-1 artifact (nan when the backend has none)."""
    analysis = self.call.lower(*self.inputs(1)).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def entries(networks_: dict[str, Network], batches=BATCHES):
  """`(name, fn, images)` per network × batch; `fn()` runs the artifact on its own inputs.

  Each `fn` binds its inputs when it is made (`functools.partial`), never through a closure over
  a loop variable: entries are called only after all are built, so a late-binding lambda would
  time every entry at the loop's last batch (the bug found in the other benchmarks).
  """
  out = []
  for kind, net in networks_.items():
    for batch in batches:
      name = f"{kind} B={batch} {net.hw[0]}x{net.hw[1]}"
      out.append((name, functools.partial(net.call, *net.inputs(batch)), batch))
    for batch in batches if net.session else ():
      feeds = dict(zip(onnx_export.INPUT_NAMES, (np.asarray(a) for a in net.inputs(batch))))
      out.append((f"{kind} onnxruntime B={batch} {net.hw[0]}x{net.hw[1]}",
                  functools.partial(net.session.run, list(onnx_export.OUTPUT_NAMES), feeds), batch))
  return out


def table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _onnx_available() -> bool:
  return all(importlib.util.find_spec(m) for m in ("jax2onnx", "onnxruntime"))


def run(size: str, rounds: int, warmup: int, dtype: str = "float32", onnx: bool = True) -> str:
  hw = SIZES[size]
  sections = model_sections(size)
  onnx = onnx and dtype == "float32" and _onnx_available()  # The ONNX artifact is float32.
  nets = {kind: Network(kind, sections[kind], hw, dtype=dtype, onnx=onnx and kind == "student")
          for kind in ("student", "teacher")}
  r = Rounds(warmup)
  for name, fn, images in entries(nets):
    r.add(name, fn, images)
  r.run(rounds)
  title = (f"## {size}: {hw[0]}x{hw[1]}" + (f" padded to {nets['student'].hw[0]}x"
                                            f"{nets['student'].hw[1]}" if padded(hw) != hw else "")
           + f", {dtype}, {rounds} interleaved rounds after {warmup} warm-up call(s)")
  why = "" if onnx else ("the ONNX artifact is float32" if dtype != "float32"
                         else "jax2onnx / onnxruntime not installed")
  return report(title, nets, sections, r, BATCHES, no_onnx_because=why)


def report(title: str, nets: dict[str, Network], sections: dict[str, dict], r: Rounds,
           batches=BATCHES, no_onnx_because: str = "") -> str:
  """The markdown report of timed rounds `r` of `entries(nets, batches)`."""
  lines = [title, f"jax {jax.__version__}, {jax.devices()[0].platform} ({jax.device_count()} "
           f"device), {platform.processor() or platform.machine()}", ""]
  rows = []
  for kind, net in nets.items():
    section = sections[kind]
    what = (f"{section['backbone']} x{section['width']}"
            + (f" {section.get('fusion')}" if kind == "teacher" else ""))
    rows.append([kind, what, f"{net.num_params / 1e6:.2f} M",
                 f"{net.flops_per_image() / 1e9:.2f}", f"{net.artifact_mb:.1f}",
                 f"{net.export_s:.1f}", f"{net.onnx_mb:.1f}", f"{net.onnx_s:.1f}"])
  lines += [table(["network", "model", "params", "GFLOPs / image", "artifact MiB", "export s",
                   "ONNX MiB", "ONNX convert s"], rows), ""]
  rows = []
  for name, ms in r.ms.items():
    batch = r.images[name]
    med, lo, hi = statistics.median(ms), min(ms), max(ms)
    rows.append([name, f"{med:.1f} ({lo:.1f}–{hi:.1f})",
                 f"{1e3 * batch / med:.1f} ({1e3 * batch / hi:.1f}–{1e3 * batch / lo:.1f})",
                 f"{r.first[name]:.1f}"])
  lines += [table(["entry", "ms / call, median (range)", "images/s, median (range)",
                   "first call s (compile)"], rows), ""]
  size = f"{nets['student'].hw[0]}x{nets['student'].hw[1]}"
  ratio = lambda b, num, den: r.median(f"{num} B={b} {size}") / r.median(f"{den} B={b} {size}")
  lines.append("teacher / student time: " + ", ".join(
      f"B={b} {ratio(b, 'teacher', 'student'):.2f}x" for b in batches))
  if nets["student"].session is not None:
    import onnxruntime  # noqa: PLC0415
    lines.append(f"student onnxruntime {onnxruntime.__version__} (CPUExecutionProvider) / jax "
                 "artifact time: " + ", ".join(
                     f"B={b} {ratio(b, 'student onnxruntime', 'student'):.2f}x" for b in batches))
  else:
    lines.append(f"no onnxruntime rows: {no_onnx_because or 'not asked for'}")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", choices=sorted(export.VARIANTS), default="float32")
  parser.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime rows")
  parser.add_argument("--out", default="", help="also append the report to this file")
  args = parser.parse_args(argv)
  report = run(args.size, args.rounds, args.warmup, args.dtype, onnx=not args.no_onnx)
  print(report)
  if args.out:
    with open(args.out, "a", encoding="utf-8") as f:
      f.write(report + "\n")


if __name__ == "__main__":
  main()
