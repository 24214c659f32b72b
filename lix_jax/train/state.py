"""Train state and optimizers.

`TrainState` is a plain pytree (params, batch_stats, opt_state, step, rng); the model's apply
function and the optax transformation are static fields, so the whole state can be donated to a
jitted step and saved by orbax. The rng is stored as raw uint32 key data (portable across
checkpoints); `step_rng(state)` gives the per-step key, folded with the step number.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax


class TrainState(flax.struct.PyTreeNode):
  """Everything a train step reads and writes.

  Attributes:
    step: int32 scalar, number of optimizer updates applied so far.
    params: trainable parameters. For distillation: {"student": ..., "adapters": ...}.
    batch_stats: BatchNorm running statistics of the trained network.
    opt_state: optax state of `tx`.
    rng: uint32[2] raw PRNG key data; use `step_rng` to get this step's key.
    tx: the optax transformation (static).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, params, batch_stats, tx: optax.GradientTransformation, rng: jax.Array):
    """Builds a fresh state; `rng` may be a typed key or raw key data."""
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.key_data(rng)
    return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
               opt_state=tx.init(params), rng=jnp.asarray(rng, jnp.uint32), tx=tx)

  def apply_gradients(self, grads, *, batch_stats):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        batch_stats=batch_stats), updates


def step_rng(state: TrainState) -> jax.Array:
  """This step's PRNG key: the state's key folded with the step number (same on every device)."""
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Warm-up (linear from 0) followed by `poly` (power `poly_power`) or `cosine` decay to 0.

  Config keys: `learning_rate`, `schedule` ("poly" | "cosine" | "constant"), `warmup_steps`,
  `poly_power` (0.9, the segmentation default).
  """
  base_lr = optim.learning_rate
  warmup = min(int(optim.get("warmup_steps", 0)), max(num_steps - 1, 0))
  decay_steps = max(num_steps - warmup, 1)
  decays: dict[str, Callable[[], optax.Schedule]] = {
      "poly": lambda: optax.polynomial_schedule(base_lr, 0.0, optim.get("poly_power", 0.9), decay_steps),
      "cosine": lambda: optax.cosine_decay_schedule(base_lr, decay_steps),
      "constant": lambda: optax.constant_schedule(base_lr),
  }
  name = optim.get("schedule", "poly")
  if name not in decays:
    raise KeyError(f"Unknown optim.schedule {name!r}. Available schedules are: {sorted(decays)}")
  decay = decays[name]()
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), decay], [warmup])


def weight_decay_mask(params) -> Any:
  """True for conv/dense kernels; False for biases and BatchNorm scales (every leaf with ndim <= 1)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """SGD with momentum or AdamW, with the schedule above and decoupled, masked weight decay.

  Config keys: `name` ("sgd" | "adamw"), `momentum`, `weight_decay`, `grad_clip_norm` (0 = off),
  plus the schedule keys of `learning_rate_schedule`.
  """
  schedule = learning_rate_schedule(optim, num_steps)
  weight_decay = float(optim.get("weight_decay", 0.0))
  optimizers: dict[str, Callable[[], optax.GradientTransformation]] = {
      "sgd": lambda: optax.chain(
          optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
          optax.sgd(schedule, momentum=optim.get("momentum", 0.9), nesterov=False)),
      "adamw": lambda: optax.adamw(schedule, weight_decay=weight_decay, mask=weight_decay_mask),
  }
  name = optim.get("name", "sgd")
  if name not in optimizers:
    raise KeyError(f"Unknown optim.name {name!r}. Available optimizers are: {sorted(optimizers)}")
  tx = optimizers[name]()
  clip = float(optim.get("grad_clip_norm", 0.0))
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx
