"""The patient and consistent teacher's data recipe (issue 33 §1, DESIGN §5, data/recipe.py).

CutMix against a NumPy reference of the paste (box, partner, every array moved together); the
colour jitter against a NumPy reference, touching RGB only; 0 = off is the recipe-off stream
bitwise; per-global-index draws (2 hosts = 1 host, resume exact); evaluation and teachers never see
the recipe; teacher and student receive the same arrays, and the step on recipe batches over 8
devices equals 1 device.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fake_models
from test_pipeline import H, W, MEAN, STD, coord_example, id_source, take

from lix_jax import config as config_lib
from lix_jax import losses
from lix_jax.data import pipeline, recipe
from lix_jax.train import sharding, steps

CROP = (8, 12)
KW = dict(x_modality="depth", crop_hw=CROP, scale_range=(0.3, 0.6), mean=MEAN, std=STD)


def stream(src, *, batch_size=4, seed=3, hosts=(0, 1), **kw):
  index, count = hosts
  return pipeline.train_dataset(src, batch_size=batch_size, seed=seed, shard_index=index,
                                shard_count=count, **dict(KW, **kw))


def holey_source(n):
  """`id_source` (label = example index) with depth holes, so X validity differs from `valid`."""
  src = id_source(n)
  for i, ex in enumerate(src):
    ex["depth"] = np.where((np.arange(W) + i) % 5 == 0, 0, ex["depth"]).astype(np.float32)
  return src


def reference_box(index, seed, prob, hw):
  """DESIGN §5 / recipe docstring: u < prob pastes; area r ~ U(0, 1); top-left uniform inside."""
  rng = np.random.default_rng([seed, index, recipe._CUTMIX_SALT])
  if not rng.random() < prob:
    return None
  r = rng.random()
  bh, bw = round(hw[0] * math.sqrt(r)), round(hw[1] * math.sqrt(r))
  return rng.integers(0, hw[0] - bh + 1), rng.integers(0, hw[1] - bw + 1), bh, bw


@pytest.mark.parametrize("labeled", [True, False])
def test_cutmix_pastes_the_next_image_of_the_global_batch_with_all_its_arrays(labeled):
  src, g, steps_, seed, prob = holey_source(6), 4, 6, 3, 0.6
  off = take(iter(stream(src, batch_size=g, seed=seed, labeled=labeled)), steps_)
  on = take(iter(stream(src, batch_size=g, seed=seed, labeled=labeled, cutmix_prob=prob)), steps_)
  pasted, gained, lost = 0, 0, 0
  rows, cols = np.mgrid[:CROP[0], :CROP[1]]
  for t in range(steps_):
    for r in range(g):
      box = reference_box(t * g + r, seed, prob, CROP)
      partner = (r + 1) % g  # the next row of the same global batch, cyclically
      if box is None:
        mask = np.zeros(CROP, bool)
      else:
        y0, x0, bh, bw = box
        mask = (rows >= y0) & (rows < y0 + bh) & (cols >= x0) & (cols < x0 + bw)
        pasted += 1
      for key in ("image", "x", "label", "valid"):
        m = mask if off[t][key].ndim == 3 else mask[..., None]
        want = np.where(m, off[t][key][partner], off[t][key][r])
        np.testing.assert_array_equal(on[t][key][r], want, err_msg=f"{key} step {t} row {r}")
      gained += np.sum(mask & off[t]["valid"][partner] & ~off[t]["valid"][r])
      lost += np.sum(mask & ~off[t]["valid"][partner] & off[t]["valid"][r])
  assert 0.3 * g * steps_ < pasted < 0.9 * g * steps_
  assert gained and lost  # pasted real pixels became valid, pasted padding stayed invalid
  if labeled:  # the labels in a box are the partner's example index
    assert any(len(np.unique(b["label"][r][b["valid"][r]])) > 1 for b in on for r in range(g))


def reference_jitter(img, inside, b, c, a, hue):
  """Float64 NumPy reference of the recipe's colour jitter (recipe docstring)."""
  grey = lambda z: 0.299 * z[..., 0] + 0.587 * z[..., 1] + 0.114 * z[..., 2]  # noqa: E731
  z = np.clip(img.astype(np.float64) * b, 0, 255)
  z = np.clip(c * z + (1 - c) * grey(z)[inside].mean(), 0, 255)
  z = np.clip(a * z + (1 - a) * grey(z)[..., None], 0, 255)
  yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
  y, i, q = np.moveaxis(z @ yiq.T, -1, 0)
  th = 2 * np.pi * hue
  rotated = np.stack([y, i * np.cos(th) - q * np.sin(th), i * np.sin(th) + q * np.cos(th)], -1)
  return np.clip(np.linalg.solve(yiq, rotated[..., None])[..., 0], 0, 255)


def test_photometric_jitters_rgb_by_the_reference_and_leaves_x_labels_valid():
  ex = coord_example(2, holes=(np.arange(W) % 7 == 0)[None].repeat(H, 0))
  ex["image"] = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
  kw = dict(x_modality="depth", crop_hw=CROP, scale_range=(0.3, 0.6), mean=MEAN, std=STD)
  for seed in range(6):
    on = pipeline.process_example(ex, np.random.default_rng(seed), photometric=0.5, **kw)
    off = pipeline.process_example(ex, np.random.default_rng(seed), **kw)
    for key in ("x", "label", "valid"):
      np.testing.assert_array_equal(on[key], off[key], err_msg=key)
    rng = np.random.default_rng(seed)
    x = pipeline.compute_x(ex, "depth")
    img, *_, inside = pipeline.augment(ex["image"], x, ex["label"], rng, crop_hw=CROP,
                                       scale_range=(0.3, 0.6))
    params = recipe.jitter_params(rng, 0.5)  # drawn after the crop's draws
    want = (reference_jitter(img, inside, *params) - MEAN) / STD * inside[..., None]
    np.testing.assert_allclose(on["image"], want, atol=2e-4)
    assert np.abs(on["image"] - off["image"])[inside].max() > 0.05
    np.testing.assert_array_equal(on["image"][~inside], 0)  # padding stays the mean colour
  draws = np.array([recipe.jitter_params(np.random.default_rng(s), 0.5) for s in range(400)])
  for col, (lo, hi) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
    assert lo <= draws[:, col].min() < lo + 0.02 and hi - 0.02 < draws[:, col].max() <= hi
  with pytest.raises(ValueError, match="data.photometric"):
    stream(holey_source(2), photometric=1.5)


def test_recipe_off_is_the_plain_stream_bitwise():
  src = holey_source(5)
  plain = take(iter(stream(src)), 3)
  zero = take(iter(stream(src, photometric=0.0, cutmix_prob=0.0)), 3)
  for a, b in zip(plain, zero):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  # Strength 0: the crop's normalised pixels, bit for bit, and no draw from the example's rng.
  ex = src[1]
  for seed in range(3):
    out = pipeline.process_example(ex, np.random.default_rng(seed), photometric=0.0, **KW)
    rng = np.random.default_rng(seed)
    img, *_, inside = pipeline.augment(ex["image"], pipeline.compute_x(ex, "depth"), ex["label"],
                                       rng, crop_hw=CROP, scale_range=KW["scale_range"])
    want = (img - np.float32(MEAN)) * (1 / np.float32(STD))
    np.testing.assert_array_equal(out["image"], want * inside[..., None])
  state = rng.bit_generator.state
  assert recipe.color_jitter(img, inside, rng, 0.0) is img
  assert rng.bit_generator.state == state
  views = pipeline.grain.MapDataset.source(src)
  assert recipe.cutmix_dataset(views, global_batch=4, prob=0.0, seed=0) is views


def test_two_hosts_equal_one_host_and_resume_is_exact_with_the_recipe_on():
  src, hosts, b = holey_source(7), 2, 2
  kw = dict(seed=4, photometric=0.5, cutmix_prob=0.7)
  single = take(iter(stream(src, batch_size=hosts * b, **kw)), 5)
  for i in range(hosts):
    local = take(iter(stream(src, batch_size=b, hosts=(i, hosts), **kw)), 5)
    for t in range(5):
      for key in single[t]:
        np.testing.assert_array_equal(local[t][key], single[t][key][i::hosts], err_msg=key)
  it = iter(stream(src, batch_size=hosts * b, **kw))
  take(it, 2)
  state = it.get_state()
  del it
  it2 = iter(stream(src, batch_size=hosts * b, **kw))
  it2.set_state(state)
  for x, y in zip(take(it2, 3), single[2:]):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_evaluation_and_teacher_training_never_see_the_recipe(tmp_path):
  from lix_jax.train import inputs, loop  # noqa: PLC0415

  off = config_lib.base_config()
  off.data.builder_config, off.data.data_dir = "tiny", str(tmp_path)
  off.train.eval_batch_size = off.train.batch_size = off.distill.unlabeled_batch_size = 8
  on = config_lib.with_overrides(off, {"data.photometric": 0.5, "data.cutmix_prob": 1.0})
  dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:1]))
  seen, k = {}, len(inputs.class_names(off))
  for name, config in (("off", off), ("on", on)):
    batches = seen[name] = []

    def eval_fn(variables, batch, batches=batches):
      batches.append(jax.tree.map(np.asarray, batch))
      return jnp.zeros((k, k))

    loop.evaluate(config, dp, eval_fn, None, "validation")
    for role in ("teacher", "student", "distill"):
      iters = inputs.make_train_iters(config, role)
      batches.append(inputs.next_batch(iters))
      iters.clear()
  n_eval = len(seen["off"]) - 3
  for i, (a, b) in enumerate(zip(seen["off"], seen["on"])):
    same = all(np.array_equal(a[k], b[k]) for k in a)
    assert same == (i <= n_eval), f"batch {i} (the last three: teacher, student, distill)"
  # A teacher run is re-used across recipes; a student run is not.
  assert not config_lib.run_config_diff(off.to_dict(), on, "teacher")
  assert len(config_lib.run_config_diff(off.to_dict(), on, "distill")) == 2


def test_a_teacher_trains_with_its_own_recipe_which_is_part_of_its_identity(tmp_path):
  """`teacher.photometric` / `teacher.cutmix_prob` give a teacher run the very batches a student
  run gets from the same values under `data.*`; students never read them; they shape the teacher
  and distillation runs, and a distillation run must name its teacher's (check_teacher)."""
  from lix_jax.train import inputs, task  # noqa: PLC0415

  off = config_lib.base_config()
  off.data.builder_config, off.data.data_dir = "tiny", str(tmp_path)
  off.train.batch_size = off.distill.unlabeled_batch_size = 8
  recipe_values = {"photometric": 0.5, "cutmix_prob": 1.0}
  teacher_on = config_lib.with_overrides(off, {f"teacher.{k}": v for k, v in recipe_values.items()})
  students_on = config_lib.with_overrides(off, {f"data.{k}": v for k, v in recipe_values.items()})

  def first_batch(config, role):
    iters = inputs.make_train_iters(config, role)
    batch = jax.tree.map(np.asarray, inputs.next_batch(iters))
    iters.clear()
    return batch

  plain, teacher = first_batch(off, "teacher"), first_batch(teacher_on, "teacher")
  student = first_batch(students_on, "student")
  assert not np.array_equal(teacher["image"], plain["image"])
  for key in plain:
    np.testing.assert_array_equal(teacher[key], student[key], err_msg=key)
    np.testing.assert_array_equal(first_batch(teacher_on, "student")[key],
                                  first_batch(off, "student")[key], err_msg=key)
  assert config_lib.run_config_diff(off.to_dict(), teacher_on, "teacher") == [
      "teacher.cutmix_prob: 0.0 -> 1.0", "teacher.photometric: 0.0 -> 0.5"]
  assert len(config_lib.run_config_diff(off.to_dict(), teacher_on, "distill")) == 2
  assert not config_lib.run_config_diff(off.to_dict(), teacher_on, "student")
  with pytest.raises(config_lib.ConfigMismatchError, match="teacher.photometric: 0.5 -> 0.0"):
    config_lib.check_teacher(teacher_on.to_dict(), off, where="teachers/t")
  config_lib.check_teacher(off.to_dict() | {"teacher": {k: v for k, v in off.teacher.items()
                                                        if k not in recipe_values}},
                           off, where="a teacher of before these keys")  # Absent = off.
  with pytest.raises(ValueError, match=r"teacher.cutmix_prob=1.5 must be in \[0, 1\]"):
    task.check_config(config_lib.with_overrides(off, {"teacher.cutmix_prob": 1.5}), "teacher")
  task.check_config(config_lib.with_overrides(off, {"teacher.cutmix_prob": 1.5}), "student")


K = 4
DISTILL = dict(config_lib.base_config().distill.to_dict(), taps=("stage3", "decoder"),
               tap_weights=(1.0, 1.0))


class Recorder:
  """Forwards `apply` to a flax module and keeps the positional inputs it was given (tracers)."""

  def __init__(self, module):
    self.module, self.inputs = module, []

  def apply(self, variables, *args, **kw):
    self.inputs.append(args)
    return self.module.apply(variables, *args, **kw)


def recipe_batch(global_batch=8):
  src = holey_source(10)
  kw = dict(batch_size=global_batch, photometric=0.5, cutmix_prob=0.7)
  iters = {"train": iter(stream(src, seed=0, **kw)),
           "unlabeled": iter(pipeline.unlabeled_dataset(src, seed=1, shard_index=0, shard_count=1,
                                                         **dict(KW, **kw)))}
  from lix_jax.train import inputs  # noqa: PLC0415
  return inputs.next_batch(iters)


@pytest.mark.parametrize("unlabeled", [False, True])
def test_teacher_and_student_receive_the_same_recipe_arrays(unlabeled):
  batch = {k: v for k, v in recipe_batch().items() if unlabeled or not k.startswith("unlabeled")}
  student, teacher, adapters, t_vars, state = fake_models.distill_setup(
      fake_models.FakeStudent(K), fake_models.FakeTeacher(K), hw=CROP, taps=DISTILL["taps"],
      learning_rate=0.1)
  s_rec, t_rec = Recorder(student), Recorder(teacher)
  given = {}

  def step(state, batch, t_vars):
    given.update(batch)
    return steps.distill_step(state, batch, t_vars, student=s_rec, teacher=t_rec,
                              adapters=adapters, axis_name=None,
                              distill_loss=losses.make_distill_loss("lix", DISTILL))

  jax.eval_shape(step, state, batch, t_vars)  # traced only: the very same traced arrays
  (t_image, t_x), = t_rec.inputs
  (s_image,), = s_rec.inputs
  assert s_image is t_image
  if not unlabeled:  # the batch's own arrays, untouched between the pipeline and both networks
    assert t_image is given["image"] and t_x is given["x"]
  else:
    assert t_image.shape[0] == 2 * given["image"].shape[0]


def test_distill_step_on_recipe_batches_8_devices_equals_1_device():
  batch = recipe_batch()
  assert not batch["valid"].all() and not batch["unlabeled_valid"].all()
  student, teacher, adapters, t_vars, state = fake_models.distill_setup(
      fake_models.FakeStudent(K), fake_models.FakeTeacher(K), hw=CROP, taps=DISTILL["taps"],
      learning_rate=0.1)
  out = {}
  for n in (1, 8):
    dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:n]))
    step = dp.wrap(functools.partial(steps.distill_step, student=student, teacher=teacher,
                                     adapters=adapters,
                                     distill_loss=losses.make_distill_loss("lix", DISTILL)))
    new_state, metrics = step(dp.replicate(state), dp.shard_batch(batch), dp.replicate(t_vars))
    out[n] = dp.fetch((metrics["loss"], new_state.params))
  np.testing.assert_allclose(out[8][0], out[1][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out[8][1]), jax.tree.leaves(out[1][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_recipe_sweep_covers_the_grid_cheap_entries_first():
  import itertools  # noqa: PLC0415
  import os  # noqa: PLC0415

  from lix_jax.experiments import sweep  # noqa: PLC0415
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "sweeps", "recipe_seed0.py")
  entries = sweep.load_sweep(path)
  base = config_lib.base_config()
  seen = set()
  for e in entries:
    c = config_lib.with_overrides(base, e)  # every override is a config key
    method = c.distill.method if c.mode == "distill" else "ce"
    regime = "unlabeled" if c.mode == "distill" and c.distill.unlabeled_split else "labeled"
    frames = c.distill.unlabeled_batch_size if regime == "unlabeled" else 0
    seen.add((method, regime, c.data.photometric, c.data.cutmix_prob, c.train.num_steps, frames))
  recipes = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)]
  want = {(m, "labeled", *r, 2000, 0) for m, r in itertools.product(("lix", "cwd", "kd", "ce"), recipes)}
  want |= {(m, "unlabeled", *r, 2000, f) for m, r, f in itertools.product(
      ("lix", "cwd", "kd"), recipes, (16, 32))}
  assert seen == want and len(entries) == len(want) == 40
  # The paper's regime first, then the CE student, then 16 frames before 32.
  regimes = [e["name"].split("_s2000")[1] or e["name"].split("_")[1] for e in entries]
  assert regimes == ["labeled"] * 16 + ["_u16"] * 12 + ["_u32"] * 12


def _sweep_file(name: str):
  import os  # noqa: PLC0415

  from lix_jax.experiments import sweep  # noqa: PLC0415
  return sweep.load_module(
      os.path.join(os.path.dirname(__file__), "..", "configs", "sweeps", f"{name}.py"), name)


def _write_sweep_table(path, runs, score) -> None:
  """A `sweep.csv` with the columns the later stages read: `score(run)` per run."""
  import csv  # noqa: PLC0415
  stage1 = _sweep_file("recipe_seed0")
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, ["name", "val_miou"])
    writer.writeheader()
    for run in runs:
      writer.writerow({"name": stage1.entry(*run)["name"], "val_miou": score(run)})


def test_stage1_table_places_each_entry_and_its_share_of_the_gap():
  """docs/benchmark.md's stage-1 table: each finished entry in its (method, regime) row and recipe
  column; the share of the gap against the CE student of the same recipe | of recipe off, where
  those have run."""
  stage1 = _sweep_file("recipe_seed0")
  rows = [{"name": "lix_labeled_photo_s2000", "val_miou": "0.73"},
          {"name": "ce_labeled_photo_s2000", "val_miou": "0.70"},
          {"name": "cwd_labeled_off_s2000", "val_miou": "0.715"},  # No CE student of its recipe yet.
          {"name": "kd_unlabeled_both_s2000_u32", "val_miou": "0.74"},
          {"name": "ce_labeled_both_s2000", "val_miou": "0.72"},
          {"name": "kd_labeled_cutmix_s2000", "val_miou": ""}]  # Not finished.

  def cells(rows):
    lines = stage1.table_markdown(rows, teacher_miou=0.80).splitlines()
    assert lines[0] == "| student | regime | off | photo | cutmix | both |"
    assert len(lines) == 2 + 4 + 3 + 3
    out = {}
    for line in lines[2:]:
      student, regime, *recipes = (c.strip() for c in line.strip("|").split(" | "))
      out[student, regime] = recipes
    return out

  def share(student, ce):
    return f"{100 * (student - ce) / (0.80 - ce):.0f} %"

  table = cells(rows)
  assert table["LIX", "labelled only"] == ["—", f"73.00 ({share(0.73, 0.70)} \\| ?)", "—", "—"]
  assert table["CWD", "labelled only"] == ["71.50", "—", "—", "—"]
  assert table["KD", "labelled only"] == ["—"] * 4
  assert table["CE", "labelled only"] == ["—", "70.00", "—", "72.00"]
  assert table["KD", "+ 32 unlabelled frames"] == ["—", "—", "—", f"74.00 ({share(0.74, 0.72)} \\| ?)"]
  assert table["KD", "+ 16 unlabelled frames"] == ["—"] * 4
  table = cells(rows + [{"name": "ce_labeled_off_s2000", "val_miou": "0.68"},
                        {"name": "lix_labeled_cutmix_s2000", "val_miou": "0.71"}])  # No CE cutmix.
  assert table["LIX", "labelled only"][2] == f"71.00 (? \\| {share(0.71, 0.68)})"
  assert table["LIX", "labelled only"][1] == f"73.00 ({share(0.73, 0.70)} \\| {share(0.73, 0.68)})"
  assert table["CWD", "labelled only"][0] == f"71.50 ({share(0.715, 0.68)} \\| {share(0.715, 0.68)})"
  assert share(0.73, 0.70) != share(0.73, 0.68)


def test_patience_stage_trains_each_winner_and_off_longer(tmp_path):
  """Stage 2 reads stage 1's table: per method and regime its best setting on validation and
  `off`, at 4 000 then 8 000 steps; a bracket with an unfinished stage-1 entry waits (the others
  go on, names unchanged), a missing stage-1 entry is named."""
  stage1, stage2 = _sweep_file("recipe_seed0"), _sweep_file("recipe_patience_seed0")
  winners = {("lix", "labeled"): ("both", 16), ("cwd", "labeled"): ("off", 16),
             ("kd", "labeled"): ("photo", 16), ("ce", "labeled"): ("cutmix", 16),
             ("lix", "unlabeled"): ("both", 32), ("cwd", "unlabeled"): ("off", 16),
             ("kd", "unlabeled"): ("off", 32)}
  table, order = tmp_path / "stage1.csv", stage1.runs()
  _write_sweep_table(table, order, lambda run: 0.9 if winners[run[:2]] == (run[2], run[4])
                     else 0.5 + 0.001 * order.index(run))
  entries = stage2.get_sweep(str(table))
  ce_first = [("ce", "labeled")] + [b for b in winners if b[0] != "ce"]
  want = [stage1.entry(m, r, name, steps, frames) for steps in (4000, 8000)
          for m, r in ce_first for name, frames in dict.fromkeys([winners[m, r], ("off", 16)])]
  assert entries == want and len(entries) == 2 * 12  # `off` won twice: 2 of 14 dropped.
  assert {e["name"] for e in entries} >= {"lix_labeled_both_s4000", "lix_labeled_off_s8000",
                                          "kd_unlabeled_off_s4000_u32", "kd_unlabeled_off_s4000_u16"}
  base = config_lib.base_config()
  for e in entries:
    config_lib.with_overrides(base, e)
  rows = table.read_text().splitlines()
  unfinished = rows[0] + "\n" + "\n".join(r if "cwd_labeled_photo" not in r else r.split(",")[0] + ","
                                           for r in rows[1:]) + "\n"
  table.write_text(unfinished)
  assert stage2.get_sweep(str(table)) == [e for e in want if not e["name"].startswith("cwd_labeled")]
  table.write_text(rows[0] + "\n" + "\n".join(r.split(",")[0] + "," for r in rows[1:]) + "\n")
  with pytest.raises(ValueError, match="no \\(method, regime\\) bracket of recipe_seed0 has finished"):
    stage2.get_sweep(str(table))
  table.write_text("\n".join(r for r in rows if "kd_unlabeled_both_s2000_u32" not in r) + "\n")
  with pytest.raises(ValueError, match="'kd_unlabeled_both_s2000_u32' is missing"):
    stage2.get_sweep(str(table))
  with pytest.raises(FileNotFoundError, match="nowhere.csv"):
    stage2.get_sweep(str(tmp_path / "nowhere.csv"))


def test_stage2_table_follows_each_setting_over_the_schedules(tmp_path):
  """docs/benchmark.md's stage-2 table: a row per bracket setting stage 2 trains, its stage-1 score
  at 2 000 steps then 4 000 and 8 000, each with the share of the gap against the plain CE student
  of that schedule (where it has run)."""
  import csv  # noqa: PLC0415
  stage1, stage2 = _sweep_file("recipe_seed0"), _sweep_file("recipe_patience_seed0")
  table, order = tmp_path / "stage1.csv", stage1.runs()
  # LIX labelled wins with `both`; every other bracket with `off`. CE off scores 0.70.
  _write_sweep_table(table, order, lambda run: 0.9 if run[:3] == ("lix", "labeled", "both")
                     else 0.70 if run[:3] == ("ce", "labeled", "off") else 0.5 + 0.001 * order.index(run)
                     if run[2] != "off" else 0.72)
  with open(table) as f:
    stage1_rows = list(csv.DictReader(f))
  stage2_rows = [{"name": "lix_labeled_both_s4000", "val_miou": "0.75"},
                 {"name": "ce_labeled_off_s4000", "val_miou": "0.71"},
                 {"name": "lix_labeled_off_s8000", "val_miou": "0.74"},
                 {"name": "kd_labeled_off_s4000", "val_miou": ""}]
  lines = stage2.table_markdown(stage1_rows, stage2_rows, 0.80, str(table)).splitlines()
  assert lines[0] == "| student | regime | recipe | 2000 steps | 4000 steps | 8000 steps |"
  rows = {}
  for line in lines[2:]:
    student, regime, recipe, *cells = (c.strip() for c in line.strip("|").split("|"))
    rows[student, regime, recipe] = cells
  assert list(rows)[:3] == [("CE", "labelled only", "off"), ("LIX", "labelled only", "both"),
                            ("LIX", "labelled only", "off")]
  assert len(rows) == 1 + 2 + 1 + 1 + 3  # CE; LIX both and off; CWD, KD off; unlabelled off x3.

  def share(student, ce):
    return f"{100 * (student - ce) / (0.80 - ce):.0f} %"

  assert rows["CE", "labelled only", "off"] == ["70.00", "71.00", "—"]
  assert rows["LIX", "labelled only", "both"] == [f"90.00 ({share(0.9, 0.7)})",
                                                  f"75.00 ({share(0.75, 0.71)})", "—"]
  assert rows["LIX", "labelled only", "off"] == [f"72.00 ({share(0.72, 0.7)})", "—", "74.00"]
  assert rows["KD", "labelled only", "off"] == [f"72.00 ({share(0.72, 0.7)})", "—", "—"]


def test_recipe_teacher_sweep_trains_the_teacher_first_and_its_students_name_it():
  """The teacher lever: a teacher with the `both` recipe, then each student of stage 1's `both`
  entries at 2 000 steps from it; every student's config passes its teacher's check."""
  stage1, lever = _sweep_file("recipe_seed0"), _sweep_file("recipe_teacher_seed0")
  base = config_lib.base_config()
  entries = lever.get_sweep()
  teacher = config_lib.with_overrides(base, entries[0])
  assert teacher.mode == "train_teacher" and teacher.train.num_steps == 4000
  assert (teacher.teacher.photometric, teacher.teacher.cutmix_prob) == (0.5, 0.5)
  twins = [stage1.entry(m, r, "both", 2000) for r in ("labeled", "unlabeled") for m in stage1.METHODS]
  assert [e["name"] for e in entries[1:]] == [t["name"] + "_teacher_both" for t in twins]
  for entry, twin in zip(entries[1:], twins):
    student = config_lib.with_overrides(base, entry)
    assert student.distill.teacher_workdir == f"{lever.WORKDIR}/teacher_both"
    config_lib.check_teacher(teacher.to_dict(), student, where="teacher_both")
    # Apart from the teacher, the twin of stage 1 (plain teacher) is the same run.
    assert config_lib.run_config_diff(config_lib.with_overrides(base, twin).to_dict(), student,
                                      "distill") == ["teacher.cutmix_prob: 0.0 -> 0.5",
                                                     "teacher.photometric: 0.0 -> 0.5"]


def test_seeds_stage_runs_lix_two_best_settings_per_regime_for_every_method(tmp_path):
  """Stage 3 ranks LIX's runs of stages 1 and 2 on seed-0 validation, per regime, and runs the
  two best at seeds 1 and 2 for lix, cwd and kd, with the CE student of each (recipe, steps)."""
  stage1, stage2, stage3 = (_sweep_file(n) for n in ("recipe_seed0", "recipe_patience_seed0",
                                                     "recipe_seeds12"))
  best1 = {("lix", "labeled", "photo", 2000, 16): 0.90, ("lix", "unlabeled", "both", 2000, 32): 0.94}
  _write_sweep_table(tmp_path / "s1.csv", stage1.runs(), lambda run: best1.get(run, 0.5))
  stage2_runs = stage2.runs(str(tmp_path / "s1.csv"))
  best2 = {("lix", "labeled", "photo", 8000, 16): 0.95, ("lix", "unlabeled", "both", 4000, 32): 0.95,
           ("cwd", "labeled", "off", 8000, 16): 0.99}  # Another method's score ranks nothing.
  assert set(best2) <= set(stage2_runs)
  _write_sweep_table(tmp_path / "s2.csv", stage2_runs, lambda run: best2.get(run, 0.5))
  paths = (str(tmp_path / "s1.csv"), str(tmp_path / "s2.csv"))
  assert stage3.chosen_settings(*paths) == {"labeled": [("photo", 8000, 16), ("photo", 2000, 16)],
                                           "unlabeled": [("both", 4000, 32), ("both", 2000, 32)]}
  entries = stage3.get_sweep(*paths)
  assert len(entries) == 2 * (12 + 4)
  names = [e["name"] for e in entries]
  assert names[:3] == ["lix_labeled_photo_s8000_seed1", "cwd_labeled_photo_s8000_seed1",
                       "kd_labeled_photo_s8000_seed1"]
  assert names[12:16] == ["ce_labeled_photo_s8000_seed1", "ce_labeled_photo_s2000_seed1",
                          "ce_labeled_both_s4000_seed1", "ce_labeled_both_s2000_seed1"]
  assert names[16:] == [n.replace("_seed1", "_seed2") for n in names[:16]]
  base = config_lib.base_config()
  for e in entries:
    c = config_lib.with_overrides(base, e)
    seed = int(e["name"][-1])
    assert c.seed == seed
    if c.mode == "distill":
      assert c.distill.teacher_workdir.endswith(f"intermediate_depth_seed{seed}")
  with pytest.raises(FileNotFoundError, match="nowhere.csv"):
    stage3.get_sweep(paths[0], str(tmp_path / "nowhere.csv"))
