"""Every shipped config and sweep resolves: names in registries, keys that exist, taps that exist."""
from __future__ import annotations

import csv
import glob
import json
import importlib.util
import os

import pytest

from lix_jax import data as data_lib
from lix_jax import losses, models
from lix_jax.data import geometry
from lix_jax.models.networks import TAP_STRIDES
from lix_jax import config as config_lib
from lix_jax.experiments import benchmark, pipeline, sweep

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _configs():
  out = []
  for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
    module = _load(path)
    presets = {"synthetic.py": ("", "tiny", "labeled"), "benchmark.py": ("", "headline", "labeled",
               "ablations", "long", "converged")}.get(os.path.basename(path), (None,))
    for preset in presets:
      name = f"{os.path.basename(path)}:{preset}" if preset is not None else os.path.basename(path)
      out.append(pytest.param(module, preset, id=name))
  return out


@pytest.mark.parametrize("module,preset", _configs())
def test_config_names_resolve(module, preset):
  c = module.get_config(preset) if preset is not None else module.get_config()
  assert c.data.name in data_lib.BUILDERS
  assert c.data.x_modality in geometry.MODALITIES
  x_channels = geometry.MODALITIES[c.data.x_modality]
  models.build(c.teacher, num_classes=19, x_channels=x_channels, kind="teacher")
  models.build(c.student, num_classes=19, kind="student")
  for method in (c.distill.method, *c.pipeline.methods):
    losses.get_method(method)
  losses.get_controller(c.distill.controller)
  assert set(c.distill.taps) <= set(TAP_STRIDES), c.distill.taps
  assert len(c.distill.tap_weights) == len(c.distill.taps)
  assert c.parallel.backend in ("shard_map", "pmap")
  assert c.mode in ("train_teacher", "train_student", "distill", "eval", "predict", "pipeline",
                    "benchmark")
  table = benchmark.Table.of(c)
  for name in c.benchmark.rows:  # Every benchmark row builds a student config that resolves.
    row = table.get(name)
    if row.model == "teacher":
      continue
    rc = benchmark.student_config(c, row, 0, "/teacher")
    losses.get_method(rc.distill.method)
    losses.get_controller(rc.distill.controller)
    assert rc.data.x_modality in geometry.MODALITIES and rc.teacher.fusion in ("intermediate", "late")
  for size in (c.train.batch_size, c.train.eval_batch_size, c.distill.unlabeled_batch_size):
    assert size % 8 == 0, "global batch sizes should split over 8 devices"


def test_unknown_preset_lists_the_valid_ones():
  with pytest.raises(KeyError, match="tiny"):
    _load(os.path.join(CONFIG_DIR, "synthetic.py")).get_config("huge")


# Sweep files built from earlier stages' committed tables -> those tables (results/sweeps/), in
# the order they are read.
STAGED = {"recipe_patience_seed0.py": ("recipe_seed0_validation.csv",),
          "recipe_seeds12.py": ("recipe_seed0_validation.csv", "recipe_patience_seed0_validation.csv")}
# Stages that go on bracket by bracket while the table before them is partial.
BRACKETED = {"recipe_patience_seed0.py"}
RESULTS_SWEEPS = os.path.join(CONFIG_DIR, "..", "results", "sweeps")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "sweeps", "*.py"))))
def test_sweep_overrides_name_existing_keys(path):
  base = _load(os.path.join(CONFIG_DIR, "synthetic.py")).get_config("")
  for table in STAGED.get(os.path.basename(path), ()):
    # A later stage reads the committed tables of the earlier ones, in order (its entries are
    # checked on made-up tables in test_recipe.py): until one exists it names it, and while one
    # is partial (committed as its stage runs) it names an entry that has no result yet.
    table = os.path.join(RESULTS_SWEEPS, table)
    if not os.path.exists(table):
      with pytest.raises(FileNotFoundError, match=os.path.basename(table)):
        sweep.load_sweep(path)
      return
    with open(table) as f:
      partial = any(row["val_miou"] == "" for row in csv.DictReader(f))
    if partial and os.path.basename(path) in BRACKETED:
      try:
        sweep.load_sweep(path)
      except ValueError as e:  # Until a bracket has finished; then its entries are checked below.
        assert "no (method, regime) bracket" in str(e)
        return
    elif partial:
      with pytest.raises(ValueError, match="is not finished|is missing"):
        sweep.load_sweep(path)
      return
  for entry in sweep.load_sweep(path):
    c = config_lib.with_overrides(base, entry)
    losses.get_method(c.distill.method)
    losses.get_controller(c.distill.controller)


def test_sweep_override_of_a_missing_key_is_named():
  base = _load(os.path.join(CONFIG_DIR, "synthetic.py")).get_config("")
  with pytest.raises(KeyError, match="distill.kapa"):
    config_lib.with_overrides(base, {"name": "x", "distill.kapa": 1.0})


def test_sweep_reuses_only_entries_with_both_splits_evaluated(tmp_path):
  # pipeline.finished_result decides re-use for sweeps, pipelines and the benchmark alike.
  assert pipeline.finished_result(str(tmp_path)) is None
  metrics = {"step": 5, "validation": {"miou": 0.5}, "test": {"miou": 0.4}}
  (tmp_path / "final_metrics.json").write_text(json.dumps(metrics))
  assert pipeline.finished_result(str(tmp_path)) == metrics
  # An entry whose validation was never written must run again (it re-evaluates on resume).
  (tmp_path / "final_metrics.json").write_text(json.dumps(dict(metrics, validation=None)))
  assert pipeline.finished_result(str(tmp_path)) is None
