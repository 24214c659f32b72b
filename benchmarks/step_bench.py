r"""Distillation step benchmark (DESIGN §8 speed targets, issue 7): is the LIX step near its floor?

In one run, on the same batch and the same (first) device, times every entry below in `--iters`
interleaved rounds after warm-up (each round calls each entry once, `jax.block_until_ready`-ed), so
load that drifts during the run hits all entries alike; medians over rounds are reported:

- teacher forward (eval mode, jitted), student forward+backward (`steps.supervised_step`, as the
  loop builds it: `DataParallel.wrap`, donated state, optimizer update included);
- the full LIX step (`steps.distill_step`, method lix) with and without the unlabelled half-batch;
- DWLD alone (the step's DWLD calls + gradient w.r.t. the logits, at the step's logits shape) and
  ARFD alone (`feature_distill_loss("arfd")` + gradient w.r.t. the adapted taps, at the step's tap
  shapes).

Reports `LIX / (teacher fwd + student fwd/bwd)` (target ≤ 1.25) and `(DWLD + ARFD) / LIX`
(target ≤ 10 %), each the median of its per-round values with their range, so the noise of the
machine shows beside the figure; with unlabelled frames the floor is taken over the same images
(B + U). Then
end-to-end images/s of the training loop fed by `pipeline.train_dataset` over the synthetic `tiny`
source (built in a temp dir) against the step alone, so input stalls show; and a scaling table of
the LIX step on 1, 2, 4, 8 simulated CPU devices at a fixed per-device batch, with the loss of
each n-device step compared with the 1-device step on the same global batch.

Usage (from the repository root):
  python benchmarks/step_bench.py            # configs/synthetic.py default sizes
  python benchmarks/step_bench.py --quick    # fewer iterations, shorter loop
  python benchmarks/step_bench.py --config tiny
  # GPU, KITTI-scale crops with full-width bf16 networks (any config key, literal values):
  python benchmarks/step_bench.py --no_scaling --no_loop --set 'data.crop_hw=(256,768)' \
      --set teacher.width=1.0 --set student.width=1.0 --set teacher.dtype=bfloat16 \
      --set student.dtype=bfloat16
"""
from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  # Before jax is imported: 8 simulated CPU devices for the scaling table.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import ast  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script from a checkout without `pip install .`
  sys.path.insert(0, str(ROOT))

from lix_jax import data as data_lib  # noqa: E402
from lix_jax import config as config_lib, losses, models  # noqa: E402
from lix_jax.data import pipeline  # noqa: E402
from lix_jax.losses import feature  # noqa: E402
from lix_jax.models import networks  # noqa: E402
from lix_jax.train import sharding, state as state_lib, steps  # noqa: E402
from benchmarks.rounds import Rounds  # noqa: E402

X_CHANNELS = {"depth": 1, "disparity": 1, "normal": 3}


def load_config(preset: str):
  spec = importlib.util.spec_from_file_location("synthetic_config", ROOT / "configs" / "synthetic.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def parse_sets(items: list[str]) -> dict:
  """`--set key.sub=value` strings -> {"key.sub": value} (values as Python literals, else strings)."""
  overrides = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"--set {item!r}: expected key=value, e.g. data.crop_hw=(256,768)")
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text  # a bare string such as bfloat16
  return overrides


def random_variables(model, hw, seed=0):
  """`model.init`'s shapes with random values (He-normal kernels); no init compile."""
  return networks.random_variables(model, hw, seed)


def make_batch(n_lab, n_unl, hw, cx, num_classes, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, (n_lab, *hw)).astype(np.int32)
  labels[:, : hw[0] // 8] = 255  # some ignored pixels
  batch = {"image": rng.normal(size=(n_lab, *hw, 3)).astype(np.float32),
           "x": rng.normal(size=(n_lab, *hw, cx)).astype(np.float32), "label": labels}
  if n_unl:
    batch["unlabeled_image"] = rng.normal(size=(n_unl, *hw, 3)).astype(np.float32)
    batch["unlabeled_x"] = rng.normal(size=(n_unl, *hw, cx)).astype(np.float32)
  return batch


def take(batch, n_lab, n_unl):
  out = {k: v[:n_lab] for k, v in batch.items() if not k.startswith("unlabeled_")}
  if n_unl:
    out.update({k: v[:n_unl] for k, v in batch.items() if k.startswith("unlabeled_")})
  return out


class Stepper:
  """Calls a donating `step(state, batch, *extra)` repeatedly, keeping the newest state."""

  def __init__(self, step, dp, host_state, batch, extra=()):
    self.step, self.dp = step, dp
    self.state = dp.replicate(host_state)
    self.batch = dp.shard_batch(batch)
    self.extra = tuple(dp.replicate(e) for e in extra)
    self.metrics = None

  def __call__(self):
    self.state, self.metrics = self.step(self.state, self.batch, *self.extra)
    return self.state, self.metrics


class Bench:
  """Networks, states and step functions of one config."""

  def __init__(self, config):
    self.config = config
    self.hw = tuple(config.data.crop_hw)
    self.cx = X_CHANNELS[config.data.x_modality]
    self.num_classes = len(data_lib.BUILDERS[config.data.name].CLASS_NAMES)
    self.distill_cfg = config.distill.to_dict()
    build = functools.partial(models.build, num_classes=self.num_classes)
    self.teacher = build(config.teacher, x_channels=self.cx, kind="teacher")
    self.student = build(config.student, kind="student", bn_axis_name=sharding.AXIS)
    self.t_vars = random_variables(self.teacher, self.hw, 0)
    s_vars = random_variables(self.student, self.hw, 1)
    taps = list(config.distill.taps)
    _, (_, t_taps) = networks.abstract_init(self.teacher, self.hw)
    _, (_, s_taps) = networks.abstract_init(self.student, self.hw)
    self.adapters = models.Adapters(out_channels={t: int(t_taps[t].shape[-1]) for t in taps})
    a_params = jax.tree.map(np.asarray, jax.jit(self.adapters.init)(
        jax.random.key(2), {t: jnp.zeros(s_taps[t].shape) for t in taps})["params"])
    tx = state_lib.make_optimizer(config.optim, 1000)
    rng = np.zeros((2,), np.uint32)
    self.student_state = state_lib.TrainState.create(
        params=s_vars["params"], batch_stats=s_vars["batch_stats"], tx=tx, rng=rng)
    self.distill_state = state_lib.TrainState.create(
        params={"student": s_vars["params"], "adapters": a_params},
        batch_stats=s_vars["batch_stats"], tx=tx, rng=rng)
    self._distill_fns = {}

  def distill_fn(self, dp):
    """The loop's wrapped LIX step for `dp` (one per mesh, so jit caches by shape)."""
    key = id(dp)
    if key not in self._distill_fns:
      self._distill_fns[key] = dp.wrap(functools.partial(
          steps.distill_step, student=self.student, teacher=self.teacher, adapters=self.adapters,
          distill_loss=losses.make_distill_loss("lix", self.distill_cfg), axis_name=sharding.AXIS))
    return self._distill_fns[key]

  def distill_stepper(self, dp, batch):
    return Stepper(self.distill_fn(dp), dp, self.distill_state, batch, extra=(self.t_vars,))


def table(header, rows):
  print("| " + " | ".join(header) + " |")
  print("|" + "|".join("---" for _ in header) + "|")
  for row in rows:
    print("| " + " | ".join(str(c) for c in row) + " |")
  print()


def per_round(numerator, denominator):
  """Median and (min, max) over rounds of sum(numerator ms) / sum(denominator ms)."""
  values = [sum(n) / sum(d) for n, d in zip(zip(*numerator), zip(*denominator))]
  return statistics.median(values), min(values), max(values)


def component_entries(b: Bench, dp, batch, n_lab, n_unl, diag_kr_block):
  """The component entries of one run: `(name, fn, images)` with `fn()` the timed call.

  Every `fn` binds its inputs when it is made (`functools.partial` or a `Stepper`), never through
  a closure over a loop variable: entries are called only after all of them are built, so a
  late-binding lambda would time every "B=16" entry at the last batch size of the loop.
  """
  cfg = b.distill_cfg
  entries = []

  def record(name, fn, images):
    entries.append((name, fn, images))

  teacher_fwd = jax.jit(lambda v, i, x: b.teacher.apply(v, i, x, train=False))
  t_vars = jax.device_put(b.t_vars, dp.mesh.devices.flat[0])
  sup = dp.wrap(functools.partial(steps.supervised_step, model=b.student, uses_x=False,
                                  axis_name=sharding.AXIS))
  both = {"image": np.concatenate([batch["image"], batch.get("unlabeled_image", batch["image"])]),
          "x": np.concatenate([batch["x"], batch.get("unlabeled_x", batch["x"])])}
  for n in sorted({n_lab, n_lab + n_unl}):
    img, x = jnp.asarray(both["image"][:n]), jnp.asarray(both["x"][:n])
    record(f"teacher fwd (eval) B={n}", functools.partial(teacher_fwd, t_vars, img, x), n)
    labels = np.concatenate([batch["label"]] * -(-n // n_lab))[:n]  # U may exceed B
    stepper = Stepper(sup, dp, b.student_state, {"image": both["image"][:n], "label": labels})
    record(f"student fwd+bwd (supervised_step) B={n}", stepper, n)
  record(f"LIX step B={n_lab}", b.distill_stepper(dp, take(batch, n_lab, 0)), n_lab)
  if n_unl:
    record(f"LIX step B={n_lab}+U={n_unl}", b.distill_stepper(dp, batch), n_lab + n_unl)

  # DWLD alone: the step's DWLD calls (labelled, and unlabelled with teacher targets) + grad.
  rng = np.random.default_rng(5)
  shape = (n_lab, *b.hw, b.num_classes)
  s_l, t_l = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))
  s_u, t_u = (jnp.asarray(rng.normal(size=(n_unl, *shape[1:])), jnp.float32) for _ in range(2))
  labels = jnp.asarray(batch["label"][:n_lab])
  dwld = losses.make_distill_loss("dwld", cfg).logit  # The step's DWLD, hyper-parameters bound.

  # Teacher logits and labels are arguments, not closed-over constants (XLA would fold them).
  def dwld_loss(s_l, s_u, t_l, t_u, labels):
    loss = dwld(s_l, t_l, labels, axis_name=None)[0]
    if n_unl:
      targets = losses.teacher_targets(t_u, jnp.ones(t_u.shape[:-1], bool))
      loss = loss + dwld(s_u, t_u, targets, axis_name=None)[0]
    return loss

  dwld_grad = jax.jit(jax.value_and_grad(dwld_loss, argnums=(0, 1)))
  record("DWLD + grad (step's logits)", functools.partial(dwld_grad, s_l, s_u, t_l, t_u, labels),
         n_lab + n_unl)

  # ARFD alone: feature loss + grad on adapted taps of the step's shapes (all B + U images).
  _, (_, t_taps) = networks.abstract_init(b.teacher, b.hw, n_lab + n_unl)
  taps = list(cfg["taps"])
  a_feats = {t: jnp.asarray(rng.normal(size=t_taps[t].shape), jnp.float32) for t in taps}
  t_feats = {t: jnp.asarray(rng.normal(size=t_taps[t].shape), jnp.float32) for t in taps}
  arfd = losses.make_distill_loss("arfd", cfg).feature
  arfd_grad = jax.jit(jax.value_and_grad(lambda a, t: arfd(a, t, axis_name=None)[0]))
  record("ARFD + grad (step's taps)", functools.partial(arfd_grad, a_feats, t_feats),
         n_lab + n_unl)
  # Diagnostic: the same ARFD with another kernel-regression block (256: cache-sized on CPU;
  # on a GPU a few large blocks beat many small sequential ones).
  kw = {k: cfg[k] for k in ("sigma", "mix", "lambda_kr", "lambda_cka", "kernel", "stride",
                            "cka_max_pixels")}
  weights = cfg.get("tap_weights") or [1.0] * len(taps)
  arfd_diag = jax.jit(jax.value_and_grad(lambda a, t: sum(
      w * feature.arfd_loss(a[k], t[k], block_size=diag_kr_block, **kw)[0]
      for k, w in zip(taps, weights))))
  record(f"ARFD + grad, KR block_size={diag_kr_block} (diagnostic)",
         functools.partial(arfd_diag, a_feats, t_feats), n_lab + n_unl)
  return entries


def component_timings(b: Bench, dp, batch, n_lab, n_unl, warmup, iters, diag_kr_block):
  """The component entries of one run, timed in `iters` interleaved rounds."""
  timer = Rounds(warmup)
  for name, fn, images in component_entries(b, dp, batch, n_lab, n_unl, diag_kr_block):
    timer.add(name, fn, images)
  timer.run(iters)
  return timer


def loop_throughput(b: Bench, dp, n_lab, n_unl, num_steps, warmup):
  """Images/s: loop with the grain pipeline (tiny source in a temp dir) vs the step alone."""
  c = b.config
  common = dict(x_modality=c.data.x_modality, crop_hw=b.hw, scale_range=tuple(c.data.scale_range),
                flip=c.data.flip, num_threads=c.data.num_threads, num_workers=c.data.num_workers)
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    get = lambda split: data_lib.get_source(c.data.name, split, data_dir=tmp, builder_config="tiny")
    iters = {"train": iter(pipeline.train_dataset(get("train"), batch_size=n_lab, seed=0, **common))}
    if n_unl:
      iters["unlabeled"] = iter(pipeline.unlabeled_dataset(get("unlabeled"), batch_size=n_unl,
                                                           seed=1, **common))
    build_s = time.perf_counter() - t0

    def next_batch():  # What train.inputs.next_batch hands the step, padding masks included.
      batch = {k: v for k, v in next(iters["train"]).items()
               if k in ("image", "x", "label", "valid")}
      if n_unl:
        u = next(iters["unlabeled"])
        batch["unlabeled_image"], batch["unlabeled_x"] = u["image"], u["x"]
        batch["unlabeled_valid"] = u["valid"]
      return batch

    step = b.distill_fn(dp)
    state = dp.replicate(b.distill_state)
    t_vars = dp.replicate(b.t_vars)
    for _ in range(warmup):  # compile (cached from the component table) and fill prefetch
      state, metrics = step(state, dp.shard_batch(next_batch()), t_vars)
    jax.block_until_ready(metrics)
    # Steady state, past the prefetch buffer: several times the loop's number of batches.
    data_batches = 3 * num_steps + 8
    t0 = time.perf_counter()
    for _ in range(data_batches):
      next_batch()
    data_s = (time.perf_counter() - t0) * num_steps / data_batches
    t0 = time.perf_counter()
    for _ in range(num_steps):  # as in loop.train: no sync per step
      state, metrics = step(state, dp.shard_batch(next_batch()), t_vars)
    jax.block_until_ready((state, metrics))
    loop_s = time.perf_counter() - t0
    iters.clear()  # Iterators alive at exit print noise (STACK_FACTS §2).
  images = num_steps * (n_lab + n_unl)
  return build_s, images / data_s, images / loop_s


def scaling(b: Bench, one, batch, per_lab, per_unl, warmup, iters, check):
  """Rows: LIX step on n = 1, 2, 4, 8 CPU devices at fixed per-device batch; loss vs 1 device.

  `one` is the 1-device CPU `DataParallel` (the component table's, so its compiled step is reused).
  """
  cpus = jax.devices("cpu")
  rows = []
  for n in (1, 2, 4, 8):
    if n > len(cpus):
      rows.append((n, "-", "-", "-", f"only {len(cpus)} CPU devices", "-"))
      continue
    dp = one if n == 1 else sharding.DataParallel(sharding.make_mesh(cpus[:n]))
    gb = take(batch, n * per_lab, n * per_unl)
    timer = Rounds(warmup)
    timer.add(n, b.distill_stepper(dp, gb), n * (per_lab + per_unl))
    timer.run(iters)
    ms = timer.median(n)
    # The loss is that of the step's input state (the first call); rerun from the initial state.
    loss_n = float(dp.fetch(b.distill_stepper(dp, gb)()[1])["loss"])
    agree = "(reference)"
    if n > 1 and check:
      loss_1 = float(one.fetch(b.distill_stepper(one, gb)()[1])["loss"])
      agree = f"{abs(loss_n - loss_1) / abs(loss_1):.1e} rel"
    images = n * (per_lab + per_unl)
    rows.append((n, f"{per_lab}+{per_unl}", f"{ms:.1f}", f"{1e3 * images / ms:.0f}",
                 f"{loss_n:.6f}", agree))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="", help="preset of configs/synthetic.py ('' = default)")
  parser.add_argument("--quick", action="store_true", help="fewer iterations, shorter loop")
  parser.add_argument("--iters", type=int, default=None, help="timed calls per entry")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override, e.g. --set 'data.crop_hw=(256,768)' (repeatable)")
  parser.add_argument("--no_loop", action="store_true",
                      help="skip the end-to-end loop (its tiny source has 64x192 images)")
  parser.add_argument("--diag_kr_block", type=int, default=256,
                      help="kernel-regression block of the diagnostic ARFD row")
  parser.add_argument("--no_scaling", action="store_true")
  parser.add_argument("--no_scaling_check", action="store_true",
                      help="skip the 1-device reference runs of the scaling table (fewer compiles)")
  args = parser.parse_args()
  iters = args.iters or (3 if args.quick else 10)
  warmup = 1 if args.quick else 2
  # The sweep runner's override (unknown keys raise, naming them).
  config = config_lib.with_overrides(load_config(args.config), parse_sets(args.set))
  if config.data.num_workers:
    from absl import flags  # pylint: disable=g-import-not-at-top
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read an absl flag
  b = Bench(config)
  n_lab = config.train.batch_size
  n_unl = config.distill.unlabeled_batch_size if config.distill.unlabeled_split else 0
  n_unl = n_unl or n_lab  # the labelled-only preset still times an unlabelled half-batch
  print(f"devices: {len(jax.devices())} x {jax.devices()[0].device_kind} ({jax.default_backend()})"
        f", cpu count {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
  print(f"config: synthetic.py:{args.config or 'default'} teacher {config.teacher.backbone} "
        f"x{config.teacher.width} ({config.teacher.fusion}), student {config.student.backbone} "
        f"x{config.student.width}, {b.hw[0]}x{b.hw[1]}, K={b.num_classes}, B={n_lab}, U={n_unl}, "
        f"taps {list(config.distill.taps)}, kernel {config.distill.kernel}, "
        f"controller {config.distill.controller} (kappa {config.distill.kappa}), "
        f"lambda_kr {config.distill.lambda_kr}, lambda_cka {config.distill.lambda_cka}, "
        f"KR block {config.distill.kr_block_size}, data threads {config.data.num_threads} / "
        f"workers {config.data.num_workers}, "
        f"{iters} interleaved rounds after {warmup} warm-up calls\n")
  dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:1]))
  batch = make_batch(n_lab, n_unl, b.hw, b.cx, b.num_classes)

  timer = component_timings(b, dp, batch, n_lab, n_unl, warmup, iters, args.diag_kr_block)
  print(f"### Components (1 device, median of {iters} interleaved rounds; "
        f"load avg {os.getloadavg()[0]:.1f} at the end)\n")
  table(("entry", "images", "median ms", "images/s", "first call s"), timer.rows())
  ratio_rows = []
  for u in sorted({0, n_unl}):
    n, batch_name = n_lab + u, f"B={n_lab}" + (f"+U={u}" if u else "")
    lix = f"LIX step {batch_name}"
    floor = [f"teacher fwd (eval) B={n}", f"student fwd+bwd (supervised_step) B={n}"]
    ratio, low, high = per_round([timer.ms[lix]], [timer.ms[f] for f in floor])
    ratio_rows.append((batch_name, f"{timer.median(lix):.1f}",
                       f"{sum(timer.median(f) for f in floor):.1f}",
                       f"{ratio:.2f} [{low:.2f}-{high:.2f}] {'ok' if ratio <= 1.25 else 'MISSED'}",
                       "-"))
  lix = f"LIX step B={n_lab}+U={n_unl}"
  share, low, high = per_round([timer.ms["DWLD + grad (step's logits)"],
                                timer.ms["ARFD + grad (step's taps)"]], [timer.ms[lix]])
  ratio_rows[-1] = ratio_rows[-1][:4] + (
      f"{100 * share:.1f} % [{100 * low:.1f}-{100 * high:.1f}] "
      f"{'ok' if share <= 0.10 else 'MISSED'}",)
  print("### Targets (DESIGN §8; median over rounds [min-max])\n")
  table(("LIX step", "LIX ms", "teacher fwd + student fwd/bwd ms", "ratio (≤ 1.25)",
         "(DWLD + ARFD) / LIX (≤ 10 %)"), ratio_rows)

  if not args.no_loop:
    loop_steps = 4 if args.quick else 20
    build_s, data_ips, loop_ips = loop_throughput(b, dp, n_lab, n_unl, loop_steps, warmup=2)
    step_ips = 1e3 * (n_lab + n_unl) / timer.median(lix)
    print(f"### Training loop end to end (tiny source built in {build_s:.1f} s; {loop_steps} steps)\n")
    table(("what", "images/s"), [("data pipeline alone (next batch)", f"{data_ips:.0f}"),
                                 ("loop: data + shard_batch + LIX step", f"{loop_ips:.0f}"),
                                 ("LIX step alone (same batch shape)", f"{step_ips:.0f}"),
                                 ("loop / step", f"{loop_ips / step_ips:.2f}")])

  if not args.no_scaling:
    per_lab, per_unl = max(1, n_lab // 8), max(1, n_unl // 8)
    one = dp if jax.default_backend() == "cpu" else sharding.DataParallel(
        sharding.make_mesh(jax.devices("cpu")[:1]))
    rows = scaling(b, one, make_batch(8 * per_lab, 8 * per_unl, b.hw, b.cx, b.num_classes, seed=1),
                   per_lab, per_unl, warmup, iters, check=not args.no_scaling_check)
    print("### Scaling: LIX step on n simulated CPU devices, fixed per-device batch\n")
    table(("devices", "per-device B+U", "median ms", "images/s", "loss",
           "loss vs 1 device, same global batch"), rows)


if __name__ == "__main__":
  main()
