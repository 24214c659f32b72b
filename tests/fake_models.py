"""Shared set-up of the fake-model distillation tests (test_distill_arithmetic, test_padding,
test_recipe): 1x1-conv networks with a half-resolution `stage3` tap and a full-resolution
`decoder`."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lix_jax import models
from lix_jax.train import state as state_lib


def distill_setup(student, teacher, *, hw: tuple[int, int], taps, learning_rate: float):
  """(student, teacher, adapters, teacher variables, distill TrainState) for fake networks: plain
  SGD (no momentum, no weight decay, constant rate), so one step's update is `-lr * grad`."""
  image, x = jnp.zeros((1, *hw, 3)), jnp.zeros((1, *hw, 1))
  t_vars = teacher.init(jax.random.key(1), image, x)
  s_vars = student.init(jax.random.key(2), image)
  (_, s_taps), (_, t_taps) = student.apply(s_vars, image), teacher.apply(t_vars, image, x)
  adapters = models.Adapters(out_channels={tap: t_taps[tap].shape[-1] for tap in taps})
  a_params = adapters.init(jax.random.key(3), {tap: s_taps[tap] for tap in taps})["params"]
  tx = state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=learning_rate, schedule="constant", warmup_steps=0, momentum=0.0,
      weight_decay=0.0)), 1)
  state = state_lib.TrainState.create(params={"student": s_vars["params"], "adapters": a_params},
                                      batch_stats=s_vars["batch_stats"], tx=tx,
                                      rng=jax.random.key(4))
  return student, teacher, adapters, t_vars, state


def _pool2(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


class FakeStudent(nn.Module):
  """`(image, train) -> (logits [B, H, W, num_classes], taps)`; counts its training calls."""
  num_classes: int

  @nn.compact
  def __call__(self, image, train: bool = False):
    count = self.variable("batch_stats", "count", lambda: jnp.zeros((), jnp.int32))
    if train and not self.is_initializing():
      count.value += 1
    feat = jnp.tanh(nn.Conv(4, (1, 1), name="embed")(image))
    stage3 = nn.Conv(6, (1, 1), name="stage3")(_pool2(feat))
    return nn.Conv(self.num_classes, (1, 1), name="classifier")(feat), {"stage3": stage3,
                                                                         "decoder": feat}


class FakeTeacher(nn.Module):
  """`(image, x, train) -> (logits, taps)` from 1x1 convs of concat(image, x)."""
  num_classes: int

  @nn.compact
  def __call__(self, image, x, train: bool = False):
    del train
    z = jnp.concatenate([image, x], -1)
    dec = jnp.tanh(nn.Conv(6, (1, 1), name="decoder")(z))
    stage3 = nn.Conv(5, (1, 1), name="stage3")(_pool2(dec))
    return 3.0 * nn.Conv(self.num_classes, (1, 1), name="classifier")(z), {"stage3": stage3,
                                                                            "decoder": dec}
