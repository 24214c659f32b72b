"""The benchmark scripts time what their labels say (issue 20).

Each benchmark builds its entries first and calls them later, so a timed callable that closes over
a loop variable (a late-binding lambda) runs every entry at the loop's last value: step_bench timed
"teacher fwd B=16" at B = 32, kr_bench ran "xla block=256" with blocks of 4096. Here every entry of
step_bench, kr_bench and logit_bench is built at toy size, then called once, and what it actually
received (batch size, block size, controller) is compared with its label.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from lix_jax import kernels, kr_fused
from lix_jax.losses import logit
from lix_jax.train import sharding

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load_bench(name):
  spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_step_bench_entries_get_their_labelled_batch():
  sb = load_bench("step_bench")
  config = sb.load_config("tiny")
  config.data.crop_hw = (32, 64)
  b = sb.Bench(config)
  n_lab, n_unl = 2, 3  # entries B=2 and B=5: a mix-up shows
  dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:1]))
  batch = sb.make_batch(n_lab, n_unl, b.hw, b.cx, b.num_classes)
  entries = sb.component_entries(b, dp, batch, n_lab, n_unl, diag_kr_block=64)
  names = [name for name, _, _ in entries]
  assert len(set(names)) == len(names) == 9, names
  for name, fn, images in entries:  # called only once all are built, as `Rounds` does
    label = re.search(r"B=(\d+)(?:\+U=(\d+))?", name)
    if label:
      assert images == int(label[1]) + int(label[2] or 0), name
    if isinstance(fn, sb.Stepper):
      # A Stepper holds the batch it steps on as an attribute, so it cannot late-bind; the steps'
      # compiles (a minute on 2 cores) are left to tests/test_steps.py.
      got = sum(fn.batch[k].shape[0] for k in ("image", "unlabeled_image") if k in fn.batch)
      assert got == images, f"{name!r} steps on {got} images"
      continue
    out = fn()
    if name.startswith("teacher fwd"):  # (logits [B, H, W, K], taps)
      got = out[0].shape[0]
    elif name.startswith("DWLD"):  # gradients w.r.t. the labelled and unlabelled logits
      got = sum(g.shape[0] for g in out[1])
    else:  # ARFD: gradients w.r.t. each adapted tap, all B + U images
      got = {g.shape[0] for g in jax.tree.leaves(out[1])}
      assert len(got) == 1, name
      got = got.pop()
    assert got == images, f"{name!r} ran on {got} images"
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out)), name


def test_kr_bench_cases_run_their_labelled_blocks(monkeypatch):
  kb = load_bench("kr_bench")
  seen = []
  real_xla, real_fused = kernels.kernel_regression, kr_fused.kernel_regression_fused

  def xla(q, k, v, **kw):  # called while `jax.jit` traces the case, i.e. when it runs
    seen.append(("xla", q.shape, k.shape, kw["block_size"]))
    return real_xla(q, k, v, **kw)

  def fused(q, k, v, **kw):
    seen.append(("pallas", q.shape, k.shape, (kw["block_q"], kw["block_k"], kw["num_warps"])))
    return real_fused(q, k, v, **kw)

  monkeypatch.setattr(kernels, "kernel_regression", xla)
  monkeypatch.setattr(kr_fused, "kernel_regression_fused", fused)
  b, n, m, c = 2, 24, 12, 8
  cases = kb.build_cases(c, 1.0, xla_blocks=[4, 16], pallas_blocks=[16], num_warps=[4])
  q, k, mask = kb.make_inputs(b, n, m, c, jnp.float32)
  outs = []
  for name, fn in cases:
    seen.clear()
    outs.append(np.asarray(fn(q, k, mask)))
    assert outs[-1].shape == (b, n, c), name
    if name.startswith("xla"):
      assert seen == [("xla", (n, c), (m, c), int(name.split("=")[1]))], name
    elif "default" in name:
      assert seen == [("pallas", (b, n, c), (b, m, c), (None, None, None))], name
    else:
      bq, bk, nw = map(int, re.findall(r"=(\d+)", name))
      assert seen == [("pallas", (b, n, c), (b, m, c), (bq, bk, nw))], name
    np.testing.assert_allclose(outs[-1], outs[0], rtol=1e-4, atol=1e-5, err_msg=name)
  assert [name for name, _ in cases][:2] == ["xla block=4", "xla block=16"]


def test_logit_bench_entries_use_their_controller(monkeypatch):
  lb = load_bench("logit_bench")
  seen = []
  real = logit.dwld_loss

  def dwld(*args, **kw):
    seen.append(kw["controller"])
    return real(*args, **kw)

  monkeypatch.setattr(logit, "dwld_loss", dwld)
  student, teacher, labels = lb.make_inputs(2, 4, 6, 5)
  entries = lb.loss_entries()
  assert {"ce", "kd", "dkd"} <= set(entries)
  for name, fn in entries.items():
    seen.clear()
    value, grad = jax.jit(jax.value_and_grad(fn))(student, teacher, labels)
    assert np.isfinite(float(value)) and grad.shape == student.shape, name
    controller = re.fullmatch(r"dwld \((\w+)\)", name)
    assert seen == ([controller[1]] if controller else []), name

