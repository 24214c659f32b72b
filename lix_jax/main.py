r"""lix_jax command line: one entry point, modes chosen by `--config.mode`.

  python -m lix_jax.main --config=configs/synthetic.py --workdir=workdirs/synthetic
  python -m lix_jax.main --config=configs/synthetic.py:tiny --workdir=/tmp/lix --config.mode=train_teacher

Modes: train_teacher, train_student, distill (needs --config.distill.teacher_workdir), eval,
predict (a folder of images -> colourised PNGs), pipeline (teacher -> students -> results),
benchmark (rows x seeds -> benchmark.csv; configs/benchmark.py). `--sweep=configs/sweeps/X.py`
runs the config once per sweep entry (`--sweep_index=N`: one entry) and writes sweep.csv / .md.
Bad input (data files, config keys and values) ends with one line naming what is wrong and exit
status 2; a run stopped by non-finite losses (`train.max_bad_steps`) with one line naming the loss
term and exit status 3; `--traceback` shows the full stack instead. SIGTERM/SIGINT finish the
current step, save a checkpoint and exit 0 with one line saying where; rerun the command to resume.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from lix_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:preset]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of checkpoints, logs and outputs.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Raise errors instead of a one-line message.")
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file (configs/sweeps/*.py): run --config once "
                             "per entry, in <workdir>/<entry>, and collect sweep.csv / sweep.md.")
_SWEEP_INDEX = flags.DEFINE_integer("sweep_index", None, "With --sweep: run only this entry "
                                    "(0-based; a SLURM array task); collect with a run without it.")
_SWEEP_RESULTS = flags.DEFINE_string(
    "sweep_results", None, "With --sweep: a sweep.csv written elsewhere (e.g. results/sweeps/X.csv); "
    "its finished entries are not run again and fill this workdir's table.")
_SWEEP_COLLECT = flags.DEFINE_bool("sweep_collect", False, "With --sweep: run nothing, only write "
                                   "sweep.csv / sweep.md from the entries finished so far.")
flags.mark_flags_as_required(["config", "workdir"])


def _exported_predict(config) -> bool:
  """mode=predict from an exported artifact: jax, numpy and Pillow only (no flax, no trainer)."""
  return config.mode == "predict" and bool(config.predict.get("exported"))


def _onnx_predict(config) -> bool:
  """mode=predict from an exported `.onnx`: onnxruntime, numpy and Pillow (no jax)."""
  return _exported_predict(config) and config.predict.exported.endswith(".onnx")


def _overrides() -> frozenset[str]:
  """The `--config.*` keys set on the command line (empty when the flags were not parsed)."""
  try:
    return frozenset(config_flags.get_override_values(flags.FLAGS["config"]))
  except (KeyError, TypeError, flags.Error):
    return frozenset()


def _modes():
  # Imported here so that `--help` and config errors come before the heavy imports.
  from lix_jax.experiments import benchmark, pipeline
  from lix_jax.train import loop

  def from_run(config, workdir):
    # eval / predict: the run's config.json supplies what the command line does not set.
    return pipeline.stored_run_config(config, workdir, _overrides())

  def predict(config, workdir):
    from lix_jax.experiments import predict as predict_lib
    return predict_lib.predict_folder(from_run(config, workdir), workdir)

  return {
      "train_teacher": lambda c, w: pipeline.train_run(c, w, "teacher"),
      "train_student": lambda c, w: pipeline.train_run(c, w, "student"),
      "distill": lambda c, w: pipeline.train_run(c, w, "distill"),
      "eval": lambda c, w: loop.run_eval(from_run(c, w), w, c.eval.role, c.eval.split),
      "predict": predict,
      "pipeline": pipeline.run_pipeline,
      "benchmark": benchmark.run_benchmark,
  }


class _QuietLibraries(logging.Filter):
  """Keeps orbax's and grain's per-save INFO chatter out of the console (warnings still show)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        f"/{lib}/" in record.pathname for lib in ("orbax", "grain", "tensorflow_datasets"))


def setup(config) -> None:
  """Once per process: quiet library logs, the compilation cache, multi-host initialisation (none
  of it for a `.onnx` predict, which imports no jax)."""
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  if _onnx_predict(config):
    return
  import jax  # noqa: PLC0415  (after flag parsing, so XLA_FLAGS from the environment apply)
  # Runs of the same shapes (the students of a pipeline, a resumed run, a sweep) skip most of XLA's
  # compile time.
  config_lib.enable_compilation_cache()
  if not _exported_predict(config):
    from lix_jax.train import sharding  # noqa: PLC0415  (the trainer: flax)
    sharding.initialize_distributed(config.parallel)
  logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())


def dispatch(config, workdir: str):
  """Runs `config.mode` in `workdir`; errors become one line and an exit status (see module doc)."""
  from lix_jax.train.reliability import NonFiniteError, Preempted
  try:
    if _exported_predict(config):
      from lix_jax.experiments import predict as predict_lib  # noqa: PLC0415  (jax, numpy, PIL)
      return predict_lib.predict_exported(config, os.path.abspath(workdir))
    modes = _modes()
    if config.mode not in modes:
      raise KeyError(f"Unknown mode {config.mode!r}. Available modes are: {sorted(modes)}")
    return modes[config.mode](config, os.path.abspath(workdir))
  except Preempted as e:
    print(f"lix_jax: {e}")  # Not an error: the checkpoint is saved, rerunning resumes.
    sys.exit(0)
  except NonFiniteError as e:
    if _TRACEBACK.value:
      raise
    print(f"lix_jax: error: NonFiniteError: {e}", file=sys.stderr)
    sys.exit(3)
  except (ValueError, KeyError, FileNotFoundError, NotImplementedError) as e:
    if _TRACEBACK.value:
      raise
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"lix_jax: error: {type(e).__name__}: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  try:
    setup(config)
  except (ValueError, RuntimeError) as e:
    print(f"lix_jax: error: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(2)
  if _SWEEP.value:
    from lix_jax.experiments import sweep  # noqa: PLC0415
    try:
      sweep.run_sweep(config, _SWEEP.value, _WORKDIR.value, index=_SWEEP_INDEX.value,
                      dispatch=dispatch, results=_SWEEP_RESULTS.value,
                      collect_only=_SWEEP_COLLECT.value)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
      if _TRACEBACK.value:
        raise
      message = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"lix_jax: error: {type(e).__name__}: {message}", file=sys.stderr)
      sys.exit(2)
    return
  if _SWEEP_INDEX.value is not None or _SWEEP_RESULTS.value or _SWEEP_COLLECT.value:
    raise app.UsageError("--sweep_index, --sweep_results and --sweep_collect need --sweep")
  result = dispatch(config, _WORKDIR.value)
  # train_* and distill return {"test": metrics, ...}; eval returns the metrics themselves.
  metrics = result.get("test") or (result if "miou" in result else None) if isinstance(result, dict) else None
  if metrics:
    split = (config.eval.split or config.data.test_split) if config.mode == "eval" else "test"
    print(f"{split} mIoU {100 * metrics['miou']:.2f} %  pixel acc {100 * metrics['pixel_acc']:.2f} %")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with config errors that absl lets through as a traceback (an unknown
  `--config.<key>`, an unknown preset, a config file that raises) as one line and exit status 2."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError, ValueError, TypeError) as e:
    if any(a in ("--traceback", "--traceback=true", "--traceback=True") for a in argv):
      raise
    # ml_collections wraps the KeyError of an unknown key (with a "Did you mean") in an AttributeError.
    cause = e
    if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], Exception):
      cause = e.args[0]
    message = str(cause.args[0] if isinstance(cause, KeyError) and cause.args else cause)
    name = message.split("\n", 1)[0].strip("'\"")  # The unknown key, for an unknown key.
    flags_named = [a.split("=", 1)[0] for a in argv[1:]
                   if a.startswith("--config") and name and name in a.split("=", 1)[0]]
    where = f"{flags_named[0]}: " if flags_named else ""
    print(f"lix_jax: error: {where}{type(cause).__name__}: {' '.join(message.split())}",
          file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
