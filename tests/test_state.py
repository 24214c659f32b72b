"""The optimisers of `train/state.py` against NumPy: masked weight decay, momentum, AdamW."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lix_jax import config as config_lib
from lix_jax.train import state as state_lib

LR, WD, MOMENTUM = 0.1, 0.05, 0.9
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adamw's defaults; the config sets none.


def _params():
  """A conv, a BatchNorm and a dense layer: kernels decay; biases and BN scale/bias do not."""
  rng = np.random.default_rng(0)
  shapes = {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)},
            "bn": {"scale": (4,), "bias": (4,)},
            "dense": {"kernel": (4, 5), "bias": (5,)}}
  return jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


DECAYED = {("conv", "kernel"), ("dense", "kernel")}


def _optim(name):
  optim = config_lib.base_config().optim
  optim.name = name
  optim.schedule = "constant"  # A known learning rate at every step.
  optim.warmup_steps = 0
  optim.learning_rate = LR
  optim.weight_decay = WD
  optim.momentum = MOMENTUM
  return optim


def _numpy_steps(name, params, grads):
  """The expected parameters after one update per gradient, in float64, leaf by leaf."""
  out = {}
  for layer, leaves in params.items():
    out[layer] = {}
    for leaf, p in leaves.items():
      p = p.astype(np.float64)
      wd = WD if (layer, leaf) in DECAYED else 0.0
      m, v = np.zeros_like(p), np.zeros_like(p)
      for t, g_tree in enumerate(grads, start=1):
        g = g_tree[layer][leaf].astype(np.float64)
        if name == "sgd":  # L2 added to the gradient, then heavy-ball momentum (optax.trace).
          m = (g + wd * p) + MOMENTUM * m
          p = p - LR * m
        else:  # AdamW: bias-corrected Adam step plus decoupled decay, both times the learning rate.
          m = ADAM_B1 * m + (1 - ADAM_B1) * g
          v = ADAM_B2 * v + (1 - ADAM_B2) * g * g
          m_hat, v_hat = m / (1 - ADAM_B1 ** t), v / (1 - ADAM_B2 ** t)
          p = p - LR * (m_hat / (np.sqrt(v_hat) + ADAM_EPS) + wd * p)
      out[layer][leaf] = p
  return out


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("zero_grads", [True, False], ids=["zero_grads", "known_grads"])
def test_weight_decay_on_kernels_only_by_the_expected_amount(name, zero_grads):
  params = _params()
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda p: (np.zeros_like(p) if zero_grads
                                   else rng.normal(size=p.shape).astype(np.float32)), params)
           for _ in range(3)]
  tx = state_lib.make_optimizer(_optim(name), num_steps=10)
  got = jax.tree.map(jnp.asarray, params)
  opt_state = tx.init(got)
  for g in grads:
    updates, opt_state = tx.update(jax.tree.map(jnp.asarray, g), opt_state, got)
    got = optax.apply_updates(got, updates)
  want = _numpy_steps(name, params, grads)
  # Each step moves a leaf by ~LR (Adam) and decays a kernel by LR * WD * p ~ 5e-3: atol 1e-5 is
  # float32 rounding of Adam's m / sqrt(v), far below either.
  for layer, leaves in want.items():
    for leaf, w in leaves.items():
      np.testing.assert_allclose(np.asarray(got[layer][leaf]), w, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{name}: {layer}/{leaf}")
  if zero_grads:  # Decay alone: kernels shrink, every bias and BatchNorm leaf stays put.
    for layer, leaves in params.items():
      for leaf, p in leaves.items():
        moved = not np.array_equal(np.asarray(got[layer][leaf]), p)
        assert moved == ((layer, leaf) in DECAYED), f"{name}: {layer}/{leaf} moved={moved}"


def test_weight_decay_mask_is_kernels_only():
  mask = state_lib.weight_decay_mask(_params())
  assert {(l, k) for l, leaves in mask.items() for k, m in leaves.items() if m} == DECAYED
