"""The house rules of DESIGN §7, read from the code's own imports (issue 21).

Dependencies point one way: kernels <- losses <- train <- experiments <- main; models, data and the
pictures (viz, plots) import no trainer; nothing imports `main`; no import cycles (function-level
imports included); no file over ~400 lines; every `distill.*` default lives in `lix_jax/config.py`
(and a public loss or kernel's signature default equals it).
"""
from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PACKAGE = os.path.join(ROOT, "lix_jax")
MAX_LINES = 410


def _modules() -> dict[str, str]:
  """Dotted module name -> path, for every file of the package."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = path
  return out


MODULES = _modules()


def _imports(path: str, module: str) -> set[str]:
  """The lix_jax modules `module` imports, anywhere in the file (lazy imports count too)."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      # `from lix_jax.x import y`: y is a module when a file of that name exists.
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in MODULES:
        name = name.rpartition(".")[0]
      if name.startswith("lix_jax") and name not in ("lix_jax", module):
        found.add(name)
  return found


GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _layer(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "lix_jax"


# Which layers each layer may import (beyond itself and the package's `lix_jax/__init__.py`).
ALLOWED = {
    "kernels": set(), "kr_fused": {"kernels"},
    "losses": {"kernels", "kr_fused"},
    "models": set(), "data": set(), "viz": set(), "plots": {"viz"}, "config": set(),
    "train": {"kernels", "kr_fused", "losses", "models", "data", "config"},
    "experiments": {"kernels", "kr_fused", "losses", "models", "data", "config", "viz", "plots",
                    "train"},
    "sweep": set(),  # The `python -m lix_jax.sweep` name: execs main, imports nothing of ours.
    "main": {"experiments", "train", "config"},
}


def test_every_module_has_a_layer():
  assert {_layer(m) for m in MODULES} - {"lix_jax"} <= set(ALLOWED), sorted(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "lix_jax"))
def test_dependencies_point_one_way(module):
  layer = _layer(module)
  bad = sorted(m for m in GRAPH[module]
               if _layer(m) not in ALLOWED[layer] | {layer, "lix_jax"})
  assert not bad, f"{module} ({layer}) imports {bad}; DESIGN §7 allows {sorted(ALLOWED[layer])}"


def test_nothing_imports_main():
  assert not [m for m, deps in GRAPH.items() if "lix_jax.main" in deps]


def test_no_import_cycles():
  seen, on_path, cycles = set(), [], []

  def visit(module):
    if module in on_path:
      cycles.append(on_path[on_path.index(module):] + [module])
      return
    if module in seen:
      return
    seen.add(module)
    on_path.append(module)
    for dep in sorted(GRAPH[module]):
      visit(dep)
    on_path.pop()

  for module in sorted(GRAPH):
    visit(module)
  assert not cycles, cycles


def test_rule_checker_sees_lazy_and_relative_imports():
  """The checks above cannot pass by reading nothing: known edges are found."""
  assert "lix_jax.experiments.export" in GRAPH["lix_jax.experiments.predict"]  # Function-level.
  assert "lix_jax.train.loop" in GRAPH["lix_jax.experiments.pipeline"]
  assert "lix_jax.losses.dwc" in GRAPH["lix_jax.losses.logit"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_file_over_about_400_lines(module):
  with open(MODULES[module], encoding="utf-8") as f:
    lines = sum(1 for _ in f)
  assert lines <= MAX_LINES, f"{MODULES[module]}: {lines} lines"


def test_distill_defaults_live_in_config_only():
  """No `cfg.get("kappa", 1.0)`-style fallback and no defaults table outside `lix_jax/config.py`:
  the loss builder reads every key from the config (a missing key is an error naming it)."""
  from lix_jax.config import base_config  # noqa: PLC0415
  from lix_jax.losses import registry  # noqa: PLC0415
  assert not hasattr(registry, "DEFAULTS")
  keys = "|".join(re.escape(k) for k in base_config().distill)
  fallback = re.compile(rf"""\.get\(\s*["']({keys})["']\s*,|getattr\([^)]*["']({keys})["']\s*,""")
  offenders = []
  for module, path in MODULES.items():
    if module == "lix_jax.config":
      continue
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
      if fallback.search(line):
        offenders.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
  assert not offenders, offenders



# Signature defaults (DESIGN §3): a public function of the functional API that has a default for a
# hyper-parameter has the config's default. Parameter name -> `distill` key; then per function.
HYPER_KEYS = {name: name for name in (
    "alpha", "beta", "temperature", "controller", "kappa", "class_balance", "sigma", "mix",
    "lambda_kr", "lambda_cka", "kernel", "stride", "cka_max_pixels", "kr_impl")}
HYPER_KEYS_OF = {
    "lix_jax.losses.feature.kr_recalibrate": {"impl": "kr_impl", "block_size": "kr_block_size"},
    "lix_jax.losses.feature.arfd_loss": {"block_size": "kr_block_size"},
    "lix_jax.losses.feature.at_loss": {"p": "at_p"},
    "lix_jax.losses.feature.cwd_loss": {"temperature": "cwd_temperature or temperature"},
    "lix_jax.losses.logit.pseudo_label_loss": {"threshold": "pl_threshold"},
}
# Defaulted parameters that are no config key: data, masks and collectives; estimator variants the
# config does not expose; and execution knobs of the kernels, which leave the value unchanged
# (`kernel_regression`'s block_size=1024 is DESIGN §3's own).
NOT_HYPER = {"valid_mask", "axis_name", "ignore_index", "weights", "key_mask", "log_prior",
             "unbiased", "normalize", "symmetric", "block_size", "block_q", "block_k", "interpret",
             "backend", "num_warps", "num_stages", "budget"}


def _public_functions():
  import importlib  # noqa: PLC0415
  import inspect  # noqa: PLC0415
  for name in sorted(m for m in MODULES if m.split(".")[1:2] in (["losses"], ["kernels"],
                                                                 ["kr_fused"])):
    module = importlib.import_module(name)
    for attr, fn in sorted(vars(module).items()):
      if not attr.startswith("_") and inspect.isfunction(fn) and fn.__module__ == name:
        yield f"{name}.{attr}", inspect.signature(fn)


def test_signature_defaults_are_the_configs():
  """Every defaulted parameter of every public function of `lix_jax.losses`, `lix_jax.kernels`
  and `lix_jax.kr_fused` is either a hyper-parameter whose default equals `base_config().distill`'s
  value, or one of `NOT_HYPER`; a new defaulted parameter must be put in one or the other."""
  from lix_jax.config import base_config  # noqa: PLC0415
  distill = base_config().distill
  # CWD's temperature: `cwd_temperature`, 0 = `temperature` (the registry resolves it so).
  config = {**distill.to_dict(),
            "cwd_temperature or temperature": distill.cwd_temperature or distill.temperature}
  checked, offenders = 0, []
  for qualname, signature in _public_functions():
    keys = dict(HYPER_KEYS, **HYPER_KEYS_OF.get(qualname, {}))
    for param in signature.parameters.values():
      if param.default is param.empty:
        continue
      if param.name in keys:
        checked += 1
        key = keys[param.name]
        value = config[key]
        value = tuple(value) if isinstance(value, list) else value
        if param.default != value or type(param.default) is not type(value):
          offenders.append(f"{qualname}({param.name}={param.default!r}): config.py has "
                           f"distill.{key}={value!r}")
      elif param.name not in NOT_HYPER:
        offenders.append(f"{qualname}({param.name}={param.default!r}): not a known config key "
                         f"(map it in HYPER_KEYS / HYPER_KEYS_OF, or add it to NOT_HYPER)")
  assert not offenders, "signature defaults that disagree with lix_jax/config.py:\n" + "\n".join(
      offenders)
  assert checked >= 10  # The walk found the ARFD, DWLD and pseudo-label defaults.

def test_ci_runs_exactly_the_readme_test_command():
  """The brief's rule: `.ci/run` runs the README's test command, character for character."""
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read().splitlines()
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci_commands = [l for l in f.read().splitlines() if l and not l.startswith("#")]
  marker = next(i for i, l in enumerate(readme) if l.startswith("# 2. Run the tests"))
  assert readme[marker + 1] == ci_commands[-1]
  assert "pytest" in ci_commands[-1]
