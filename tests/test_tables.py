"""lix_jax.experiments.tables: every generated table of README.md and docs/ is its results file's
own, and the rewrite command puts a stale one back."""
from __future__ import annotations

import os
import shutil

import pytest

from lix_jax.experiments import tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path):
  with open(os.path.join(*path)) as f:
    return f.read()


@pytest.mark.parametrize("page,block", [(p, b) for b in tables.BLOCKS for p in b.pages],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_each_page_shows_the_table_computed_from_its_results_file(page, block):
  assert tables.shown(_read(ROOT, page), block.name, page) == block.make(ROOT), (
      f"{page}'s '{block.name}' table is stale: run `python -m lix_jax.experiments.tables` "
      "from the repository root")


def test_replace_touches_only_the_named_block():
  text = ("intro\n<!-- a: generated, do not edit -->\n| old |\n<!-- /a -->\nmiddle\n"
          "<!-- b: generated, do not edit -->\n| keep |\n<!-- /b -->\nend\n")
  new = tables.replace(text, "a", "| new |\n| rows |\n")
  assert new == text.replace("| old |\n", "| new |\n| rows |\n")
  assert tables.shown(new, "b") == "| keep |\n"


@pytest.mark.parametrize("text,found", [("no markers here\n", 0),
                                        ("<!-- a: generated, do not edit -->\nx\n<!-- /a -->\n" * 2, 2)])
def test_a_missing_or_repeated_block_names_the_page_and_block(text, found):
  with pytest.raises(ValueError, match=rf"README.md: expected one '<!-- a: generated, do not edit "
                                       rf"-->' .* found {found}"):
    tables.shown(text, "a", "README.md")


def test_the_command_rewrites_a_stale_table_and_nothing_else(tmp_path, monkeypatch, capsys):
  for d in ("results", "configs", "docs"):
    shutil.copytree(os.path.join(ROOT, d), tmp_path / d)
  shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
  fresh = _read(tmp_path, "README.md")
  # A result merged after the page was written: the README's table of it is now stale.
  table = tables.shown(fresh, "converged table")
  edited = table.replace("| 3 |", "| 9 |", 1)  # The teacher's seed count.
  assert edited != table
  (tmp_path / "README.md").write_text(fresh.replace(table, edited))
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit, match="1"):
    tables.main(["--check"])
  assert capsys.readouterr().out == "README.md: 'converged table' is stale\n"
  tables.main([])
  assert capsys.readouterr().out == "README.md: 'converged table' rewritten\n"
  assert _read(tmp_path, "README.md") == fresh
  assert tables.stale(str(tmp_path)) == []
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
