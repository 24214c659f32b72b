r"""Sweeps: one config run once per entry of a sweep file, each in `<workdir>/<entry name>`.

  python -m lix_jax.main --config=configs/synthetic.py --sweep=configs/sweeps/kappa.py \
      --workdir=workdirs/sweep_kappa [--config.<key>=... applied to every entry]
  python -m lix_jax.main ... --sweep_index=3      # one entry only (a SLURM array task, a TPU queue)

A sweep file defines `get_sweep() -> list[dict]`; each dict has a `name` and flattened config
overrides (`"distill.kappa": -2.0`). Every key must exist in the config (checked for all entries
before anything runs). Without `--sweep_index` the entries not finished yet are run in order and
every finished entry is collected into `<workdir>/sweep.csv` and `sweep.md` (overrides, validation
mIoU and per-class IoU) after each entry and at the end: after an array job has run each index,
the same command only collects (`--sweep_collect`: collect and run nothing, e.g. while array
tasks or other workers still run). Finished entries are re-used when their stored config equals the
requested one (DESIGN §6; otherwise exit 2 naming the keys), so an interrupted sweep resumes.
Tune on validation; report test. `launch/slurm_sweep.sbatch` fans a sweep out as a SLURM array.

Several workers may run the same command on one workdir: each entry is claimed with an advisory
lock (`<workdir>/.claims/<name>`, released when its process ends, however it ends), and a worker
passes over entries another one is running. `--sweep_results=T` takes a sweep table written
elsewhere (a committed `results/sweeps/*.csv`, another machine's workdir): its finished entries are
not run again and fill their rows of this table, provided their overrides equal the sweep file's
(else exit 2 naming the entry and key). A workdir's own finished run wins over the table, and an
entry that a student still to run distils from (`distill.teacher_workdir`) runs again.

The launcher is `lix_jax.main` (flags live there); this module is the library it calls.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterator
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


def results_table(path: str, entries: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
  """The finished rows (by entry name) of a sweep table written elsewhere (`--sweep_results`).

  Raises:
    FileNotFoundError: no such table.
    ValueError: the table names an entry the sweep file lacks, or a finished row whose overrides
      differ from the sweep file's (entry, key and both values named).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"--sweep_results={path}: no such file")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    rows, columns = list(reader), reader.fieldnames or []
  by_name = {e["name"]: e for e in entries}
  unknown = [r["name"] for r in rows if r["name"] not in by_name]
  if unknown:
    raise ValueError(f"{path}: entries {unknown} are not in the sweep file")
  if "step" not in columns:
    raise ValueError(f"{path}: not a sweep table (no 'step' column; columns {columns})")
  override_columns = set(columns[1:columns.index("step")])  # `collect`'s: name, overrides, step, ...
  finished = {}
  for row in rows:
    if row.get("val_miou", "") == "":
      continue
    entry = by_name[row["name"]]
    for key in sorted(set(entry) - {"name"} | override_columns):
      want = json.dumps(entry[key]) if key in entry else ""
      if row.get(key, "") != want:
        raise ValueError(f"{path}: entry {row['name']!r} was run with {key}={row.get(key, '')!r}, "
                         f"the sweep file asks for {want!r}")
    finished[row["name"]] = row
  return finished


@contextlib.contextmanager
def _claim(workdir: str, name: str) -> Iterator[bool]:
  """Holds `<workdir>/.claims/<name>` (flock, non-blocking): yields False if another process has it.
  The kernel drops the lock when its process ends, so an interrupted worker leaves nothing stale."""
  os.makedirs(os.path.join(workdir, ".claims"), exist_ok=True)
  with open(os.path.join(workdir, ".claims", name), "w") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield False
      return
    try:
      yield True
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def run_sweep(base, sweep_path: str, workdir: str, *, index: int | None,
              dispatch: Callable[[Any, str], Any], results: str | None = None,
              collect_only: bool = False) -> list[dict[str, Any]]:
  """Runs the sweep's entries (all unfinished ones, or only `index`) and collects the finished.

  Without `index`, `sweep.csv` / `sweep.md` are written again after every entry that ran (rows of
  unfinished entries empty), so a sweep that takes days has its table while it runs. An entry
  another worker is running (its claim is held) is passed over; with `index`, that is an error.

  Args:
    base: the config every entry's overrides apply to.
    sweep_path: the sweep file.
    workdir: the sweep's folder; entry `name` runs in `<workdir>/<name>`.
    index: run only this entry (0-based) and do not collect; None = all, then collect.
    dispatch: runs one config in one workdir (the CLI's, with its error handling).
    results: a sweep table from elsewhere whose finished entries count as done (`results_table`).
    collect_only: run nothing; only write the table of what has finished.

  Returns:
    The rows written to `sweep.csv` (empty when `index` is given).
  """
  entries = load_sweep(sweep_path)
  configs = {e["name"]: config_lib.with_overrides(base, e) for e in entries}  # All keys, up front.
  for name, c in configs.items():
    if c.mode not in SWEEP_MODES:
      raise ValueError(f"sweep entry {name!r}: mode={c.mode!r}; a sweep runs one of "
                       f"{sorted(SWEEP_MODES)} per entry (set --config.mode)")
  done_elsewhere = results_table(results, entries) if results else {}
  workdir = os.path.abspath(workdir)
  # An entry that a student still to run here distils from (a sweep that trains its own teacher)
  # runs here again, finished elsewhere or not: the student needs its checkpoint, not its row.
  teachers = {os.path.abspath(c.distill.teacher_workdir) for name, c in configs.items()
              if c.mode == "distill" and c.distill.teacher_workdir and name not in done_elsewhere}
  done_elsewhere = {name: row for name, row in done_elsewhere.items()
                    if os.path.join(workdir, name) not in teachers}
  names = list(configs)
  if collect_only and index is not None:
    raise ValueError(f"--sweep_index={index} runs one entry and --sweep_collect runs none; "
                     "give one of them")
  if collect_only:
    names = []
  if index is not None:
    if not 0 <= index < len(names):
      raise ValueError(f"--sweep_index={index}: {sweep_path} has {len(names)} entries "
                       f"(0..{len(names) - 1})")
    names = [names[index]]
  for name in names:
    entry_dir = os.path.join(workdir, name)
    if _entry_result(configs[name], entry_dir) is not None:
      continue
    if name in done_elsewhere:
      logging.info("sweep entry %s: finished in %s", name, results)
      continue
    with _claim(workdir, name) as mine:
      if not mine:
        if index is not None:
          raise RuntimeError(f"sweep entry {name!r} is being run by another process (it holds "
                             f"{os.path.join(workdir, '.claims', name)})")
        logging.info("sweep entry %s: another worker is running it; passed over", name)
        continue
      if _entry_result(configs[name], entry_dir) is None:  # It may have finished meanwhile.
        logging.info("sweep entry %s -> %s", name, entry_dir)
        dispatch(configs[name], entry_dir)
    if index is None:
      collect(entries, configs, workdir, done_elsewhere)
  if index is not None:
    return []
  rows = collect(entries, configs, workdir, done_elsewhere)
  for row in rows:
    miou = row["val_miou"]
    print(f"{row['name']}: validation mIoU "
          f"{'not finished' if miou == '' else f'{100 * float(miou):.2f} %'}")
  return rows


def collect(entries: list[dict[str, Any]], configs: dict[str, Any], workdir: str,
            done_elsewhere: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
  """Writes `sweep.csv` and `sweep.md`: one row per entry, empty metrics for unfinished ones; an
  entry this workdir has not finished takes its row from `done_elsewhere` when that has it."""
  done_elsewhere = done_elsewhere or {}
  keys = sorted({k for e in entries for k in e if k != "name"})
  rows, classes = [], []
  for entry in entries:
    name = entry["name"]
    result = _entry_result(configs[name], os.path.join(workdir, name))
    if result is None and name in done_elsewhere:
      row = done_elsewhere[name]
      metrics = {k[len("val_"):].replace("iou_", "iou/", 1): v for k, v in row.items()
                 if k.startswith("val_") and v != ""}
      result = {"step": row["step"], "validation": metrics}
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
  tmp = os.path.join(workdir, f"sweep.md.{os.getpid()}.tmp")
  with open(tmp, "w") as f:
    f.write(markdown(rows, keys))
  os.replace(tmp, os.path.join(workdir, "sweep.md"))
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

