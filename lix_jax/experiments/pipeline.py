"""Whole experiments on top of the loop: the one-command pipeline, evaluation and prediction.

`run_pipeline` is the default job of `configs/synthetic.py`: build the data, train the teacher,
train one student per method in `pipeline.methods` (and per seed in `pipeline.seeds`), evaluate,
and write `results.csv`, `results.md`, a bar chart and a prediction grid into the workdir. Every
run lives in its own sub-workdir, so an interrupted pipeline resumes where it stopped.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any

import ml_collections
import numpy as np

from lix_jax import config as config_lib
from lix_jax import plots, viz
from lix_jax.experiments import export, report
from lix_jax.experiments.results_csv import write_csv
from lix_jax.train import inputs, loop, reliability


def regime(config) -> str:
  return "unlabeled" if config.distill.unlabeled_split else "labeled"


def student_config(config, method: str, seed: int, teacher_workdir: str) -> ml_collections.ConfigDict:
  return config_lib.with_overrides(config, {"seed": seed, "distill.method": method,
                                            "distill.teacher_workdir": teacher_workdir})


def finished_result(workdir: str, config=None, role: str | None = None,
                    num_steps: int | None = None) -> dict[str, Any] | None:
  """The `final_metrics.json` of a finished run that may be re-used for `config`, else None.

  A run whose file lacks the validation metrics is not finished: training it again resumes at
  its last step and only evaluates (`loop.train`). With `config` and `role` (DESIGN §6 re-use
  rule), the run's stored config must equal the requested one up to the keys that only extend or
  observe a run, else `ConfigMismatchError` names the keys (exit 2); a run shorter than
  `num_steps` (default `config.train.num_steps`) is not finished (training extends it), and
  `train.restart=True` never re-uses (training starts over).
  """
  path = os.path.join(workdir, "final_metrics.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  if not (result.get("validation") and result.get("test")):
    return None
  if config is None:
    return result
  if config.train.restart:
    return None
  stored = reliability.stored_config(workdir)
  if stored is None:
    raise config_lib.ConfigMismatchError(
        f"{workdir} holds a finished run without config.json, so it cannot be checked against the "
        "requested config; choose another --workdir or add --config.train.restart=True")
  config_lib.check_same_run(stored, config, role, where=workdir, finished=True)
  wanted = int(num_steps if num_steps is not None else config.train.num_steps)
  return result if int(result.get("step", 0)) >= wanted else None


def role_of(method: str | None) -> str:
  """The trainer role of a pipeline run: None = teacher, "none" = plain student, else distill."""
  return "teacher" if method is None else ("student" if method == "none" else "distill")


def prepare_sources(config) -> None:
  """Builds the ArrayRecord files of every split a run of `config` reads, once, up front."""
  for split in ("train", config.distill.unlabeled_split, config.data.eval_split,
                config.data.test_split):
    if split:
      inputs.source(config, split)


def train_run(config, workdir: str, role: str, *, num_steps: int | None = None) -> dict[str, Any]:
  """`loop.train` of one run, exporting the deployable network when it finishes (DESIGN §6)."""
  return loop.train(config, workdir, role, num_steps=num_steps,
                    finish=functools.partial(export.export_run, config, workdir, role))


def run_role(config, workdir: str, method: str | None, *, num_steps=None) -> dict[str, Any]:
  """Trains (or resumes, or re-uses a finished) run; `method` None = teacher, "none" = plain student."""
  role = role_of(method)
  result = finished_result(workdir, config, role, num_steps)
  if result is not None:
    logging.info("Re-using the finished run in %s", workdir)
    return result
  return train_run(config, workdir, role, num_steps=num_steps)


def result_row(config, model: str, method: str, seed: int, metrics: dict[str, Any]) -> dict[str, Any]:
  row = dict(model=model, method=method, fusion=config.teacher.fusion,
             x_modality=config.data.x_modality, regime=regime(config), seed=seed,
             miou=metrics["miou"], pixel_acc=metrics["pixel_acc"])
  for name, iou in zip(inputs.class_names(config), metrics["iou"]):
    row[f"iou_{name}"] = iou
  return row


def write_results(workdir: str, rows: list[dict[str, Any]]) -> str:
  """Writes results.csv (DESIGN §6 columns, fractions) and results.md; returns the markdown."""
  write_csv(os.path.join(workdir, "results.csv"), rows)
  return summary_markdown(rows)


def summary_markdown(rows: list[dict[str, Any]]) -> str:
  """A table of mean ± std test mIoU per (model, method) and the teacher–student gap closed."""
  groups: dict[tuple[str, str], list[float]] = {}
  for r in rows:
    groups.setdefault((r["model"], r["method"]), []).append(100 * float(r["miou"]))
  teacher = np.mean(groups.get(("teacher", "-"), [np.nan]))
  student = np.mean(groups.get(("student", "none"), [np.nan]))
  lines = ["| model | method | seeds | test mIoU (%) | gap closed |", "|---|---|---|---|---|"]
  for (model, method), values in groups.items():
    mean, std = np.mean(values), np.std(values)
    gap = (mean - student) / (teacher - student) if model == "student" and teacher > student else np.nan
    gap_text = "" if np.isnan(gap) else f"{100 * gap:.0f} %"
    lines.append(f"| {model} | {method} | {len(values)} | {mean:.1f} ± {std:.1f} | {gap_text} |")
  return "\n".join(lines) + "\n"


# What a run's stored config supplies to mode=eval / predict (DESIGN §6): the sections that shape
# the run (networks, optimiser = the restored state's structure, method = the adapters, the data it
# was trained on, its paths) and the seed.
STORED_SECTIONS = ("data", "train", "optim", "teacher", "student", "distill")


def stored_run_config(config, workdir: str, overrides=()) -> ml_collections.ConfigDict:
  """The config to evaluate or predict with the run in `workdir`.

  The run's `config.json` supplies what the command line does not set: every key of
  `STORED_SECTIONS` and `seed` comes from it, except the keys in `overrides` (the command line's
  explicit `--config.*` values, flat dotted names); everything else (`mode`, `eval.*`,
  `predict.*`, keys newer than the run) comes from `config`. Without a stored config, `config`.
  """
  stored = reliability.stored_config(workdir)
  if stored is None:
    return config
  known = config_lib.flatten(config)
  values = {k: v for k, v in config_lib.flatten(stored).items()
            if k in known and k not in overrides
            and (k == "seed" or k.split(".", 1)[0] in STORED_SECTIONS)}
  changed = sorted(k for k, v in values.items() if v != known[k])
  if changed:
    logging.info("From %s/config.json: %s", workdir, ", ".join(changed))
  return config_lib.with_overrides(config, values)


def run_pipeline(config, workdir: str) -> list[dict[str, Any]]:
  os.makedirs(workdir, exist_ok=True)
  prepare_sources(config)
  teacher_dir = os.path.join(workdir, "teacher")
  t_result = run_role(config, teacher_dir, None, num_steps=config.pipeline.teacher_num_steps)
  rows = [result_row(config, "teacher", "-", config.seed, t_result["test"])]
  for seed in config.pipeline.seeds:
    for method in config.pipeline.methods:
      run_dir = os.path.join(workdir, "students", f"{method}_seed{seed}")
      result = run_role(student_config(config, method, seed, teacher_dir), run_dir, method)
      rows.append(result_row(config, "student", method, seed, result["test"]))
      logging.info("%s seed %d: test mIoU %.4f", method, seed, result["test"]["miou"])
  markdown = write_results(workdir, rows)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(f"# Results ({regime(config)} regime, test split)\n\n{markdown}")
  print(markdown)
  viz.save_png(os.path.join(workdir, "results.png"), plots.results_bar_chart(
      [{"method": f"{r['model']}:{r['method']}", "miou": r["miou"]} for r in rows]))
  runs = {"teacher": (teacher_dir, "teacher")}
  seed = config.pipeline.seeds[0]
  columns = {"none": ("student", "student"), "lix": ("LIX student", "distill")}
  for method in config.pipeline.methods:
    if method in columns:
      label, role = columns[method]
      runs[label] = (os.path.join(workdir, "students", f"{method}_seed{seed}"), role)
  report.write_report(student_config(config, "lix", seed, teacher_dir), workdir, runs,
                      config.pipeline.num_predictions)
  return rows
