"""One run's networks, built once from `(config, role)`: what is trained, on which inputs, and how.

scenic's `BaseModel` idea at lix_jax's size. A `Task` holds the trained network, the frozen teacher
of a distillation, the inputs a network takes, the parameter view (a distillation state's params
are `{"student", "adapters"}`), the losses built once from the config (`losses.make_distill_loss`)
and the per-shard step functions: built once, so the loop, evaluation and export do not rebuild
them per role. Roles:
"teacher" (RGB + X, cross-entropy), "student" (RGB, cross-entropy) and "distill" (an RGB student
distilled from the frozen teacher in `distill.teacher_workdir`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from lix_jax import config as config_lib
from lix_jax import losses
from lix_jax import models
from lix_jax.data import geometry, recipe
from lix_jax.train import checkpoint as ckpt_lib
from lix_jax.train import inputs, reliability, state as state_lib, steps

ROLES = ("teacher", "student", "distill")


def check_config(config, role: str) -> None:
  """Names, modalities and batch sizes a run of `role` needs, checked before anything is built."""
  if role not in ROLES:
    raise KeyError(f"Unknown role {role!r}. Available roles are: {ROLES}")
  if config.data.x_modality not in geometry.MODALITIES:
    raise KeyError(f"Unknown data.x_modality {config.data.x_modality!r}. "
                   f"Available modalities are: {sorted(geometry.MODALITIES)}")
  if role == "distill":
    losses.get_method(config.distill.method)
  section = "teacher" if role == "teacher" else "data"  # The data recipe this role reads.
  recipe.check_recipe(config[section].photometric, config[section].cutmix_prob, section)
  for name in ("train.batch_size", "train.eval_batch_size", "distill.unlabeled_batch_size"):
    section, key = name.split(".")
    if config[section][key] % jax.device_count():
      raise ValueError(f"{name}={config[section][key]} is not divisible by the "
                       f"{jax.device_count()} devices")


@dataclasses.dataclass(frozen=True)
class Task:
  """The networks and steps of one run. Build with `Task.build(config, role)`."""
  config: Any
  role: str
  num_classes: int
  model: nn.Module  # The trained network; BatchNorm statistics synced over the step's data axis.
  init_model: nn.Module  # The same network without collectives: initialise, restore, export.
  teacher: nn.Module | None  # Distillation: the frozen teacher (eval-mode BatchNorm).
  distill_loss: losses.DistillLoss | None  # Distillation: the method's losses, config bound.

  @classmethod
  def build(cls, config, role: str, *, bn_axis_name: str | None = None) -> Task:
    check_config(config, role)
    num_classes = len(inputs.class_names(config))
    x_channels = geometry.MODALITIES[config.data.x_modality]

    def network(kind: str, axis: str | None) -> nn.Module:
      if kind == "teacher":
        return models.build(config.teacher, num_classes=num_classes, x_channels=x_channels,
                            kind="teacher", bn_axis_name=axis)
      return models.build(config.student, num_classes=num_classes, kind="student",
                          bn_axis_name=axis)

    kind = "teacher" if role == "teacher" else "student"
    distill = role == "distill"
    return cls(config=config, role=role, num_classes=num_classes,
               model=network(kind, bn_axis_name), init_model=network(kind, None),
               teacher=network("teacher", None) if distill else None,
               distill_loss=(losses.make_distill_loss(config.distill.method, config.distill)
                             if distill else None))

  @property
  def uses_x(self) -> bool:
    """Whether the trained network reads X (only a teacher does)."""
    return self.role == "teacher"

  def inputs(self, batch) -> tuple:
    """The trained network's positional inputs from a batch: `(image, x)` or `(image,)`."""
    return steps.model_inputs(batch, self.uses_x)

  def variables(self, state) -> dict[str, Any]:
    """The trained network's `{"params", "batch_stats"}` in a state (not the adapters)."""
    params = state.params["student"] if self.role == "distill" else state.params
    return {"params": params, "batch_stats": state.batch_stats}

  def _dummy_batch(self) -> dict[str, jax.Array]:
    h, w = self.config.data.crop_hw
    return {"image": jnp.zeros((1, h, w, 3), jnp.float32),
            "x": jnp.zeros((1, h, w, geometry.MODALITIES[self.config.data.x_modality]),
                           jnp.float32)}

  def _adapters(self, student_vars, teacher_vars):
    """The ARFD adapters (1x1 convs) from the student's tap widths to the teacher's."""
    dummy = self._dummy_batch()
    _, s_taps = jax.eval_shape(functools.partial(self.init_model.apply, train=False), student_vars,
                               dummy["image"])
    _, t_taps = jax.eval_shape(functools.partial(self.teacher.apply, train=False), teacher_vars,
                               dummy["image"], dummy["x"])
    taps = list(self.distill_loss.taps)
    missing = [t for t in taps if t not in s_taps or t not in t_taps]
    if missing:
      raise KeyError(f"distill.taps {missing} do not exist. Available taps are: {sorted(s_taps)}")
    return models.networks.Adapters(out_channels={t: int(t_taps[t].shape[-1]) for t in taps}), s_taps

  def init_state(self, *, num_steps: int, teacher_vars=None, pretrained: bool = True):
    """A host `TrainState` (and the adapters module of a distillation with feature losses).

    With `pretrained` and the role's `teacher.pretrained` / `student.pretrained` set (distill: the
    student's), the encoder(s) start from those ImageNet weights (`models.load_imagenet_encoders`).
    A resumed run restores its checkpoint over this state afterwards.
    """
    config = self.config
    # The "rbg" PRNG only for initialisation: threefry initialisers take ~3x longer to compile on
    # CPU. The state's own rng (dropout-style randomness, if any) stays threefry.
    init_rng, adapter_rng = jax.random.split(jax.random.key(config.seed, impl="rbg"))
    state_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
    spec = config.teacher if self.role == "teacher" else config.student
    weights = spec.get("pretrained", "") if pretrained else ""
    if weights:
      models.check_imagenet_fit(self.init_model, weights)  # A wrong path fails before the compile.
    variables = jax.jit(functools.partial(self.init_model.init, train=False))(
        init_rng, *self.inputs(self._dummy_batch()))
    if weights:
      variables = models.load_imagenet_encoders(self.init_model, variables, weights)
    params = variables["params"]
    adapters = None
    if self.role == "distill":
      params = {"student": params}
      if self.distill_loss.method.uses_adapters:
        adapters, s_taps = self._adapters(variables, teacher_vars)
        feats = {t: jnp.zeros(s_taps[t].shape, s_taps[t].dtype) for t in self.distill_loss.taps}
        params["adapters"] = jax.jit(adapters.init)(adapter_rng, feats)["params"]
    tx = state_lib.make_optimizer(config.optim, num_steps)
    state = state_lib.TrainState.create(params=params, batch_stats=variables.get("batch_stats", {}),
                                        tx=tx, rng=state_rng)
    return state, adapters

  def restore_variables(self, workdir: str, *, teacher_vars=None) -> dict[str, Any]:
    """The network's variables in the newest good checkpoint of the run in `workdir`, on the host."""
    # The checkpoint replaces every weight: no ImageNet file is read (it may be gone by now).
    state, _ = self.init_state(num_steps=1, teacher_vars=teacher_vars, pretrained=False)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.variables(ckpt_lib.restore_state_only(os.path.join(workdir, "checkpoints"),
                                                      abstract))

  def load_run(self, workdir: str) -> dict[str, Any]:
    """The network's variables in a finished (or interrupted) run of this role in `workdir`.

    A distilled student is restored without its teacher: the distillation state's adapter shapes
    come from the teacher network of `config.teacher` (shapes only, `jax.eval_shape`), not from the
    teacher's checkpoint, so `distill.teacher_workdir` may be empty or gone.
    """
    teacher_vars = (models.abstract_init(self.teacher, tuple(self.config.data.crop_hw))[0]
                    if self.role == "distill" else None)
    return self.restore_variables(workdir, teacher_vars=teacher_vars)

  def restore_teacher(self) -> dict[str, Any]:
    """The frozen teacher's variables (newest good checkpoint of `distill.teacher_workdir`)."""
    workdir = self.config.distill.teacher_workdir
    if not workdir:
      raise ValueError("distill.teacher_workdir is empty: mode=distill needs a trained teacher "
                       "(train one with mode=train_teacher, or use mode=pipeline)")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
      # Checked before the teacher is initialised (and compiled), so that a typo fails fast.
      raise FileNotFoundError(f"distill.teacher_workdir={workdir!r} has no checkpoints/ directory "
                              "(train the teacher there first with mode=train_teacher)")
    stored = reliability.stored_config(workdir)
    if stored is not None:
      config_lib.check_teacher(stored, self.config, where=f"distill.teacher_workdir={workdir}")
    as_teacher = dataclasses.replace(self, role="teacher", model=self.teacher,
                                     init_model=self.teacher, teacher=None, distill_loss=None)
    return as_teacher.restore_variables(workdir)

  def train_step(self, adapters=None, *, axis_name: str | None) -> Callable:
    """The per-shard `(state, batch[, teacher_variables]) -> (state, metrics)` of this role."""
    if self.role == "distill":
      return functools.partial(steps.distill_step, student=self.model, teacher=self.teacher,
                               adapters=adapters, distill_loss=self.distill_loss,
                               axis_name=axis_name)
    return functools.partial(steps.supervised_step, model=self.model, uses_x=self.uses_x,
                             axis_name=axis_name)

  def eval_step(self, *, axis_name: str | None) -> Callable:
    """The per-shard `(variables, batch) -> confusion matrix` of the trained network."""
    return functools.partial(steps.eval_step, model=self.model, uses_x=self.uses_x,
                             num_classes=self.num_classes, axis_name=axis_name)


def load_variables(config, workdir: str, role: str):
  """(network, variables) of the newest good checkpoint of the `role` run in `workdir`, on the host
  (`Task.load_run`)."""
  task = Task.build(config, role)
  return task.init_model, task.load_run(workdir)
