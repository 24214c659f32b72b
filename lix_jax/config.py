"""Run configs: which keys shape a run, and how a stored config compares with a requested one.

A workdir holds one run of one role; its `config.json` (and the `config` item of every checkpoint)
records the config it was trained with. Before resuming or re-using a run, the requested config is
compared with the stored one (DESIGN §6 "Only corruption is skipped"):

- keys that shape the state or the trajectory — models, data, optimiser, method and its weights,
  seed, batch — must be equal; a difference is a `ConfigMismatchError` (exit 2) naming each key;
- keys that only extend or observe a run (`OBSERVE_KEYS`: `train.num_steps`, logging / evaluation
  / checkpoint intervals, paths, threads, the parallel backend) may change; the run resumes.

Only the sections a role reads are compared (`ROLE_SECTIONS`): a teacher run does not care about
`student.*` or `distill.*`, so a benchmark re-uses its teachers across student methods. A key absent
from a stored config (written before the key existed) counts as its default in `base_config()`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

# Sections of the config that shape a run, per role; `seed` always does.
ROLE_SECTIONS: dict[str, tuple[str, ...]] = {
    "teacher": ("data", "train", "optim", "teacher"),
    "student": ("data", "train", "optim", "student"),
    "distill": ("data", "train", "optim", "teacher", "student", "distill"),
}

# Keys inside those sections that only extend or observe a run: changing them resumes.
OBSERVE_KEYS = frozenset({
    "train.num_steps", "train.log_every", "train.eval_every", "train.ckpt_every",
    "train.keep_checkpoints", "train.max_bad_steps", "train.progress", "train.restart",
    "train.eval_batch_size",
    "data.data_dir", "data.root", "data.num_threads", "data.num_workers", "data.eval_split",
    "data.test_split",
    # Where the frozen teacher lives (a path); its own config is checked when it is restored.
    "distill.teacher_workdir",
    # Implementation and memory knobs of the same formula.
    "distill.kr_impl", "distill.kr_block_size",
})


class ConfigMismatchError(ValueError):
  """A workdir holds a run of another config (main turns it into one line and exit status 2)."""


def _plain(value: Any) -> Any:
  """JSON-normal form (tuples as lists, ConfigDicts as dicts), as `config.json` stores values."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  return json.loads(json.dumps(value, default=list))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}` (ConfigDicts too); leaves in JSON-normal form."""
  out: dict[str, Any] = {}
  for key, value in _plain(tree).items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def _shapes_run(key: str, role: str) -> bool:
  section = key.split(".", 1)[0]
  if key in OBSERVE_KEYS:
    return False
  return key == "seed" or section in ROLE_SECTIONS[role]


def run_config_diff(stored: Mapping[str, Any], requested: Mapping[str, Any], role: str
                    ) -> list[str]:
  """The keys that shape a `role` run and differ, as `"key: stored -> requested"` strings.

  Args:
    stored: the config a run was trained with (`config.json`, a plain dict).
    requested: the config asked for now (dict or ConfigDict).
    role: "teacher" | "student" | "distill" (selects `ROLE_SECTIONS`).

  Returns:
    Sorted differences; empty when the run may be resumed or re-used.
  """
  if role not in ROLE_SECTIONS:
    raise KeyError(f"Unknown role {role!r}. Available roles are: {sorted(ROLE_SECTIONS)}")
  return _differences(stored, requested, lambda key: _shapes_run(key, role))


def _differences(stored: Mapping[str, Any], requested: Mapping[str, Any],
                 counts: Callable[[str], bool]) -> list[str]:
  """`"key: stored -> requested"` for each flattened key that `counts` and whose values differ; a
  key absent from one side counts as its `base_config()` default there."""
  from lix_jax.config_defaults import base_config  # noqa: PLC0415
  defaults = flatten(base_config())
  old, new = flatten(stored), flatten(requested)
  missing = object()
  show = lambda v: "(absent)" if v is missing else json.dumps(v)  # noqa: E731
  diffs = []
  for key in sorted(set(old) | set(new)):
    if not counts(key):
      continue
    a, b = old.get(key, defaults.get(key, missing)), new.get(key, defaults.get(key, missing))
    if a != b:
      diffs.append(f"{key}: {show(a)} -> {show(b)}")
  return diffs


def check_same_run(stored: Mapping[str, Any], requested: Mapping[str, Any], role: str, *,
                   where: str, finished: bool = False) -> None:
  """Raises `ConfigMismatchError` (one line naming the keys) when `run_config_diff` is not empty."""
  diffs = run_config_diff(stored, requested, role)
  if not diffs:
    return
  what = "a finished run" if finished else "a run"
  raise ConfigMismatchError(
      f"{where} holds {what} of another config ({'; '.join(diffs)}). Rerun with the stored config "
      f"({where}/config.json), choose another --workdir, or add --config.train.restart=True to "
      "start over (the old run is moved to previous_<time>/, not deleted)")


# What a distillation config must share with its frozen teacher's run: the teacher network and the
# data it reads (weights of another shape would not restore; another X would be a silent misuse).
TEACHER_KEYS = ("data.name", "data.x_modality")


def check_teacher(stored: Mapping[str, Any], requested: Mapping[str, Any], *, where: str) -> None:
  """Raises `ConfigMismatchError` when the teacher run's config differs from `requested.teacher.*`
  (but `pretrained`, an initialisation only) or its data name / X modality."""
  diffs = _differences(stored, requested, lambda k: k in TEACHER_KEYS or (
      k.startswith("teacher.") and k != "teacher.pretrained"))
  if diffs:
    raise ConfigMismatchError(
        f"{where} holds a teacher of another config ({'; '.join(diffs)}); set the distillation "
        "config's teacher.* and data keys to the teacher run's (its config.json)")


def copy(config):
  """A deep, unlocked copy of a ConfigDict."""
  import ml_collections  # noqa: PLC0415  (the functional core imports no ml_collections)
  return ml_collections.ConfigDict(_plain(config) if not hasattr(config, "to_dict")
                                   else config.to_dict())


def with_overrides(config, overrides: Mapping[str, Any]):
  """A copy of `config` with flattened `overrides` (`{"distill.kappa": 2.0}`) applied.

  A `name` key is ignored (sweep entries carry one). Unknown keys raise KeyError naming them, so
  a typo in a sweep or a benchmark row fails before any training.
  """
  c = copy(config)
  for key, value in overrides.items():
    if key == "name":
      continue
    *path, leaf = key.split(".")
    parent = c
    for part in path:
      if part not in parent:
        raise KeyError(f"config override {key!r}: no config key {part!r}")
      parent = parent[part]
    if leaf not in parent:
      raise KeyError(f"config override {key!r}: no such config key")
    parent[leaf] = value
  return c
