"""Shipping a run (issues 22, 34): jax.export and ONNX artifacts, predict from them without flax
(and from the ONNX one without jax), and eval / predict of a distilled student without its teacher.

One module-scoped pair of tiny runs (a teacher, a LIX student with unlabelled frames, both of the
`tiny` preset's 6 steps, so that their step programs are the tiny pipeline's, loaded from the
persistent compilation cache once tests/test_cli.py compiled them) feeds every test.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from cli_env import cli_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ("--config=configs/synthetic.py:tiny",
          "--config.train.log_every=1", "--config.train.eval_every=1000",
          "--config.train.ckpt_every=1000")
META_KEYS = ("format_version", "lix_jax_version", "kind", "artifacts", "platforms", "inputs",
             "outputs", "symbolic_dims", "stride", "normalization", "num_classes", "class_names",
             "palette", "x_modality", "x_channels", "model")
# Run first in a subprocess: importing flax or lix_jax.models (NO_JAX: also jax) raises ImportError.
BLOCK_IMPORTS = """
import atexit, sys
BLOCKED = ('flax',)
class _Block:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in BLOCKED or name == 'lix_jax.models' or name.startswith('lix_jax.models.'):
      raise ImportError('blocked by the test: ' + name)
sys.meta_path.insert(0, _Block())
atexit.register(lambda: print('IMPORTED', sorted(m for m in sys.modules
                                                 if m.startswith(('flax', 'lix_jax', 'jax')))))
"""
NO_JAX = BLOCK_IMPORTS + "BLOCKED = ('flax', 'jax', 'jaxlib')\n"
RUN_MAIN = """
import runpy
sys.argv = ['lix_jax.main'] + sys.argv[1:]
runpy.run_module('lix_jax.main', run_name='__main__')
"""
BLOCKER = BLOCK_IMPORTS + RUN_MAIN


def _env():
  return cli_env(2)


def run(args, *, python_args=("-m", "lix_jax.main"), timeout=600):
  proc = subprocess.run([sys.executable, *python_args, *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"exit {proc.returncode} for {args}:\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
  return proc


def _images(folder, sizes=((64, 96), (96, 128), (70, 100))):
  from PIL import Image
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  for i, hw in enumerate(sizes):
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(
        os.path.join(folder, f"img{i}.png"))
  return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(data_dir, teacher workdir, distilled student workdir)."""
  root = tmp_path_factory.mktemp("export")
  data_dir, teacher, student = (str(root / n) for n in ("data", "teacher", "student"))
  run([*COMMON, f"--workdir={teacher}", f"--config.data.data_dir={data_dir}",
       "--config.mode=train_teacher"])
  run([*COMMON, f"--workdir={student}", f"--config.data.data_dir={data_dir}",
       "--config.mode=distill", "--config.distill.method=lix",
       f"--config.distill.teacher_workdir={teacher}"])
  return data_dir, teacher, student


def _config(data_dir):
  import importlib.util
  spec = importlib.util.spec_from_file_location("synthetic", os.path.join(REPO, "configs/synthetic.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  config.data.data_dir = data_dir
  return config


def _batch(n, hw, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def _normalise(image):
  from lix_jax.data import pipeline
  return ((image.astype(np.float32) - np.asarray(pipeline.IMAGENET_MEAN, np.float32))
          * (1 / np.asarray(pipeline.IMAGENET_STD, np.float32)))


def test_every_finished_run_writes_its_artifacts_and_meta(runs):
  _, teacher, student = runs
  for workdir, kind in ((student, "student"), (teacher, "teacher")):
    files = sorted(os.listdir(os.path.join(workdir, "export")))
    assert files == sorted([f"{kind}.jaxexport", f"{kind}.bf16.jaxexport", f"{kind}.onnx",
                            "meta.json"])
    with open(os.path.join(workdir, "export", "meta.json")) as f:
      meta = json.load(f)
    assert all(k in meta for k in META_KEYS), [k for k in META_KEYS if k not in meta]
    assert meta["kind"] == kind and meta["stride"] == 32 and meta["num_classes"] == 10
    assert len(meta["palette"]) == 10 and "cpu" in meta["platforms"]
    assert meta["inputs"][0]["dtype"] == "uint8" and meta["outputs"][0]["dtype"] == "int32"
    assert (meta["x_modality"], meta["x_channels"]) == (
        ("depth", 1) if kind == "teacher" else (None, None))
    assert meta["artifacts"]["onnx"] == f"{kind}.onnx" and meta["onnx"]["opset"] >= 17
    assert meta["onnx"]["inputs"] == (["image", "x"] if kind == "teacher" else ["image"])
    assert meta["onnx"]["outputs"] == ["labels", "logits"]
  assert json.load(open(os.path.join(student, "export", "meta.json")))["trained_as"] == "distill"


def test_exported_student_equals_the_flax_model_at_any_batch_and_size(runs):
  import jax
  from lix_jax.experiments import export
  from lix_jax.train import task as task_lib
  data_dir, _, student = runs
  model, variables = task_lib.load_variables(_config(data_dir), student, "distill")
  apply = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
  with open(os.path.join(student, "export", "student.jaxexport"), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  for n, hw in ((2, (64, 192)), (3, (64, 192)), (2, (96, 128))):  # symbolic batch, H and W
    image = _batch(n, hw)
    ref = np.asarray(apply(_normalise(image)))
    labels, logits = (np.asarray(a) for a in exported.call(image))
    assert labels.shape == (n, *hw) and labels.dtype == np.int32 and logits.dtype == np.float32
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, ref.argmax(-1))
  bf16 = export.load(os.path.join(student, "export"), "bfloat16")  # the last batch: 2 x 96x128
  bf_labels, bf_logits = (np.asarray(a) for a in bf16(image))
  assert bf_logits.dtype == np.float32 and bf_labels.shape == labels.shape
  # bfloat16 through ~20 layers: logits within 5 % of their scale (measured 2-3 %). Labels flip
  # only at near-ties, and this 6-step student's logits lie close together (98 % of its pixels
  # agree): every pixel whose float32 margin exceeds 10 % of the scale keeps its label.
  scale = np.abs(logits).max()
  assert np.abs(bf_logits - logits).max() <= 0.05 * scale
  top2 = np.sort(logits, -1)[..., -2:]
  clear = top2[..., 1] - top2[..., 0] > 0.1 * scale
  assert clear.mean() > 0.25 and (bf_labels == labels)[clear].all()


def test_onnx_student_equals_the_jax_artifact_at_batch_1_and_3_and_two_sizes(runs):
  from lix_jax.experiments import export
  _, _, student = runs
  onnx_net = export.load(os.path.join(student, "export"), "onnx")
  jax_net = export.load(os.path.join(student, "export"))
  for n, hw in ((1, (64, 192)), (3, (64, 192)), (1, (96, 128)), (3, (96, 128))):
    image = _batch(n, hw, seed=n)
    labels, logits = onnx_net(image)
    ref_labels, ref_logits = (np.asarray(a) for a in jax_net(image))
    assert labels.dtype == np.int32 and logits.dtype == np.float32
    assert labels.shape == (n, *hw) and logits.shape == ref_logits.shape
    assert (labels == ref_labels).mean() >= 0.999, (n, hw, (labels == ref_labels).mean())
    assert np.abs(logits - ref_logits).max() <= 1e-3, (n, hw, np.abs(logits - ref_logits).max())


def test_exported_teacher_takes_rgb_and_raw_depth(runs):
  import jax
  from lix_jax.experiments import export
  from lix_jax.data import geometry
  from lix_jax.train import task as task_lib
  data_dir, teacher, _ = runs
  model, variables = task_lib.load_variables(_config(data_dir), teacher, "teacher")
  image = _batch(2, (64, 96))
  depth = np.random.default_rng(1).uniform(0, 60, (2, 64, 96, 1)).astype(np.float32)
  depth[:, :8] = 0  # missing
  x = np.asarray(geometry.normalize_x(depth, "depth"))
  ref = np.asarray(jax.jit(lambda a, b: model.apply(variables, a, b, train=False)[0])(
      _normalise(image), x))
  labels, logits = export.load(os.path.join(teacher, "export"))(image, depth)
  np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(labels), ref.argmax(-1))
  labels, logits = export.load(os.path.join(teacher, "export", "teacher.onnx"))(image, depth)
  assert np.abs(logits - ref).max() <= 1e-3 and (labels == ref.argmax(-1)).mean() >= 0.999


def _readme_line(mode):
  """The README's command line for `--config.mode=<mode>` (continuation lines joined)."""
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read().replace("\\\n", " ")
  lines = [line for line in text.splitlines()
           if line.startswith("python -m lix_jax.main") and f"--config.mode={mode}" in line]
  assert lines, f"README.md has no mode={mode} line"
  return shlex.split(lines[0])[3:]  # After "python -m lix_jax.main".


def _substitute(args, **values):
  out = []
  for a in args:
    key = a.split("=", 1)[0].lstrip("-")
    out.append(f"--{key}={values[key]}" if key in values else a)
  return out


def test_readme_eval_and_predict_need_no_teacher_and_export_predicts_the_same(runs, tmp_path):
  from PIL import Image
  _, teacher, student = runs
  images = _images(str(tmp_path / "images"))
  hidden = teacher + "_moved"
  os.rename(teacher, hidden)  # The student's config.json names it: it must not be read.
  try:
    proc = run(_substitute(_readme_line("eval"), workdir=student))
    with open(os.path.join(student, "final_metrics.json")) as f:
      miou = json.load(f)["test"]["miou"]
    assert f"test mIoU {100 * miou:.2f} %" in proc.stdout
    run(_substitute(_readme_line("predict"), workdir=student,
                    **{"config.predict.input_dir": images}))
  finally:
    os.rename(hidden, teacher)
  exported_out = str(tmp_path / "from_export")
  proc = run(["--config=configs/synthetic.py", f"--workdir={tmp_path / 'unused'}",
              "--config.mode=predict", f"--config.predict.input_dir={images}",
              f"--config.predict.output_dir={exported_out}",
              f"--config.predict.exported={student}/export/student.jaxexport"],
             python_args=("-c", BLOCKER))
  imported = proc.stdout.split("IMPORTED", 1)[1]
  assert "flax" not in imported and "lix_jax.models" not in imported, imported
  in_process = os.path.join(student, "predictions")
  for name in ("img0.png", "img1.png"):  # Multiples of 32: the same network on the same pixels.
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(exported_out, name))),
                                  np.asarray(Image.open(os.path.join(in_process, name))))
  # 70x100 is padded to 96x128 by the caller with the mean colour (~0 after normalisation, where
  # the network pads with exactly 0): nearly every pixel agrees.
  a, b = (np.asarray(Image.open(os.path.join(d, "img2.png"))) for d in (exported_out, in_process))
  assert a.shape == b.shape == (70, 100, 3)
  assert (a == b).all(-1).mean() >= 0.99
  # The ONNX artifact: onnxruntime, numpy and Pillow (jax blocked), the jax artifact's labels.
  onnx_out = str(tmp_path / "from_onnx")
  proc = run(["--config=configs/synthetic.py", f"--workdir={tmp_path / 'unused'}",
              "--config.mode=predict", f"--config.predict.input_dir={images}",
              f"--config.predict.output_dir={onnx_out}",
              f"--config.predict.exported={student}/export/student.onnx"],
             python_args=("-c", NO_JAX + RUN_MAIN))
  imported = proc.stdout.split("IMPORTED", 1)[1]
  assert "'jax" not in imported and "flax" not in imported, imported
  for name in ("img0.png", "img1.png", "img2.png"):
    a, b = (np.asarray(Image.open(os.path.join(d, name))) for d in (onnx_out, exported_out))
    assert a.shape == b.shape and (a == b).all(-1).mean() >= 0.999, name


def _run_readme_example(heading, student, tmp_path, prelude, page="README.md"):
  """Runs `page`'s Python block after `heading` on a 70x100 frame (not a multiple of 32: the
  example pads) with `prelude` first; returns (the frame, the labels PNG, the imports printed)."""
  from PIL import Image
  with open(os.path.join(REPO, page)) as f:
    text = f.read()
  code = text.split(f"{heading}\n\n```python\n", 1)[1].split("```", 1)[0]
  frame = os.path.join(_images(str(tmp_path), sizes=((70, 100),)), "img0.png")
  code = (code.replace('"workdirs/s/export"', repr(os.path.join(student, "export")))
          .replace('"frame.png"', repr(frame))
          .replace('"frame_labels.png"', repr(str(tmp_path / "labels.png"))))
  proc = run([], python_args=("-c", prelude + code))
  return frame, np.asarray(Image.open(tmp_path / "labels.png")), proc.stdout.split("IMPORTED", 1)[1]


def test_docs_example_segments_an_image_with_jax_numpy_and_pillow(runs, tmp_path):
  _, labels, imported = _run_readme_example("With jax, NumPy and Pillow only:", runs[2], tmp_path,
                                            BLOCK_IMPORTS, page="docs/running.md")
  assert "flax" not in imported
  assert labels.shape == (70, 100, 3)


def test_readme_onnx_example_segments_an_image_with_onnxruntime_numpy_and_pillow(runs, tmp_path):
  from PIL import Image
  from lix_jax.experiments import export
  frame, got, imported = _run_readme_example("In the car, with onnxruntime, NumPy and Pillow only:",
                                             runs[2], tmp_path, NO_JAX)
  assert "'jax" not in imported and got.shape == (70, 100, 3)
  # The same picture as the jax artifact's, through export.segment and meta.json's palette.
  artifact = export.load(os.path.join(runs[2], "export"))
  labels, _ = export.segment(artifact, np.asarray(Image.open(frame)))
  assert (got == artifact.colorize(labels)).all(-1).mean() >= 0.999


def _load_bench():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "bench_inference", os.path.join(REPO, "benchmarks", "inference_bench.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_inference_bench_entries_run_their_labelled_inputs():
  import re
  bench = _load_bench()
  assert bench.padded((375, 1242)) == (384, 1248)  # KITTI: the artifact takes multiples of 32
  tiny = {"backbone": "resnet18", "width": 0.125, "stem": "deep", "decoder_channels": 8}
  nets = {"student": bench.Network("student", tiny, (32, 64), onnx=True),
          "teacher": bench.Network("teacher", dict(tiny, fusion="intermediate"), (32, 64))}
  built = bench.entries(nets, batches=(1, 3))
  assert len({name for name, _, _ in built}) == 6  # + "student onnxruntime B=1 / B=3"
  outputs = {}
  for name, fn, images in built:  # called only once all are built, as `Rounds` does
    batch, h, w = (int(v) for v in re.search(r"B=(\d+) (\d+)x(\d+)", name).groups())
    net = nets[name.split()[0]]
    inputs = list(fn.args[1].values()) if "onnxruntime" in name else fn.args
    assert batch == images and inputs[0].shape == (images, h, w, 3), name
    if name.startswith("teacher"):
      assert inputs[1].shape == (images, h, w, 1), name
    labels, logits = outputs[name] = [np.asarray(a) for a in fn()]
    assert labels.shape == (images, h, w) and logits.shape == (images, h, w, bench.NUM_CLASSES)
    assert net.hw == (h, w) == (32, 64)
  for b in (1, 3):  # The peer runs the same network on the same pixels.
    ort, ref = outputs[f"student onnxruntime B={b} 32x64"], outputs[f"student B={b} 32x64"]
    assert np.abs(ort[1] - ref[1]).max() <= 1e-3 and (ort[0] == ref[0]).mean() >= 0.999
  rounds = bench.Rounds(0)  # The report of one interleaved round (the functions are compiled).
  for name, fn, images in built:
    rounds.add(name, fn, images)
  rounds.run(1)
  text = bench.report("## tiny", nets, {"student": tiny, "teacher": dict(tiny, fusion="x")},
                      rounds, batches=(1, 3))
  for b in (1, 3):
    assert f"| student onnxruntime B={b} 32x64 |" in text and f"| student B={b} 32x64 |" in text
  assert re.search(r"student onnxruntime [\d.]+ \(CPUExecutionProvider\) / jax artifact time: "
                   r"B=1 [\d.]+x, B=3 [\d.]+x", text), text
  assert nets["teacher"].flops_per_image() > nets["student"].flops_per_image() > 0
  assert nets["teacher"].num_params > nets["student"].num_params > 0


def test_stored_config_supplies_what_the_command_line_does_not_set(tmp_path):
  from lix_jax.experiments import pipeline
  stored = _config("/data/of/the/run")
  stored.student.width = 0.5
  stored.data.crop_hw = (32, 96)
  with open(tmp_path / "config.json", "w") as f:
    json.dump(stored.to_dict(), f)
  requested = _config("workdirs/data")  # e.g. the README's default-preset command line
  requested.student.width = 1.0
  requested.eval.split = "validation"
  requested.data.test_split = "mine"
  got = pipeline.stored_run_config(requested, str(tmp_path), overrides={"data.test_split"})
  assert got.student.width == 0.5 and tuple(got.data.crop_hw) == (32, 96)
  assert got.data.data_dir == "/data/of/the/run"
  assert got.data.test_split == "mine" and got.eval.split == "validation"  # not the run's
  assert pipeline.stored_run_config(requested, str(tmp_path / "none")) is requested
