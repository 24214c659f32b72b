r"""Sweeps: one config run once per entry of a sweep file, each in `<workdir>/<entry name>`.

  python -m lix_jax.main --config=configs/synthetic.py --sweep=configs/sweeps/kappa.py \
      --workdir=workdirs/sweep_kappa [--config.<key>=... applied to every entry]
  python -m lix_jax.main ... --sweep_index=3      # one entry only (a SLURM array task, a TPU queue)

A sweep file defines `get_sweep() -> list[dict]`; each dict has a `name` and flattened config
overrides (`"distill.kappa": -2.0`). Every key must exist in the config (checked for all entries
before anything runs). Without `--sweep_index` the entries not finished yet are run in order and
every finished entry is collected into `<workdir>/sweep.csv` and `sweep.md` (overrides, validation
mIoU and per-class IoU) after each entry and at the end: after an array job has run each index,
the same command only collects. Finished entries are re-used when their stored config equals the
requested one (DESIGN §6; otherwise exit 2 naming the keys), so an interrupted sweep resumes.
Tune on validation; report test. `launch/slurm_sweep.sbatch` fans a sweep out as a SLURM array.

The launcher is `lix_jax.main` (flags live there); this module is the library it calls.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from lix_jax import config as config_lib
from lix_jax.experiments import results_csv

# Modes a sweep entry may run, and the trainer role whose stored config decides re-use.
SWEEP_MODES = {"train_teacher": "teacher", "train_student": "student", "distill": "distill"}

def load_module(path: str, name: str = "lix_sweep"):
  """A sweep file as a module (a later stage reads an earlier stage's file through it)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sweep(path: str) -> list[dict[str, Any]]:
  """The entries of a sweep file (each a dict with a unique `name`)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--sweep={path}: no such file")
  entries = load_module(path).get_sweep()
  names = [e.get("name") for e in entries]
  if None in names or len(set(names)) != len(names):
    raise ValueError(f"{path}: every entry needs a unique 'name', got {names}")
  return entries


def _entry_result(config, workdir: str) -> dict[str, Any] | None:
  from lix_jax.experiments import pipeline  # noqa: PLC0415 (the heavy imports after set-up)
  return pipeline.finished_result(workdir, config, SWEEP_MODES[config.mode])


def run_sweep(base, sweep_path: str, workdir: str, *, index: int | None,
              dispatch: Callable[[Any, str], Any]) -> list[dict[str, Any]]:
  """Runs the sweep's entries (all unfinished ones, or only `index`) and collects the finished.

  Without `index`, `sweep.csv` / `sweep.md` are written again after every entry that ran (rows of
  unfinished entries empty), so a sweep that takes days has its table while it runs.

  Args:
    base: the config every entry's overrides apply to.
    sweep_path: the sweep file.
    workdir: the sweep's folder; entry `name` runs in `<workdir>/<name>`.
    index: run only this entry (0-based) and do not collect; None = all, then collect.
    dispatch: runs one config in one workdir (the CLI's, with its error handling).

  Returns:
    The rows written to `sweep.csv` (empty when `index` is given).
  """
  entries = load_sweep(sweep_path)
  configs = {e["name"]: config_lib.with_overrides(base, e) for e in entries}  # All keys, up front.
  for name, c in configs.items():
    if c.mode not in SWEEP_MODES:
      raise ValueError(f"sweep entry {name!r}: mode={c.mode!r}; a sweep runs one of "
                       f"{sorted(SWEEP_MODES)} per entry (set --config.mode)")
  workdir = os.path.abspath(workdir)
  names = list(configs)
  if index is not None:
    if not 0 <= index < len(names):
      raise ValueError(f"--sweep_index={index}: {sweep_path} has {len(names)} entries "
                       f"(0..{len(names) - 1})")
    names = [names[index]]
  for name in names:
    entry_dir = os.path.join(workdir, name)
    if _entry_result(configs[name], entry_dir) is None:
      logging.info("sweep entry %s -> %s", name, entry_dir)
      dispatch(configs[name], entry_dir)
      if index is None:
        collect(entries, configs, workdir)
  if index is not None:
    return []
  rows = collect(entries, configs, workdir)
  for row in rows:
    miou = row["val_miou"]
    print(f"{row['name']}: validation mIoU "
          f"{'not finished' if miou == '' else f'{100 * float(miou):.2f} %'}")
  return rows


def collect(entries: list[dict[str, Any]], configs: dict[str, Any], workdir: str
            ) -> list[dict[str, Any]]:
  """Writes `sweep.csv` and `sweep.md`: one row per entry, empty metrics for unfinished ones."""
  keys = sorted({k for e in entries for k in e if k != "name"})
  rows, classes = [], []
  for entry in entries:
    name = entry["name"]
    result = _entry_result(configs[name], os.path.join(workdir, name))
    metrics = (result or {}).get("validation") or {}
    row = {"name": name, **{k: json.dumps(entry[k]) if k in entry else "" for k in keys},
           "step": (result or {}).get("step", ""),
           "val_miou": metrics.get("miou", ""), "val_pixel_acc": metrics.get("pixel_acc", "")}
    for key, iou in metrics.items():
      if key.startswith("iou/"):
        cls = key.split("/", 1)[1]
        row[f"val_iou_{cls}"] = iou
        if cls not in classes:
          classes.append(cls)
    rows.append(row)
  columns = ["name", *keys, "step", "val_miou", "val_pixel_acc", *[f"val_iou_{c}" for c in classes]]
  results_csv.write_csv(os.path.join(workdir, "sweep.csv"), rows, columns)
  with open(os.path.join(workdir, "sweep.md"), "w") as f:
    f.write(markdown(rows, keys))
  return rows


def markdown(rows: list[dict[str, Any]], keys: list[str]) -> str:
  """The sweep as a table: overrides, validation mIoU (%), best entry in bold."""
  finished = [float(r["val_miou"]) for r in rows if r["val_miou"] != ""]
  best = max(finished) if finished else None
  lines = ["| entry | " + " | ".join(keys) + " | validation mIoU (%) |",
           "|---|" + "---|" * (len(keys) + 1)]
  for r in rows:
    miou = "not finished" if r["val_miou"] == "" else f"{100 * float(r['val_miou']):.2f}"
    if best is not None and r["val_miou"] != "" and float(r["val_miou"]) == best:
      miou = f"**{miou}**"
    lines.append(f"| {r['name']} | " + " | ".join(r[k] for k in keys) + f" | {miou} |")
  return "\n".join(lines) + "\n"

