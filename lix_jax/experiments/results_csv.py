"""Results CSV files: the DESIGN §6 columns, atomic writes, and merging runs into committed files.

Light on purpose (csv and os only): the benchmark's table CLI and `experiments.confusion` read and
write results files without importing jax.
"""
from __future__ import annotations

import csv
import os
from typing import Any

RESULT_COLUMNS = ("model", "method", "fusion", "x_modality", "regime", "seed", "miou", "pixel_acc")


def write_csv(path: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
  """Writes `rows` to `path` atomically (a reader never sees half a file); `columns` default to the
  results columns of DESIGN §6 then the rows' `iou_<class>` columns; missing cells are empty."""
  if columns is None:
    columns = list(RESULT_COLUMNS) + [k for k in rows[0] if k.startswith("iou_")]
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"  # Per process: workers of one sweep rewrite the same table.
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def read_csv(path: str) -> list[dict[str, Any]]:
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ValueError(f"{path}: no rows")
  return rows


def run_key(r: dict[str, Any]) -> tuple:
  return tuple(str(r[k]) for k in ("model", "method", "fusion", "x_modality", "regime", "seed"))


def merge_csv(into: str, new: str, *, replace: bool = False) -> list[dict[str, Any]]:
  """Appends to the results file `into` the rows of `new` (a benchmark workdir's benchmark.csv)
  whose run (model, method, fusion, X, regime, seed) `into` lacks; returns the appended rows.

  A run already in `into` is kept as it is (the committed figure stays the one quoted), unless
  `replace`: then its row takes `new`'s values in place (a run re-done with today's code
  supersedes the committed one), and it is returned too."""
  with open(into, newline="") as f:
    text = f.read()
  rows = read_csv(into)
  columns = list(rows[0])
  incoming = {run_key(r): r for r in read_csv(new)}
  changed = []
  if replace:
    for i, r in enumerate(rows):
      fresh = incoming.get(run_key(r))
      if fresh is not None and any(str(fresh.get(c, "")) != str(r[c]) for c in columns):
        rows[i] = {c: fresh.get(c, "") for c in columns}
        changed.append(rows[i])
  have = {run_key(r) for r in rows}
  added = [r for k, r in incoming.items() if k not in have]
  if added or changed:
    terminator = "\r\n" if "\r\n" in text else "\n"
    with open(into + ".tmp", "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=columns, lineterminator=terminator,
                              extrasaction="raise")
      writer.writeheader()
      writer.writerows(rows + added)
    os.replace(into + ".tmp", into)
  return changed + added
