"""Reliability through the CLI: preemption and bitwise resume, atomic checkpoints, NaN, bad input.

Every run is a `python -m lix_jax.main --config=configs/synthetic.py:tiny` subprocess on 2 CPU
devices. The module builds the `tiny` data once and trains a short teacher for `distill`; the
uninterrupted reference runs double as the determinism check (a second run of the same config and
seed must log bitwise the same numbers).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from cli_env import cli_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The `tiny` preset's length: the step programs (the schedule is part of them) are then the tiny
# pipeline's, loaded from the persistent compilation cache once tests/test_cli.py compiled them.
NUM_STEPS = 6
# Logged every step; checkpoints only at the end (eval_every/ckpt_every beyond NUM_STEPS), so the
# checkpoint a preempted run resumes from can only come from the signal.
COMMON = ("--config.train.log_every=1", "--config.train.ckpt_every=1000",
          "--config.train.eval_every=1000", f"--config.train.num_steps={NUM_STEPS}")
# Logged keys that are not results of the computation.
TIMING_KEYS = ("images_per_s",)


def _env():
  return cli_env(2)


def _cmd(workdir, data_dir, *overrides):
  return [sys.executable, "-m", "lix_jax.main", "--config=configs/synthetic.py:tiny",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *overrides]


def run(cmd, *, expect_rc: int | None = 0, timeout: int = 300) -> subprocess.CompletedProcess:
  proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
  if expect_rc is not None and proc.returncode != expect_rc:
    raise AssertionError(f"exit {proc.returncode} (expected {expect_rc}) for {cmd[3:]}:\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
  return proc


def run_until(cmd, workdir, *, num_lines: int, sig: int, timeout: float = 300):
  """Starts `cmd`, sends `sig` once metrics.jsonl has `num_lines` lines; returns the process."""
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  path, deadline = os.path.join(workdir, "metrics.jsonl"), time.monotonic() + timeout
  while proc.poll() is None and time.monotonic() < deadline:
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for _ in f) >= num_lines:
          proc.send_signal(sig)
          break
    time.sleep(0.01)
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def logged(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def train_rows(workdir) -> list[dict]:
  return [r for r in logged(workdir) if "loss" in r]


def assert_rows_bitwise_equal(rows, ref):
  """Same steps, each logged once, with the same floats (JSON round-trips float64 exactly)."""
  assert [r["step"] for r in rows] == [r["step"] for r in ref]
  for r, e in zip(rows, ref):
    assert set(r) == set(e)
    diff = {k: (r[k], e[k]) for k in r if k not in TIMING_KEYS and r[k] != e[k]}
    assert not diff, f"step {r['step']} differs from the reference: {diff}"


def steps_on_disk(workdir) -> list[int]:
  ckpt = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())


def restore_leaves(step_dir) -> dict[str, np.ndarray]:
  """The saved train state of one checkpoint step as host arrays, by tree path."""
  import jax  # noqa: PLC0415  (conftest sets the device count first)
  import orbax.checkpoint as ocp  # noqa: PLC0415

  path = os.path.join(step_dir, "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = ckptr.restore(path, restore_args=args)
  leaves = jax.tree_util.tree_leaves_with_path(state)
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def assert_checkpoints_bitwise_equal(step_dir, ref_step_dir):
  """Params, BN statistics, optimizer state, step and rng: same dtypes, shapes and bytes."""
  leaves, ref = restore_leaves(step_dir), restore_leaves(ref_step_dir)
  assert leaves.keys() == ref.keys() and len(leaves) > 10
  for key, value in leaves.items():
    assert value.dtype == ref[key].dtype and value.shape == ref[key].shape, key
    assert value.tobytes() == ref[key].tobytes(), f"{key} differs from the reference"
  for item in os.listdir(step_dir):  # The data iterators' positions (grain's JSON per process).
    if item.startswith("data_"):
      for name in os.listdir(os.path.join(step_dir, item)):
        if name.endswith(".json"):
          with open(os.path.join(step_dir, item, name)) as f, \
               open(os.path.join(ref_step_dir, item, name)) as g:
            assert json.load(f) == json.load(g), f"{item}/{name}"


def _assert_one_line_error(proc, *needles, rc: int = 2):
  assert proc.returncode == rc, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("lix_jax: error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], errors[0]
  return errors[0]


# ------------------------------------------------------------------------------------------------
# Fixtures: data, a short teacher, and one uninterrupted reference run per mode.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from lix_jax import data  # noqa: PLC0415

  path = str(tmp_path_factory.mktemp("data"))
  for split in ("train", "unlabeled", "validation", "test"):
    data.get_source("synthetic_driving", split, data_dir=path, builder_config="tiny")
  return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("teacher"))
  run(_cmd(workdir, data_dir, "--config.mode=train_teacher", f"--config.train.num_steps={NUM_STEPS}",
           "--config.train.eval_every=1000"))
  return workdir


MODES = {
    "train_student": ("--config.mode=train_student",),
    "distill": ("--config.mode=distill", "--config.distill.method=lix"),
}


@pytest.fixture(scope="module")
def mode_args(teacher_dir):
  def args(mode):
    extra = (f"--config.distill.teacher_workdir={teacher_dir}",) if mode == "distill" else ()
    return (*MODES[mode], *extra, *COMMON)
  return args


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """mode -> workdir of an uninterrupted run of NUM_STEPS steps (run on first use)."""
  done = {}

  def get(mode, args):
    if mode not in done:
      workdir = str(tmp_path_factory.mktemp(f"reference_{mode}"))
      run(_cmd(workdir, data_dir, *args))
      done[mode] = workdir
    return done[mode]
  return get


# ------------------------------------------------------------------------------------------------
# 1 + 5. Preemption: interrupt at a random step, resume, compare bitwise (and determinism).
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode,sig", [("train_student", signal.SIGTERM),
                                      ("distill", signal.SIGINT)])
def test_preempted_run_resumes_bitwise(mode, sig, tmp_path, data_dir, mode_args, reference):
  args = mode_args(mode)
  ref_dir = reference(mode, args)
  workdir = str(tmp_path / "run")
  k = random.Random().randint(2, NUM_STEPS - 3)
  rc, out, err = run_until(_cmd(workdir, data_dir, *args), workdir, num_lines=k, sig=sig)
  assert rc == 0, f"signal after {k} logged steps: exit {rc}\n{err[-3000:]}"
  match = re.search(r"stopped by (\w+) after step (\d+); checkpoint saved in (\S+);", out)
  assert match, f"no preemption line in stdout:\n{out}\n{err[-2000:]}"
  stopped_at = int(match.group(2))
  assert match.group(1) == signal.Signals(sig).name and k <= stopped_at <= NUM_STEPS
  assert match.group(3) == os.path.join(workdir, "checkpoints", str(stopped_at))
  assert steps_on_disk(workdir) == [stopped_at]  # Only the signal saved.
  assert "Traceback" not in err
  # Determinism: the steps before the signal equal the reference run's (same config and seed).
  assert_rows_bitwise_equal(train_rows(workdir), train_rows(ref_dir)[:stopped_at])

  proc = run(_cmd(workdir, data_dir, *args))
  role = "distill" if mode == "distill" else "student"
  assert f"Resumed {role} from step {stopped_at}" in proc.stderr
  assert "test mIoU" in proc.stdout
  # Every step logged once, every number after the resume point (and before) bitwise equal,
  # the evaluation too; the final checkpoint (state, optimizer, rng, data positions) equal.
  assert_rows_bitwise_equal(logged(workdir), logged(ref_dir))
  assert_checkpoints_bitwise_equal(os.path.join(workdir, "checkpoints", str(NUM_STEPS)),
                                   os.path.join(ref_dir, "checkpoints", str(NUM_STEPS)))
  with open(os.path.join(workdir, "final_metrics.json")) as f, \
       open(os.path.join(ref_dir, "final_metrics.json")) as g:
    assert json.load(f)["test"] == json.load(g)["test"]


# ------------------------------------------------------------------------------------------------
# 2. Atomic checkpoints: SIGKILL mid-run, a truncated newest checkpoint, a stale tmp directory.
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_run_with_corrupt_checkpoint_falls_back_and_loses_nothing(
    tmp_path, data_dir, mode_args, reference):
  args = mode_args("train_student")
  ref_dir = reference("train_student", args)
  workdir = str(tmp_path / "run")
  # A checkpoint every step, so the kill likely lands during an (asynchronous) save.
  cmd = _cmd(workdir, data_dir, *args, "--config.train.ckpt_every=1")
  rc, _, err = run_until(cmd, workdir, num_lines=random.Random().randint(4, NUM_STEPS - 2),
                         sig=signal.SIGKILL)
  assert rc == -signal.SIGKILL, err[-2000:]
  steps = steps_on_disk(workdir)
  assert len(steps) >= 2, steps
  newest = steps[-1]
  # Truncate the largest OCDBT data file of the newest step: orbax still lists the step.
  data = os.path.join(workdir, "checkpoints", str(newest), "state", "ocdbt.process_0", "d")
  victim = max((os.path.join(data, f) for f in os.listdir(data)), key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  # A save that never finished (as a kill during a save leaves it): never taken for a step.
  stale = os.path.join(workdir, "checkpoints", f"{newest + 1}.orbax-checkpoint-tmp", "state")
  os.makedirs(stale, exist_ok=True)
  with open(os.path.join(stale, "manifest.ocdbt"), "wb") as f:
    f.write(b"partial")

  proc = run(cmd)
  resumed = int(re.search(r"Resumed student from step (\d+)", proc.stderr).group(1))
  skipped = [int(s) for s in re.findall(r"Checkpoint step (\d+) in \S+ skipped", proc.stderr)]
  assert newest in skipped and resumed < newest and resumed in steps
  assert set(skipped) == {s for s in steps if s > resumed}  # The tmp directory is not a step.
  # The lines logged past the resumed step were moved beside the log, not dropped.
  with open(os.path.join(workdir, f"metrics.after_{resumed}.jsonl")) as f:
    after = [json.loads(line)["step"] for line in f if line.strip().endswith("}")]
  assert after and min(after) == resumed + 1
  # The refused step is set aside and saved anew; nothing logged twice, nothing lost.
  assert os.listdir(os.path.join(workdir, "checkpoints_skipped"))
  left = os.listdir(os.path.join(workdir, "checkpoints"))
  assert not any(d.endswith("orbax-checkpoint-tmp") for d in left), left
  assert_rows_bitwise_equal(logged(workdir), logged(ref_dir))
  assert_checkpoints_bitwise_equal(os.path.join(workdir, "checkpoints", str(NUM_STEPS)),
                                   os.path.join(ref_dir, "checkpoints", str(NUM_STEPS)))


@pytest.mark.slow
def test_rerun_after_the_last_checkpoint_writes_the_same_final_metrics(
    tmp_path, data_dir, mode_args, reference):
  """Killed after the last step's checkpoint but before final_metrics.json: the rerun trains
  nothing and writes both splits' metrics again, equal to the uninterrupted run's."""
  args = mode_args("train_student")
  ref_dir = reference("train_student", args)
  workdir = str(tmp_path / "run")
  shutil.copytree(ref_dir, workdir)
  os.remove(os.path.join(workdir, "final_metrics.json"))
  proc = run(_cmd(workdir, data_dir, *args))
  assert f"Resumed student from step {NUM_STEPS}" in proc.stderr
  with open(os.path.join(workdir, "final_metrics.json")) as f, \
       open(os.path.join(ref_dir, "final_metrics.json")) as g:
    got, want = json.load(f), json.load(g)
  assert got["validation"] is not None
  assert got["validation"] == want["validation"] and got["test"] == want["test"]
  assert_rows_bitwise_equal(logged(workdir), logged(ref_dir))  # Nothing logged twice.


# ------------------------------------------------------------------------------------------------
# 3. Numerics: a huge learning rate makes the loss non-finite.
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_nonfinite_loss_stops_with_one_line_and_a_good_checkpoint(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  max_bad = 2
  proc = run(_cmd(workdir, data_dir, "--config.mode=train_student", *COMMON,
                  "--config.train.ckpt_every=1", "--config.optim.learning_rate=1e30",
                  f"--config.train.max_bad_steps={max_bad}"), expect_rc=3)
  _assert_one_line_error(proc, "NonFiniteError: non-finite ce at 2 consecutive steps",
                         "train.max_bad_steps=2", rc=3)
  rows = train_rows(workdir)
  bad = [r["step"] for r in rows if r["nonfinite"]]
  good = [r["step"] for r in rows if not r["nonfinite"]]
  assert len(bad) == max_bad and bad == list(range(bad[0], bad[0] + max_bad)) and good
  assert all(r["loss"] is None for r in rows if r["nonfinite"])
  for step in bad:
    assert re.search(rf"step {step}: non-finite \['ce'\]; update skipped", proc.stderr)
  # The newest checkpoint restores, is finite and holds the last good update (skipped steps do
  # not count): the step counter equals the number of good steps.
  steps = steps_on_disk(workdir)
  leaves = restore_leaves(os.path.join(workdir, "checkpoints", str(steps[-1])))
  assert all(np.isfinite(v).all() for v in leaves.values() if v.dtype.kind == "f")
  assert int(leaves["['step']"]) == len(good)


# ------------------------------------------------------------------------------------------------
# 4. Bad input: one line naming the key, value or file; exit 2; no traceback.
# ------------------------------------------------------------------------------------------------
BAD_INPUTS = {
    "unknown_key": (("--config.distill.kapa=2",), ("--config.distill.kapa", "kappa")),
    "unknown_preset": (("--config=configs/synthetic.py:tny",), ("tny", "tiny")),
    "unknown_method": (("--config.mode=distill", "--config.distill.method=lixx"), ("lixx", "lix")),
    "unknown_backbone": (("--config.mode=train_student", "--config.student.backbone=resnet7"),
                         ("resnet7", "resnet18")),
    "batch_not_divisible": (("--config.mode=train_student", "--config.train.batch_size=7"),
                            ("train.batch_size=7", "2 devices")),
    "no_teacher": (("--config.mode=distill",), ("distill.teacher_workdir",)),
    "missing_teacher": (("--config.mode=distill",
                         "--config.distill.teacher_workdir=/nonexistent/t"),
                        ("distill.teacher_workdir", "/nonexistent/t")),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_config_is_one_line_naming_it(case, tmp_path, data_dir):
  overrides, needles = BAD_INPUTS[case]
  cmd = _cmd(tmp_path / "run", data_dir, *overrides)
  if overrides[0].startswith("--config="):
    cmd = [c for c in cmd if c != "--config=configs/synthetic.py:tiny"]
  _assert_one_line_error(run(cmd, expect_rc=None), *needles)
  # Stopped before training: nothing was compiled or written.
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


@pytest.mark.slow
def test_taps_that_do_not_exist(tmp_path, data_dir, teacher_dir):
  proc = run(_cmd(tmp_path / "run", data_dir, "--config.mode=distill",
                  f"--config.distill.teacher_workdir={teacher_dir}",
                  '--config.distill.taps=("stage3", "stage9")'), expect_rc=None)
  _assert_one_line_error(proc, "distill.taps", "stage9", "stage3")


def test_truncated_data_file_is_named(tmp_path, data_dir):
  broken = tmp_path / "data"
  shutil.copytree(data_dir, broken)
  files = [os.path.join(d, f) for d, _, fs in os.walk(broken) for f in fs
           if "train.array_record" in f]
  assert len(files) == 1
  with open(files[0], "r+b") as f:
    f.truncate(os.path.getsize(files[0]) // 3)
  proc = run(_cmd(tmp_path / "run", broken, "--config.mode=train_student"), expect_rc=None)
  _assert_one_line_error(proc, files[0], "'train'")


@pytest.mark.slow
@pytest.mark.parametrize("name,image,needles", [
    ("gray.png", Image.new("L", (192, 64), 128), ("gray.png", "3 channels", "'L'")),
    ("small.png", Image.new("RGB", (16, 16), (1, 2, 3)), ("small.png", "smaller than")),
])
def test_predict_on_a_wrong_image_says_so(name, image, needles, tmp_path, data_dir, mode_args,
                                          reference):
  ref_dir = reference("train_student", mode_args("train_student"))
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  image.save(inputs / name)
  proc = run(_cmd(ref_dir, data_dir, "--config.mode=predict", "--config.eval.role=student",
                  f"--config.predict.input_dir={inputs}",
                  f"--config.predict.output_dir={tmp_path / 'out'}"), expect_rc=None)
  _assert_one_line_error(proc, *needles)


# ------------------------------------------------------------------------------------------------
# 6. A changed config never wipes a run (DESIGN §6 "Only corruption is skipped").
# ------------------------------------------------------------------------------------------------
def _snapshot(workdir) -> dict[str, bytes]:
  """Every file under `workdir` with its bytes (what must survive a refused run untouched)."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


@pytest.mark.slow
@pytest.mark.parametrize("override,key", [("--config.student.width=0.25", "student.width"),
                                          ("--config.optim.learning_rate=0.01",
                                           "optim.learning_rate")])
def test_changed_config_stops_and_touches_nothing(override, key, tmp_path, data_dir, mode_args,
                                                  reference):
  args = mode_args("train_student")
  workdir = str(tmp_path / "run")
  shutil.copytree(reference("train_student", args), workdir)
  before = _snapshot(workdir)
  proc = run(_cmd(workdir, data_dir, *args, override), expect_rc=None)
  error = _assert_one_line_error(proc, "ConfigMismatchError", key, workdir, "train.restart=True")
  assert "->" in error.split(key, 1)[1].split(";")[0]
  assert _snapshot(workdir) == before  # Nothing moved, deleted, truncated or rewritten.


@pytest.mark.slow
def test_shape_change_is_a_config_error_never_corruption(tmp_path, data_dir, mode_args, reference):
  """Without config.json to compare with, the restore itself finds the other shapes: still exit 2
  and nothing set aside (before: every step moved to checkpoints_skipped/, a new run from 0)."""
  args = mode_args("train_student")
  workdir = str(tmp_path / "run")
  shutil.copytree(reference("train_student", args), workdir)
  os.remove(os.path.join(workdir, "config.json"))
  # The checkpoints' own config item still names the change.
  proc = run(_cmd(workdir, data_dir, *args, "--config.student.width=0.25"), expect_rc=None)
  _assert_one_line_error(proc, "student.width")
  for step_dir in os.listdir(os.path.join(workdir, "checkpoints")):
    shutil.rmtree(os.path.join(workdir, "checkpoints", step_dir, "config"))
  before = _snapshot(workdir)
  proc = run(_cmd(workdir, data_dir, *args, "--config.student.width=0.25"), expect_rc=None)
  _assert_one_line_error(proc, "StateMismatchError", "has shape", "nothing was moved")
  assert _snapshot(workdir) == before
  assert not os.path.exists(os.path.join(workdir, "checkpoints_skipped"))


@pytest.mark.slow
def test_more_steps_resume_and_restart_starts_over(tmp_path, data_dir, mode_args, reference):
  args = mode_args("train_student")
  ref_dir = reference("train_student", args)
  workdir = str(tmp_path / "run")
  shutil.copytree(ref_dir, workdir)
  # Extending train.num_steps resumes: the first NUM_STEPS logged steps are kept as they were.
  proc = run(_cmd(workdir, data_dir, *args, f"--config.train.num_steps={NUM_STEPS + 2}"))
  assert f"Resumed student from step {NUM_STEPS}" in proc.stderr
  # stderr is a pipe, not a terminal: one progress line per logged step instead of a bar.
  assert re.search(rf"student step {NUM_STEPS + 2}/{NUM_STEPS + 2} \(100 %\) loss \d+\.\d{{4}} "
                   r"images/s \d+ ETA 0:00:00", proc.stderr), proc.stderr[-2000:]
  rows = train_rows(workdir)
  assert [r["step"] for r in rows] == list(range(1, NUM_STEPS + 3))
  assert_rows_bitwise_equal(rows[:NUM_STEPS], train_rows(ref_dir))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["train"]["num_steps"] == NUM_STEPS + 2
  # train.restart=True moves the old run aside (never deletes it) and trains from step 0.
  before = _snapshot(workdir)
  run(_cmd(workdir, data_dir, *args, "--config.train.num_steps=2", "--config.train.restart=True"))
  previous = [d for d in os.listdir(workdir) if d.startswith("previous_")]
  assert len(previous) == 1
  moved = _snapshot(os.path.join(workdir, previous[0]))
  run_files = ("checkpoints", "metrics.jsonl", "config.json", "final_metrics.json", "tb", "export")
  assert moved == {k: v for k, v in before.items() if k.split(os.sep)[0] in run_files}
  assert "metrics.jsonl" in moved and "final_metrics.json" in moved
  assert [r["step"] for r in train_rows(workdir)] == [1, 2]
  assert steps_on_disk(workdir) == [2]
