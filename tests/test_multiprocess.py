"""Two processes x 2 CPU devices on 127.0.0.1 (launch/local_multiprocess.sh) == one process x 4,
for both data-parallel backends (`parallel.backend` shard_map and pmap).

The runs train a plain student (the role changes nothing here: hosts, sharding, BatchNorm sync,
checkpoints and evaluation are the same code for every role; a student compiles in half a
teacher's time) with the persistent compilation cache on, as users run them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_env import FAST_COMPILE, cli_env
from lix_jax import data as data_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3


def _args(workdir, data_dir, backend):
  return ["--config=configs/synthetic.py:tiny", f"--workdir={workdir}", "--config.mode=train_student",
          f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={STEPS}",
          "--config.train.log_every=1", f"--config.train.eval_every={STEPS}",
          f"--config.parallel.backend={backend}"]


def _logged(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if "eval/miou" in r]
  return train, evals




@pytest.fixture(scope="module")
def one_process_of_four(tmp_path_factory):
  """(data dir, workdir) of the reference: one process with 4 devices (shard_map; pmap on one
  process equals it, tests/test_steps.py)."""
  base = tmp_path_factory.mktemp("one_of_four")
  data_dir = base / "data"
  data_lib.get_source("synthetic_driving", "train", data_dir=str(data_dir), builder_config="tiny")
  one = subprocess.run(
      [sys.executable, "-m", "lix_jax.main", *_args(base / "one", data_dir, "shard_map")], cwd=REPO,
      env=cli_env(4),
      capture_output=True, text=True, timeout=900)
  assert one.returncode == 0, one.stderr[-4000:]
  return data_dir, base / "one"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["shard_map", "pmap"])
def test_two_processes_of_two_devices_equal_one_process_of_four(tmp_path, backend,
                                                                 one_process_of_four):
  data_dir, one_dir = one_process_of_four
  multi = subprocess.run(
      ["bash", "launch/local_multiprocess.sh", "2", "2", "--", sys.executable, "-m", "lix_jax.main",
       *_args(tmp_path / "two", data_dir, backend)], cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE, LOG_DIR=str(tmp_path)),
      capture_output=True, text=True, timeout=900)
  logs = "\n".join(open(tmp_path / f"lix_process_{i}.log").read()[-3000:] for i in range(2))
  assert multi.returncode == 0, logs
  train_1, eval_1 = _logged(one_dir)
  train_2, eval_2 = _logged(tmp_path / "two")
  assert [r["step"] for r in train_2] == list(range(1, STEPS + 1))
  for key in ("loss", "l2_params", "l2_grads"):
    np.testing.assert_allclose([r[key] for r in train_2], [r[key] for r in train_1], rtol=1e-5,
                               err_msg=key)
  # The evaluation (each example once over both hosts, confusion matrices psum-ed) agrees too, up
  # to the argmax of a few pixels whose logits differ by float32 summation order.
  np.testing.assert_allclose(eval_2[-1]["eval/miou"], eval_1[-1]["eval/miou"], atol=1e-4)
  # Only process 0 writes the logs; both processes saved their own iterator positions.
  step_dir = tmp_path / "two" / "checkpoints" / str(STEPS) / "data_train"
  assert sorted(f for f in os.listdir(step_dir) if f.startswith("process_")) == [
      "process_0-of-2.json", "process_1-of-2.json"]
  # The final save finished on both processes (pmap used to leave a *.orbax-checkpoint-tmp).
  assert not [d for d in os.listdir(tmp_path / "two" / "checkpoints") if "tmp" in d]
  # Both runs finished and evaluated every step (the 2-process save wrote global arrays).
  with open(tmp_path / "two" / "final_metrics.json") as f, \
       open(one_dir / "final_metrics.json") as g:
    assert json.load(f)["step"] == json.load(g)["step"] == STEPS
