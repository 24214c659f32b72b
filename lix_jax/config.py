"""The config: every key and its one default, copies and overrides, and how runs compare.

`base_config()` holds every key with its default (DESIGN §6), once; `configs/*.py` start from it
(the synthetic presets) or from `real_config()` (the real datasets, paper-sized models) and change
what their dataset and preset need, so every config has the same keys and `--config.<key>=...`
means the same thing everywhere. `copy` and `with_overrides` are the one way to derive a config.

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
import os
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

def base_config() -> ml_collections.ConfigDict:
  """All keys with the synthetic-dataset defaults (CPU-sized models)."""
  c = ml_collections.ConfigDict()
  c.mode = "pipeline"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_driving"
  c.data.builder_config = "default"
  c.data.data_dir = "workdirs/data"  # ArrayRecord files are built here on first use.
  c.data.root = ""  # manual_dir of real-format datasets (unused by the synthetic builder).
  c.data.x_modality = "depth"  # depth | disparity | normal
  c.data.crop_hw = (64, 192)
  c.data.scale_range = (0.75, 1.5)
  c.data.flip = True
  c.data.num_threads = 2
  c.data.num_workers = 0  # > 0: grain worker processes (mp_prefetch); use on GPU/TPU hosts.
  # DESIGN §5's patient and consistent teacher (lix_jax/data/recipe.py), for students and every
  # method alike, labelled and unlabelled frames; a teacher trains with its own (`teacher.*`).
  c.data.photometric = 0.0  # Colour-jitter strength on RGB in [0, 1]; 0 = off.
  c.data.cutmix_prob = 0.0  # Probability of a box pasted from another image of the batch; 0 = off.
  c.data.eval_split = "validation"
  c.data.test_split = "test"

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 800  # Students; the teacher runs pipeline.teacher_num_steps.
  c.train.batch_size = 16  # Global, over all devices and hosts.
  c.train.eval_batch_size = 32
  c.train.log_every = 50
  c.train.eval_every = 400
  c.train.ckpt_every = 400
  c.train.keep_checkpoints = 2
  c.train.max_bad_steps = 10  # Consecutive non-finite steps before the run stops.
  c.train.progress = True
  # Start over in a workdir that holds a run: its checkpoints/ and metrics.jsonl are moved to
  # <workdir>/previous_<time>/ (never deleted). Without it a changed config stops the run (exit 2).
  c.train.restart = False

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.learning_rate = 2e-3
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 100
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.grad_clip_norm = 0.0

  c.teacher = ml_collections.ConfigDict()
  c.teacher.fusion = "intermediate"  # intermediate | late
  c.teacher.fusion_block = "gated"  # add | gated
  c.teacher.backbone = "resnet18"
  c.teacher.width = 0.25
  c.teacher.stem = "deep"
  c.teacher.decoder_channels = 32
  c.teacher.dtype = "float32"
  # ImageNet weights (.safetensors / .pth of a timm or torchvision ResNet; lix_jax.models.pretrained)
  # for the RGB and X encoders; "" = from scratch.
  c.teacher.pretrained = ""
  # The teacher's own data recipe (the keys of `data.photometric` / `data.cutmix_prob`); off, a
  # teacher trains as before. Part of the teacher's identity: a distillation run names the values
  # its teacher was trained with (`check_teacher`).
  c.teacher.photometric = 0.0
  c.teacher.cutmix_prob = 0.0

  c.student = ml_collections.ConfigDict()
  c.student.backbone = "resnet18"
  c.student.width = 0.25
  c.student.stem = "deep"
  c.student.decoder_channels = 32
  c.student.dtype = "float32"
  c.student.pretrained = ""  # As teacher.pretrained, for the student's encoder.

  c.distill = ml_collections.ConfigDict()
  c.distill.method = "lix"
  c.distill.teacher_workdir = ""  # Set by the pipeline; required by mode=distill.
  c.distill.lambda_l = 1.0
  c.distill.lambda_f = 1.0
  c.distill.alpha = 1.0
  c.distill.beta = 1.0  # DESIGN §2.6: beta <= 1 (a large beta competes with CE).
  c.distill.temperature = 1.0
  c.distill.cwd_temperature = 0.0  # CWD's own temperature; 0 = distill.temperature.
  # fixed | dynamic | trust | balanced | balanced_sym (the last two lix_jax's own)
  # DESIGN §2.3 default: balanced_sym, κ = 4, γ = 1 (best on validation and test, 3 seeds).
  c.distill.controller = "balanced_sym"
  c.distill.kappa = 4.0
  c.distill.class_balance = 1.0  # balanced(_sym) controllers: weights times n_class^-class_balance.
  c.distill.sigma = 1.0
  c.distill.mix = 0.5
  c.distill.lambda_kr = 0.0  # DESIGN §2.4: kernel regression one flag away (=1).
  c.distill.lambda_cka = 1.0
  c.distill.kernel = "linear"
  c.distill.stride = 2  # Kernel-regression keys: every 2nd pixel per axis (4x fewer keys).
  c.distill.kr_block_size = 256
  # auto | xla | pallas (fused kernel, lix_jax/kr_fused.py); auto = pallas for large taps on GPUs.
  c.distill.kr_impl = "auto"
  c.distill.cka_max_pixels = 1024
  c.distill.at_p = 2
  c.distill.taps = ("stage3", "decoder")
  c.distill.tap_weights = (1.0, 1.0)
  c.distill.unlabeled_split = "unlabeled"  # "" = labelled images only (the paper's regime).
  c.distill.unlabeled_batch_size = 16  # Global.
  c.distill.lambda_unlabeled = 1.0
  c.distill.pl_threshold = 0.0

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.methods = ("none", "kd", "pseudo_label", "lix")
  c.pipeline.teacher_num_steps = 1500
  c.pipeline.seeds = (0,)
  c.pipeline.num_predictions = 4

  # mode=benchmark (lix_jax/experiments/benchmark.py): rows of its registry x seeds; configs/benchmark.py.
  c.benchmark = ml_collections.ConfigDict()
  c.benchmark.rows = ()  # Row names of `benchmark.table`, in the order they run.
  c.benchmark.seeds = (0, 1, 2)
  c.benchmark.table = ()  # The rows: dicts of a `name` and `experiments.benchmark.Row`'s fields.
  c.benchmark.aliases = {}  # Former row name -> name.

  c.parallel = ml_collections.ConfigDict()
  c.parallel.backend = "shard_map"  # shard_map | pmap
  c.parallel.multihost = False
  c.parallel.coordinator_address = ""
  c.parallel.num_processes = 1
  c.parallel.process_id = 0

  # mode=eval / mode=predict: which run of --workdir to load.
  c.eval = ml_collections.ConfigDict()
  c.eval.role = "distill"  # teacher | student | distill (a distilled student)
  c.eval.split = ""  # "" = data.test_split (KITTI semantics: "validation"; it has no test labels).
  c.predict = ml_collections.ConfigDict()
  c.predict.input_dir = ""  # A folder of RGB images (*.png, *.jpg); teachers also read <stem>_depth.png.
  c.predict.output_dir = ""  # Default: <workdir>/predictions.
  c.predict.intrinsics = (0.0, 0.0, 0.0, 0.0)  # fx, fy, cx, cy: teachers with disparity / normal X.
  c.predict.baseline = 0.54
  # An exported artifact (<workdir>/export/student.jaxexport, lix_jax/experiments/export.py): predict from
  # with jax, numpy and Pillow only (no flax, no lix_jax.models); "" = the workdir's checkpoint.
  c.predict.exported = ""

  return c


def enable_compilation_cache() -> str:
  """XLA's persistent compilation cache, once per process, before the first compile: programs of the
  same shapes compiled by an earlier run, test or process load instead of compiling again. The
  directory is `$LIX_JAX_CACHE` (default `~/.cache/lix_jax/xla`); `LIX_JAX_CACHE=""` switches the
  cache off. Returns the directory ("" = off)."""
  cache_dir = os.environ.get("LIX_JAX_CACHE", os.path.expanduser("~/.cache/lix_jax/xla"))
  if cache_dir:
    import jax  # noqa: PLC0415  (only here: the config module itself needs no jax)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return cache_dir


def real_config(name: str, *, crop_hw: tuple[int, int], num_steps: int,
                builder_config: str = "default") -> ml_collections.ConfigDict:
  r"""Shared settings of the real-dataset configs (`configs/{kitti_semantics,vkitti2,cityscapes,nuimages}.py`).

  Paper-sized models (a ResNet-50 duplex-encoder teacher, a ResNet-18 student, both width 1.0 with
  the ImageNet stem), SGD with momentum and a poly schedule, as is usual for driving-scene
  segmentation. Data come from the user's local copy (`--config.data.root`, TFDS `manual_dir`);
  nothing is downloaded.

  ImageNet weights (DESIGN §4; the paper's runs start from them): `teacher.pretrained` and
  `student.pretrained` stay "" (from scratch) by default, because a default path that does not exist
  would break every run. Download timm's ResNets once, on a machine with internet:

    huggingface-cli download timm/resnet50.a1_in1k model.safetensors \
        --local-dir workdirs/weights/resnet50.a1_in1k
    huggingface-cli download timm/resnet18.a1_in1k model.safetensors \
        --local-dir workdirs/weights/resnet18.a1_in1k

  (or `python -c "import timm, safetensors.torch as st; st.save_file(timm.create_model(
  'resnet50.a1_in1k', pretrained=True).state_dict(), 'resnet50.a1_in1k.safetensors')"`), then add

    --config.teacher.pretrained=workdirs/weights/resnet50.a1_in1k/model.safetensors \
    --config.student.pretrained=workdirs/weights/resnet18.a1_in1k/model.safetensors

  to the command of a config. The teacher's X encoder starts from the same weights (first conv: the
  RGB kernel's mean over its input channels); a path that does not exist stops the run with the key.
  """
  c = base_config()
  c.mode = "pipeline"
  c.data.name = name
  c.data.builder_config = builder_config
  c.data.data_dir = "workdirs/data"
  c.data.crop_hw = crop_hw
  c.data.scale_range = (0.5, 2.0)
  c.data.num_threads = 8
  c.train.num_steps = num_steps
  c.train.batch_size = 16
  c.train.eval_batch_size = 8
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.ckpt_every = 1000
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.01
  c.optim.schedule = "poly"
  c.optim.warmup_steps = 500
  c.optim.weight_decay = 1e-4
  for model, backbone in ((c.teacher, "resnet50"), (c.student, "resnet18")):
    model.backbone = backbone
    model.width = 1.0
    model.stem = "imagenet"
    model.decoder_channels = 128
    model.pretrained = ""  # ImageNet weights: a local file, see the module docstring.
  c.pipeline.teacher_num_steps = num_steps
  c.pipeline.methods = ("none", "kd", "dkd", "cwd", "lix")
  c.distill.unlabeled_split = ""  # The paper's regime: labelled images only.
  # Accelerators: a few large kernel-regression blocks, not hundreds of sequential cache-sized
  # ones (H100, 256x768, B 16 + 16: ARFD 18.9 -> 9.6 ms;
  # results/gpu/step_bench_h100_2026-11_kitti_xla.txt). Memory stays linear.
  c.distill.kr_block_size = 4096
  return c


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


# Keys a teacher run never reads (`inputs.make_train_iters`: a teacher trains with its own recipe,
# `teacher.photometric` / `teacher.cutmix_prob`), so a teacher run is re-used across the students'
# recipes.
TEACHER_IGNORES = frozenset({"data.photometric", "data.cutmix_prob"})


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
  if key in OBSERVE_KEYS or (role == "teacher" and key in TEACHER_IGNORES):
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
  return ml_collections.ConfigDict(_plain(config) if not hasattr(config, "to_dict")
                                   else config.to_dict())


def from_stored(stored: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A run's stored config (`config.json`) as a ConfigDict: a key the run predates keeps today's
  default (as `run_config_diff` reads it), JSON lists become tuples where today's value is one
  (ConfigDict's own coercion), a section today's config leaves empty (free-form: `benchmark.aliases`) is taken whole; a stored key
  that no longer exists raises KeyError naming it (the run cannot be rebuilt as it was)."""
  def merge(into: ml_collections.ConfigDict, values: Mapping[str, Any], prefix: str) -> None:
    for key, value in values.items():
      if key not in into:
        raise KeyError(f"stored config key {prefix + key!r} is not a config key of this version")
      if isinstance(into[key], ml_collections.ConfigDict) and isinstance(value, dict) and into[key]:
        merge(into[key], value, f"{prefix}{key}.")
      else:
        into[key] = value  # ConfigDict turns a JSON list back into the tuple it replaces.

  c = base_config()
  merge(c, _plain(stored), "")
  return c


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
