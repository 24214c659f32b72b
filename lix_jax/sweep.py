r"""Runs one config once per entry of a sweep file, each in `<workdir>/<entry name>`.

  python -m lix_jax.sweep --config=configs/synthetic.py --sweep=configs/sweeps/kappa.py \
      --workdir=workdirs/sweep_kappa [--config.<key>=... applied to every entry]

A sweep file defines `get_sweep() -> list[dict]`; each dict has a `name` and flattened config
overrides (`"distill.kappa": -2.0`). Every key must exist in the config. Finished entries are
re-used, so an interrupted sweep resumes. The validation mIoU of each entry is printed at the end
(tune on validation; report test).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

from absl import app, flags
import ml_collections

# The CLI's own flags (--config, --workdir, --traceback) and its set-up and error handling.
from lix_jax import main as cli

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file (configs/sweeps/*.py).")


def load_sweep(path: str) -> list[dict[str, Any]]:
  spec = importlib.util.spec_from_file_location("lix_sweep", path)
  if spec is None or not os.path.exists(path):
    raise FileNotFoundError(f"--sweep={path}: no such file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  entries = module.get_sweep()
  names = [e.get("name") for e in entries]
  if None in names or len(set(names)) != len(names):
    raise ValueError(f"{path}: every entry needs a unique 'name', got {names}")
  return entries


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with flattened `overrides` applied; unknown keys raise KeyError naming them."""
  c = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    if key == "name":
      continue
    node, *path = key.split(".")
    parent = c
    for part in [node] + path[:-1]:
      if part not in parent:
        raise KeyError(f"sweep override {key!r}: no config key {part!r}")
      parent = parent[part]
    if path and path[-1] not in parent or not path and node not in c:
      raise KeyError(f"sweep override {key!r}: no such config key")
    if path:
      parent[path[-1]] = value
    else:
      c[node] = value
  return c


def main(argv):
  del argv
  base = cli._CONFIG.value
  entries = load_sweep(_SWEEP.value)
  configs = {e["name"]: apply_overrides(base, e) for e in entries}  # All keys checked up front.
  cli.setup(base)
  from lix_jax.train import experiment  # noqa: PLC0415 (after set-up, like the CLI's modes)
  results = {}
  for name, config in configs.items():
    workdir = os.path.join(os.path.abspath(cli._WORKDIR.value), name)
    result = experiment.finished_result(workdir)
    if result is None:
      result = cli.dispatch(config, workdir)
    results[name] = (result or {}).get("validation") or {}
  for name, metrics in results.items():
    print(f"{name}: validation mIoU {100 * metrics.get('miou', float('nan')):.2f} %")


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep"])
  app.run(main, flags_parser=cli._parse_flags)
