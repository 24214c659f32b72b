"""Data parallelism over one `Mesh` of all devices of all processes.

`DataParallel.wrap` turns a per-shard step into a jitted global one: `jax.jit(jax.shard_map(...))`
(default) or `jax.pmap` (`parallel.backend="pmap"`). The state (and a frozen teacher) is
replicated, the batch is sharded on its leading axis over the mesh axis "data", and the state is
donated. Every host feeds its own slice of the global batch (`shard_batch`).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import flax.jax_utils
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


AXIS = "data"


def _host_value(x) -> np.ndarray:
  """A NumPy copy of a host value, a single-device array or a global replicated array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)
BACKENDS = ("shard_map", "pmap")


def initialize_distributed(parallel_cfg) -> None:
  """Calls `jax.distributed.initialize` when `parallel.multihost` is set.

  TPU pods and SLURM GPU clusters are auto-detected by JAX; on CPU (or anywhere else) give
  `parallel.coordinator_address`, `parallel.num_processes` and `parallel.process_id`.
  """
  if not parallel_cfg.get("multihost", False):
    return
  kwargs = {}
  if parallel_cfg.get("coordinator_address"):
    kwargs = dict(coordinator_address=parallel_cfg.coordinator_address,
                  num_processes=int(parallel_cfg.num_processes),
                  process_id=int(parallel_cfg.process_id))
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis "data" over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devices), (AXIS,))


class DataParallel:
  """Places state and batches on a mesh and runs per-shard steps data-parallel.

  Args:
    mesh: the device mesh (axis "data").
    backend: "shard_map" (jit of shard_map; default) or "pmap".
  """

  def __init__(self, mesh: Mesh, backend: str = "shard_map"):
    if backend not in BACKENDS:
      raise KeyError(f"Unknown parallel.backend {backend!r}. Available backends are: {list(BACKENDS)}")
    self.mesh = mesh
    self.backend = backend
    self.num_devices = mesh.devices.size
    # pmap takes the same *global* device list on every process (each feeds its local ones);
    # a per-process list would make each process its own smaller world (STACK_FACTS §6).
    self._devices = list(mesh.devices.flat)
    self._local_devices = [d for d in self._devices if d.process_index == jax.process_index()]

  # --- placement -------------------------------------------------------------------------------
  def replicate(self, tree):
    """Copies a host, single-device or global replicated pytree onto every device of the mesh
    (for pmap: this process's devices, stacked on a leading axis)."""
    if self.backend == "pmap":
      return flax.jax_utils.replicate(jax.tree.map(_host_value, tree), devices=self._local_devices)
    return self.global_replicated(tree)

  def global_replicated(self, tree):
    """The pytree as global arrays replicated over the whole mesh (`NamedSharding(mesh, P())`):
    the form checkpoints save and restore on one host or many."""
    sharding = NamedSharding(self.mesh, P())

    def put(x):
      if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x  # Already a global array.
      # Fresh buffers from a host copy: `device_put` may alias the source, which donation would
      # then delete (STACK_FACTS §4).
      x = _host_value(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)

  def abstract(self, tree):
    """ShapeDtypeStructs of `tree` placed as `global_replicated` places it (restore targets)."""
    sharding = NamedSharding(self.mesh, P())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding),
                        tree)

  def shard_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This host's slice of the global batch -> arrays sharded on their leading axis."""
    n_local = len(self._local_devices)
    for key, value in local_batch.items():
      if value.shape[0] % n_local:
        raise ValueError(f"batch[{key!r}] has {value.shape[0]} rows on this host, not divisible by "
                         f"its {n_local} devices")
    if self.backend == "pmap":
      return {k: np.reshape(v, (n_local, -1) + v.shape[1:]) for k, v in local_batch.items()}
    return to_global_batch(local_batch, self.mesh, AXIS)

  def fetch(self, tree) -> Any:
    """Replicated device values -> host NumPy (one copy, also on multi-host meshes)."""
    if self.backend == "pmap":
      return jax.tree.map(lambda x: np.asarray(x)[0], tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

  def unreplicate(self, tree):
    """The single-copy form of a replicated state, as global arrays (what checkpoints save: orbax
    refuses process-local arrays on several processes)."""
    if self.backend == "pmap":
      return self.global_replicated(jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0]
                                                 if isinstance(x, jax.Array) else x[0], tree))
    return tree

  # --- steps -----------------------------------------------------------------------------------
  def wrap(self, step_fn: Callable, *, batch_argnums: Sequence[int] = (1,),
           donate_argnums: Sequence[int] = (0,)) -> Callable:
    """Wraps a per-shard `step_fn(*args)` whose outputs are replicated (reduced inside).

    Args:
      step_fn: pure per-shard function using collectives over axis "data".
      batch_argnums: positions of the arguments sharded on their leading axis; all others are
        replicated.
      donate_argnums: positions of arguments whose buffers are donated (the state).
    """
    if self.backend == "pmap":
      return jax.pmap(step_fn, axis_name=AXIS, donate_argnums=tuple(donate_argnums),
                      devices=self._devices)

    def wrapped(*args):
      in_specs = tuple(P(AXIS) if i in batch_argnums else P() for i in range(len(args)))
      sharded = jax.shard_map(step_fn, mesh=self.mesh, in_specs=in_specs, out_specs=P(),
                              check_vma=False)
      return sharded(*args)

    return jax.jit(wrapped, donate_argnums=tuple(donate_argnums))


def to_global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                    axis: str = AXIS) -> dict:
  """Per-host NumPy batch -> global jax Arrays sharded on their leading axis over `axis`.

  Uses `jax.make_array_from_process_local_data` per leaf, so the global batch is the hosts' local
  batches concatenated in process order. Non-numeric leaves (`id`) are left out.
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items() if np.asarray(v).dtype.kind in "biuf"}
