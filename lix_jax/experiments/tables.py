"""Every generated table of README.md and docs/, computed from the files under results/.

A generated table sits between two markers on its page,

    <!-- NAME: generated, do not edit -->
    ...the table...
    <!-- /NAME -->

and `BLOCKS` says which results file and which function make it. After merging runs into a
results file, rewrite every table in place (from the repository root):

    python -m lix_jax.experiments.tables            # rewrite the stale tables, list them
    python -m lix_jax.experiments.tables --check    # only list them; exit status 1 if any

`tests/test_tables.py` holds each page to this output, so a table never drifts from its file.
Prose figures are quoted with `benchmark.figure` and checked by `tests/test_benchmark.py`.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Sequence

from lix_jax.experiments import benchmark, confusion, results_csv, sweep

BENCHMARK_CONFIG = "configs/benchmark.py"
# The class columns of the train-vs-validation fit table, and its runs' class-pair table.
FIT_CLASSES = ("wall", "pole", "person", "car")
PAIR_RUNS = ("teacher", "ce", "all_labeled", "kd", "cwd", "lix")
# Each study table's students, each measured against its own width's CE student (issue 23 §2).
LEVER_ROWS = (("ce", "ce"), ("lix", "ce"), ("taps_stage2", "ce"), ("unlabeled_batch_32", "ce"))
CAPACITY_ROWS = (("ce", "ce"), ("all_labeled", "ce"), ("cwd", "ce"), ("lix", "ce"),
                 ("ce_wide", "ce_wide"), ("all_labeled_wide", "ce_wide"), ("cwd_wide", "ce_wide"),
                 ("lix_wide", "ce_wide"))


@dataclasses.dataclass(frozen=True)
class Block:
  """One generated table: its marker name, the pages that show it, and how to make it from the
  repository root."""
  name: str
  pages: tuple[str, ...]
  make: Callable[[str], str]


def _csv(root: str, *path: str) -> list[dict]:
  return results_csv.read_csv(os.path.join(root, "results", *path))


def _table(root: str):
  return benchmark.load_table(os.path.join(root, BENCHMARK_CONFIG))


def _benchmark_table(name: str) -> Callable[[str], str]:
  return lambda root: benchmark.table_markdown(_table(root), _csv(root, name))


def _per_seed(regime: str) -> Callable[[str], str]:
  return lambda root: benchmark.per_seed_markdown(_table(root), _csv(root, "benchmark_converged.csv"),
                                                  regime)


def _teacher_validation(root: str) -> float:
  """The converged seed-0 teacher's validation mIoU (its plain view), every recipe stage's top."""
  plain = [r for r in _csv(root, "sweeps", "teacher_views_seed0_validation.csv") if r["view"] == "plain"]
  return float(plain[0]["miou"])


def _recipe_stage1(root: str) -> str:
  """Stage 1 of the recipe sweep, against the seed-0 teacher's plain validation mIoU."""
  stage = sweep.load_module(os.path.join(root, "configs", "sweeps", "recipe_seed0.py"), "recipe_seed0")
  return stage.table_markdown(_csv(root, "sweeps", "recipe_seed0_validation.csv"),
                              _teacher_validation(root))


def _recipe_stage2(root: str) -> str:
  """Stage 2 of the recipe sweep (patience), with stage 1's 2 000-step scores beside it."""
  stage = sweep.load_module(os.path.join(root, "configs", "sweeps", "recipe_patience_seed0.py"),
                            "recipe_patience_seed0")
  return stage.table_markdown(_csv(root, "sweeps", "recipe_seed0_validation.csv"),
                              _csv(root, "sweeps", "recipe_patience_seed0_validation.csv"),
                              _teacher_validation(root),
                              os.path.join(root, "results", "sweeps", "recipe_seed0_validation.csv"))


def _gap(name: str, rows: Sequence[tuple[str, str]]) -> Callable[[str], str]:
  return lambda root: confusion.gap_markdown(_csv(root, "sweeps", name), rows)


BLOCKS = (
    Block("benchmark table", ("docs/benchmark.md",), _benchmark_table("benchmark.csv")),
    Block("long table", ("docs/benchmark.md",), _benchmark_table("benchmark_long.csv")),
    Block("converged table", ("README.md", "docs/benchmark.md"),
          _benchmark_table("benchmark_converged.csv")),
    Block("converged per-seed unlabeled", ("docs/benchmark.md",), _per_seed("unlabeled")),
    Block("converged per-seed labeled", ("docs/benchmark.md",), _per_seed("labeled")),
    Block("gap fit", ("docs/benchmark.md",), lambda root: confusion.fit_markdown(
        _csv(root, "sweeps", "gap_seed1_validation_runs.csv"),
        _csv(root, "sweeps", "gap_seed1_train_runs.csv"), FIT_CLASSES)),
    Block("gap pairs", ("docs/benchmark.md",), lambda root: confusion.excess_markdown(
        _csv(root, "sweeps", "gap_seed1_validation_pairs.csv"), list(PAIR_RUNS), "teacher", 6)),
    Block("gap levers", ("docs/benchmark.md",), _gap("levers_seed0_validation_runs.csv", LEVER_ROWS)),
    Block("gap capacity", ("docs/benchmark.md",),
          _gap("capacity_seed0_validation_runs.csv", CAPACITY_ROWS)),
    Block("recipe stage 1", ("docs/benchmark.md",), _recipe_stage1),
    Block("recipe stage 2", ("docs/benchmark.md",), _recipe_stage2),
)


def _pattern(name: str) -> re.Pattern:
  return re.compile(rf"(<!-- {re.escape(name)}: generated, do not edit -->\n)(.*?)(<!-- /{re.escape(name)} -->)",
                    re.DOTALL)


def shown(text: str, name: str, page: str = "the page") -> str:
  """The table between block `name`'s markers in `text` (error naming the page if absent)."""
  found = _pattern(name).findall(text)
  if len(found) != 1:
    raise ValueError(f"{page}: expected one '<!-- {name}: generated, do not edit -->' ... "
                     f"'<!-- /{name} -->' block, found {len(found)}")
  return found[0][1]


def replace(text: str, name: str, table: str, page: str = "the page") -> str:
  """`text` with block `name`'s table replaced by `table`."""
  shown(text, name, page)  # Exactly one block, or a clear error.
  return _pattern(name).sub(lambda m: m[1] + table + m[3], text)


def stale(root: str = ".", write: bool = False) -> list[tuple[str, str]]:
  """(page, block) of every table that differs from its results; with `write`, rewrite them
  (each page written whole to a temporary file, then renamed over the page)."""
  made = {block.name: block.make(root) for block in BLOCKS}  # Once, though some are on two pages.
  out = []
  for page in sorted({p for block in BLOCKS for p in block.pages}):
    path = os.path.join(root, page)
    with open(path) as f:
      text = new = f.read()
    for block in (b for b in BLOCKS if page in b.pages):
      table = made[block.name]
      if shown(new, block.name, page) != table:
        out.append((page, block.name))
        new = replace(new, block.name, table, page)
    if write and new != text:
      with open(path + ".tmp", "w") as f:
        f.write(new)
      os.replace(path + ".tmp", path)
  return out


def main(argv: list[str]) -> None:
  check = "--check" in argv
  changed = stale(".", write=not check)
  for page, name in changed:
    print(f"{page}: '{name}' {'is stale' if check else 'rewritten'}")
  if check and changed:
    sys.exit(1)


if __name__ == "__main__":
  main(sys.argv[1:])
