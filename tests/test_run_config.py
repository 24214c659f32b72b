"""Which config changes a run may survive (DESIGN §6): resume, re-use, refuse, start over.

Unit level: `lix_jax.config.run_config_diff` / `check_same_run`, `pipeline.finished_result`,
`reliability.keep_log_until` / `move_to_previous`, `ckpt_checks.state_mismatch`. The CLI cases
(a changed width or learning rate through `python -m lix_jax.main`) are in test_reliability.py.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lix_jax import config as config_lib
from lix_jax.config import base_config
from lix_jax.experiments import pipeline
from lix_jax.train import checkpoint, ckpt_checks, reliability


def _stored(config) -> dict:
  """What `config.json` holds: the JSON round trip (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict(), default=list))


@pytest.mark.parametrize("key,value,role", [
    ("student.width", 0.5, "student"),
    ("optim.learning_rate", 1e-2, "student"),
    ("seed", 3, "teacher"),
    ("train.batch_size", 32, "distill"),
    ("data.crop_hw", (32, 96), "teacher"),
    ("distill.lambda_l", 2.0, "distill"),
    ("distill.controller", "dynamic", "distill"),
    ("teacher.width", 0.5, "distill"),
])
def test_a_change_that_shapes_the_run_is_named(key, value, role):
  base = base_config()
  changed = config_lib.with_overrides(base, {key: value})
  diffs = config_lib.run_config_diff(_stored(base), changed, role)
  assert len(diffs) == 1 and diffs[0].startswith(f"{key}: ")
  with pytest.raises(config_lib.ConfigMismatchError, match=key.replace(".", r"\.")) as e:
    config_lib.check_same_run(_stored(base), changed, role, where="/w")
  assert "\n" not in str(e.value) and "/w" in str(e.value)
  assert "train.restart=True" in str(e.value)


@pytest.mark.parametrize("key,value", [
    ("train.num_steps", 10_000), ("train.log_every", 1), ("train.eval_every", 7),
    ("train.ckpt_every", 3), ("data.data_dir", "/elsewhere"), ("data.root", "/kitti"),
    ("distill.teacher_workdir", "/moved/teacher"), ("parallel.backend", "pmap"),
    ("train.restart", True), ("mode", "distill"), ("pipeline.methods", ("lix",)),
    ("data.num_threads", 16),
])
def test_extending_or_observing_a_run_is_not_a_difference(key, value):
  base = base_config()
  changed = config_lib.with_overrides(base, {key: value})
  for role in ("teacher", "student", "distill"):
    assert config_lib.run_config_diff(_stored(base), changed, role) == []


def test_only_the_sections_a_role_reads_are_compared():
  base = base_config()
  changed = config_lib.with_overrides(base, {"distill.kappa": -2.0, "student.width": 0.5})
  assert config_lib.run_config_diff(_stored(base), changed, "teacher") == []
  assert [d.split(":")[0] for d in config_lib.run_config_diff(_stored(base), changed, "student")] \
      == ["student.width"]
  assert [d.split(":")[0] for d in config_lib.run_config_diff(_stored(base), changed, "distill")] \
      == ["distill.kappa", "student.width"]


def test_a_key_missing_from_an_old_config_counts_as_its_default():
  base = base_config()
  stored = _stored(base)
  del stored["student"]["pretrained"]  # Written before the key existed.
  assert config_lib.run_config_diff(stored, base, "student") == []
  changed = config_lib.with_overrides(base, {"student.pretrained": "/w/r18.safetensors"})
  assert config_lib.run_config_diff(stored, changed, "student") == [
      'student.pretrained: "" -> "/w/r18.safetensors"']


def test_with_overrides_copies_and_names_unknown_keys():
  base = base_config()
  c = config_lib.with_overrides(base, {"name": "x", "distill.kappa": -1.0})
  assert c.distill.kappa == -1.0 and base.distill.kappa == 4.0
  with pytest.raises(KeyError, match="distill.kapa"):
    config_lib.with_overrides(base, {"distill.kapa": 1.0})
  with pytest.raises(KeyError, match="nosection"):
    config_lib.with_overrides(base, {"nosection.x": 1.0})


def _finished_run(path, config, step=800):
  metrics = {"step": step, "validation": {"miou": 0.5}, "test": {"miou": 0.4}}
  (path / "final_metrics.json").write_text(json.dumps(metrics))
  stored = _stored(config)
  stored["train"]["num_steps"] = step
  (path / "config.json").write_text(json.dumps(stored))
  return metrics


def test_a_finished_run_is_reused_only_for_the_same_config(tmp_path):
  base = base_config()
  metrics = _finished_run(tmp_path, base)
  assert pipeline.finished_result(str(tmp_path), base, "distill") == metrics
  # Observing keys may differ; a loss weight may not (the old student is never handed back).
  assert pipeline.finished_result(
      str(tmp_path), config_lib.with_overrides(base, {"train.log_every": 1}), "distill") == metrics
  with pytest.raises(config_lib.ConfigMismatchError, match=r"distill\.lambda_f: 1\.0 -> 2\.0"):
    pipeline.finished_result(str(tmp_path), config_lib.with_overrides(
        base, {"distill.lambda_f": 2.0}), "distill")
  # More steps than were run: not finished (training extends it); restart: never re-used.
  assert pipeline.finished_result(
      str(tmp_path), config_lib.with_overrides(base, {"train.num_steps": 1600}), "distill") is None
  assert pipeline.finished_result(
      str(tmp_path), config_lib.with_overrides(base, {"train.restart": True}), "distill") is None


def test_a_finished_run_without_its_config_is_not_reused_blindly(tmp_path):
  base = base_config()
  _finished_run(tmp_path, base)
  os.remove(tmp_path / "config.json")
  with pytest.raises(config_lib.ConfigMismatchError, match="without config.json"):
    pipeline.finished_result(str(tmp_path), base, "student")


def test_log_lines_past_the_resumed_step_are_moved_not_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": s, "loss": float(s)}) + "\n" for s in (1, 2, 3, 4)]
  path.write_text("".join(lines) + '{"step": 5, "lo')  # A line torn by a kill.
  side = reliability.keep_log_until(str(path), 2)
  assert path.read_text() == "".join(lines[:2])
  assert side == str(tmp_path / "metrics.after_2.jsonl")
  assert open(side).read() == "".join(lines[2:]) + '{"step": 5, "lo\n'
  # A second resume from the same step appends; nothing past it: no side file is touched.
  path.write_text("".join(lines[:3]))
  reliability.keep_log_until(str(path), 2)
  assert open(side).read().count('"step": 3') == 2
  assert reliability.keep_log_until(str(path), 2) is None


def test_restart_moves_the_run_to_previous(tmp_path):
  for name in ("checkpoints/8", "tb"):
    os.makedirs(tmp_path / name)
  for name in ("metrics.jsonl", "config.json", "final_metrics.json", "metrics.after_3.jsonl",
               "results.md"):
    (tmp_path / name).write_text("x")
  assert reliability.has_run(str(tmp_path))
  target = reliability.move_to_previous(str(tmp_path))
  assert os.path.basename(target).startswith("previous_")
  assert sorted(os.listdir(target)) == ["checkpoints", "config.json", "final_metrics.json",
                                        "metrics.after_3.jsonl", "metrics.jsonl", "tb"]
  assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(target), "results.md"])
  assert not reliability.has_run(str(tmp_path))
  assert reliability.move_to_previous(str(tmp_path)) is None


def test_state_mismatch_names_the_leaf(tmp_path):
  import orbax.checkpoint as ocp  # noqa: PLC0415
  state = {"params": {"conv": {"kernel": jnp.ones((3, 3, 4, 8))}}, "step": jnp.int32(0),
           "opt_state": ({"mu": {"conv": jnp.zeros((3, 3, 4, 8))}}, None),
           "rng": jax.random.key(0)}
  with checkpoint.Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
    ckpt.save(1, state)
  with ocp.PyTreeCheckpointer() as reader:
    tree = reader.metadata(str(tmp_path / "ckpt" / "1" / "state")).item_metadata.tree
  abstract = lambda s: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), s)  # noqa: E731
  assert ckpt_checks.state_mismatch(tree, abstract(state)) is None
  wider = jax.tree.map(lambda x: x, state)
  wider["params"]["conv"]["kernel"] = jnp.ones((3, 3, 4, 16))
  assert ckpt_checks.state_mismatch(tree, abstract(wider)) == \
      "params/conv/kernel has shape [3, 3, 4, 8], requested [3, 3, 4, 16]"
  more = dict(state, params={"conv": dict(state["params"]["conv"], bias=jnp.zeros(8))})
  assert "params/conv/bias is missing from the checkpoint" in ckpt_checks.state_mismatch(
      tree, abstract(more))
  # Restoring it raises StateMismatchError (a config error), and skips nothing.
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    with pytest.raises(ckpt_checks.StateMismatchError, match="params/conv/kernel"):
      ckpt.restore_latest(abstract(wider))
    assert ckpt.skipped == [] and ckpt.all_steps() == [1]
    restored, step = ckpt.restore_latest(abstract(state))
  assert step == 1 and np.array_equal(restored["params"]["conv"]["kernel"], np.ones((3, 3, 4, 8)))


def test_progress_line_for_logs_without_a_terminal():
  from lix_jax.train import loop  # noqa: PLC0415
  line = loop.progress_line("distill", 50, 800, {"loss": 1.23456, "images_per_s": 123.4},
                            start_step=0, elapsed_s=100.0)
  # 50 steps in 100 s -> 750 steps left take 1 500 s.
  assert line == "distill step 50/800 (6 %) loss 1.2346 images/s 123 ETA 0:25:00"
  resumed = loop.progress_line("teacher", 410, 800, {"loss": float("nan")}, start_step=400,
                               elapsed_s=5.0)
  assert resumed == "teacher step 410/800 (51 %) loss nan images/s 0 ETA 0:03:15"


def test_a_teacher_of_another_config_is_named():
  base = base_config()
  # Only the teacher network and the data it reads count (its ImageNet path is an initialisation).
  config_lib.check_teacher(_stored(base), config_lib.with_overrides(
      base, {"student.width": 0.5, "distill.kappa": 1.0, "teacher.pretrained": "/w.safetensors"}),
      where="/t")
  with pytest.raises(config_lib.ConfigMismatchError,
                     match=r"data\.x_modality: \"depth\" -> \"normal\"; teacher\.width: 0\.25 -> 0\.5"):
    config_lib.check_teacher(_stored(base), config_lib.with_overrides(
        base, {"teacher.width": 0.5, "data.x_modality": "normal"}), where="/t")


def test_sweep_table_is_written_after_every_entry_and_finished_entries_are_reused(tmp_path):
  """A long sweep has its `sweep.csv` while it runs: rewritten after each entry that ran, with the
  rows of unfinished entries empty; an interrupted sweep runs only what is not finished."""
  import csv

  from lix_jax.experiments import sweep

  sweep_file = tmp_path / "s.py"
  sweep_file.write_text('def get_sweep():\n  return [{"name": f"e{i}", "distill.kappa": float(i)}'
                        ' for i in (1, 2, 3)]\n')
  base, workdir = config_lib.with_overrides(base_config(), {"mode": "distill"}), tmp_path / "sweep"
  tables, ran = [], []

  def dispatch(config, entry_dir):  # A finished run, as the trainer leaves it.
    ran.append(os.path.basename(entry_dir))
    if os.path.exists(workdir / "sweep.csv"):
      with open(workdir / "sweep.csv") as f:
        tables.append([r["val_miou"] for r in csv.DictReader(f)])
    if ran == ["e1", "e2"]:
      raise KeyboardInterrupt  # The sweep is stopped in its second entry.
    os.makedirs(entry_dir)
    reliability.write_config(entry_dir, _stored(config))
    miou = config.distill.kappa / 10
    reliability.write_json(os.path.join(entry_dir, "final_metrics.json"), {
        "step": config.train.num_steps, "validation": {"miou": miou, "pixel_acc": 0.9},
        "test": {"miou": 0.0}})

  with pytest.raises(KeyboardInterrupt):
    sweep.run_sweep(base, str(sweep_file), str(workdir), index=None, dispatch=dispatch)
  rows = sweep.run_sweep(base, str(sweep_file), str(workdir), index=None, dispatch=dispatch)
  assert ran == ["e1", "e2", "e2", "e3"]  # e1 is re-used, not run again.
  # Read at the start of each dispatch: nothing before e1; e1 only before e2, twice; e1, e2 before e3.
  assert tables == [["0.1", "", ""], ["0.1", "", ""], ["0.1", "0.2", ""]]
  assert [r["val_miou"] for r in rows] == [0.1, 0.2, 0.3]


def _finishing_dispatch(ran: list[str]):
  """A dispatch that leaves a finished run (validation mIoU = kappa / 10) and records its name."""
  def dispatch(config, entry_dir):
    ran.append(os.path.basename(entry_dir))
    os.makedirs(entry_dir)
    reliability.write_config(entry_dir, _stored(config))
    reliability.write_json(os.path.join(entry_dir, "final_metrics.json"), {
        "step": config.train.num_steps, "test": {"miou": 0.0},
        "validation": {"miou": config.distill.kappa / 10, "pixel_acc": 0.9,
                       "iou/road": config.distill.kappa / 20}})
  return dispatch


def _three_entry_sweep(tmp_path):
  sweep_file = tmp_path / "s.py"
  sweep_file.write_text('def get_sweep():\n  return [{"name": f"e{i}", "distill.kappa": float(i)}'
                        ' for i in (1, 2, 3)]\n')
  return config_lib.with_overrides(base_config(), {"mode": "distill"}), str(sweep_file)


def test_sweep_workers_pass_over_an_entry_another_process_is_running(tmp_path):
  """Two workers on one workdir split the entries: an entry whose claim another process holds is
  passed over (an error for --sweep_index), and a killed worker's claim is free again."""
  import subprocess
  import sys

  from lix_jax.experiments import sweep

  base, sweep_file = _three_entry_sweep(tmp_path)
  workdir = tmp_path / "sweep"
  os.makedirs(workdir / ".claims")
  holder = subprocess.Popen(  # Another worker, in the middle of entry e2.
      [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'w'); "
       "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
       str(workdir / ".claims" / "e2")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    ran = []
    rows = sweep.run_sweep(base, sweep_file, str(workdir), index=None,
                           dispatch=_finishing_dispatch(ran))
    assert ran == ["e1", "e3"]
    assert [r["val_miou"] for r in rows] == [0.1, "", 0.3]
    with pytest.raises(RuntimeError, match=r"'e2' is being run by another process.*claims/e2"):
      sweep.run_sweep(base, sweep_file, str(workdir), index=1, dispatch=_finishing_dispatch(ran))
  finally:
    holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the lock.
    holder.wait()
  # --sweep_collect: the table of what has finished; e2 is free and unfinished, and still not run.
  (workdir / "sweep.csv").unlink()
  rows = sweep.run_sweep(base, sweep_file, str(workdir), index=None, collect_only=True,
                         dispatch=_finishing_dispatch(ran))
  assert ran == ["e1", "e3"] and [r["val_miou"] for r in rows] == [0.1, "", 0.3]
  assert (workdir / "sweep.csv").exists()
  with pytest.raises(ValueError, match="--sweep_index=1 runs one entry and --sweep_collect"):
    sweep.run_sweep(base, sweep_file, str(workdir), index=1, collect_only=True,
                    dispatch=_finishing_dispatch(ran))
  rows = sweep.run_sweep(base, sweep_file, str(workdir), index=None, dispatch=_finishing_dispatch(ran))
  assert ran == ["e1", "e3", "e2"]
  assert [r["val_miou"] for r in rows] == [0.1, 0.2, 0.3]


def test_sweep_results_from_elsewhere_are_not_run_again_and_fill_the_table(tmp_path):
  """--sweep_results: a fresh machine resumes a sweep from its committed table; finished rows are
  copied (every metric), unfinished ones run, and a table of other overrides or entries is refused."""
  import csv

  from lix_jax.experiments import sweep

  base, sweep_file = _three_entry_sweep(tmp_path)
  first, ran = tmp_path / "first", []
  sweep.run_sweep(base, sweep_file, str(first), index=1, dispatch=_finishing_dispatch(ran))
  sweep.run_sweep(base, sweep_file, str(first), index=0, dispatch=_finishing_dispatch(ran))
  rows = sweep.run_sweep(base, sweep_file, str(first), index=None,
                         dispatch=lambda config, entry_dir: None)  # e3 does not finish.
  assert [r["val_miou"] for r in rows] == [0.1, 0.2, ""]
  committed = tmp_path / "committed.csv"
  os.replace(first / "sweep.csv", committed)

  ran = []
  rows = sweep.run_sweep(base, sweep_file, str(tmp_path / "second"), index=None,
                         dispatch=_finishing_dispatch(ran), results=str(committed))
  assert ran == ["e3"]
  with open(tmp_path / "second" / "sweep.csv") as f:
    table = list(csv.DictReader(f))
  assert [(r["name"], float(r["val_miou"]), float(r["val_iou_road"]), r["step"]) for r in table] == [
      ("e1", 0.1, 0.05, str(base.train.num_steps)), ("e2", 0.2, 0.1, str(base.train.num_steps)),
      ("e3", 0.3, 0.15, str(base.train.num_steps))]
  assert "| e2 | 2.0 | 20.00 |" in (tmp_path / "second" / "sweep.md").read_text()
  ran = []
  sweep.run_sweep(base, sweep_file, str(tmp_path / "second"), index=1,
                  dispatch=_finishing_dispatch(ran), results=str(committed))
  assert ran == []

  text = committed.read_text()
  committed.write_text(text.replace("e2,2.0", "e2,5.0"))
  with pytest.raises(ValueError, match=r"committed.csv: entry 'e2' was run with distill.kappa='5.0', "
                                       r"the sweep file asks for '2.0'"):
    sweep.run_sweep(base, sweep_file, str(tmp_path / "third"), index=None,
                    dispatch=_finishing_dispatch([]), results=str(committed))
  committed.write_text(text.replace("e2,2.0", "e9,2.0"))
  with pytest.raises(ValueError, match=r"entries \['e9'\] are not in the sweep file"):
    sweep.run_sweep(base, sweep_file, str(tmp_path / "third"), index=None,
                    dispatch=_finishing_dispatch([]), results=str(committed))
  with pytest.raises(FileNotFoundError, match="--sweep_results=.*nothere.csv"):
    sweep.run_sweep(base, sweep_file, str(tmp_path / "third"), index=None,
                    dispatch=_finishing_dispatch([]), results=str(tmp_path / "nothere.csv"))


def test_sweep_results_rerun_a_teacher_entry_that_a_student_still_to_run_distils_from(tmp_path):
  """A sweep that trains its own teacher: on a new machine the teacher's row is not enough for a
  student still to run (it needs the checkpoint), so that teacher runs again; once every student
  is in the table, nothing does."""
  import csv

  from lix_jax.experiments import sweep

  workdir = tmp_path / "sweep"
  sweep_file = tmp_path / "s.py"
  sweep_file.write_text(
      'def get_sweep():\n'
      '  return [{"name": "t", "mode": "train_teacher", "distill.kappa": 1.0}] + [\n'
      f'      {{"name": f"s{{i}}", "distill.kappa": float(i), "distill.teacher_workdir": "{workdir}/t"}}\n'
      '      for i in (2, 3)]\n')
  base = config_lib.with_overrides(base_config(), {"mode": "distill"})
  first, ran = tmp_path / "first", []
  for index in (0, 1):
    sweep.run_sweep(base, str(sweep_file), str(first), index=index, dispatch=_finishing_dispatch(ran))
  sweep.run_sweep(base, str(sweep_file), str(first), index=None, dispatch=lambda config, entry_dir: None)
  with open(first / "sweep.csv") as f:
    assert [r["val_miou"] != "" for r in csv.DictReader(f)] == [True, True, False]

  ran = []
  rows = sweep.run_sweep(base, str(sweep_file), str(workdir), index=None,
                         dispatch=_finishing_dispatch(ran), results=str(first / "sweep.csv"))
  assert ran == ["t", "s3"] and [r["val_miou"] for r in rows] == [0.1, "0.2", 0.3]
  ran = []
  sweep.run_sweep(base, str(sweep_file), str(tmp_path / "third"), index=None,
                  dispatch=_finishing_dispatch(ran), results=str(workdir / "sweep.csv"))
  assert ran == []


def test_from_stored_rebuilds_the_run_config_with_todays_keys():
  """config.json -> ConfigDict: stored values (tuples back), today's default for a key the run
  predates, a free-form section whole; a key that no longer exists is named."""
  requested = config_lib.with_overrides(base_config(), {
      "data.crop_hw": (32, 96), "teacher.width": 0.5, "distill.taps": ("stage3",),
      "benchmark.aliases": {"old/row": "new/row"}})
  stored = _stored(requested)
  assert config_lib.from_stored(stored).to_dict() == requested.to_dict()
  del stored["teacher"]["photometric"]
  rebuilt = config_lib.from_stored(stored)
  assert rebuilt.teacher.photometric == 0.0 and rebuilt.data.crop_hw == (32, 96)
  assert not config_lib.run_config_diff(stored, rebuilt, "distill")
  stored["distill"]["kapa"] = 2.0
  with pytest.raises(KeyError, match="'distill.kapa'"):
    config_lib.from_stored(stored)
