"""Integrity checks of a checkpoint step: a checksum of the state, and its structure.

* `state_checksum` / `verify_checksum`: a sha256 stored with each step and compared on restore
  (`ChecksumError`), since orbax restores a flipped bit in an OCDBT data file silently.
* `state_mismatch` / `check_structure`: compare a saved state's tree metadata with the requested
  state before anything is restored (`StateMismatchError`: a config change, not corruption).

The checksum is a sha256 over each leaf's dtype, shape and bytes, in tree order, computed on the
host from process-local data (`x.addressable_data(0)` for replicated arrays), so every process
computes the same value. Typed PRNG keys are hashed through `jax.random.key_data`. Leaves that are
sharded across processes (not fully addressable and not replicated) contribute only dtype and
shape (counted in `unhashed_leaves`); lix_jax's train state is fully replicated.

Split from `checkpoint` (the orbax `Checkpointer`), which calls these on every save and restore.
"""
from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _host_array(x: Any) -> np.ndarray | None:
  """The leaf as a host array from process-local data; None if it is sharded across processes."""
  if isinstance(x, jax.Array):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return None
  return np.asarray(x)


def state_checksum(state: Any) -> dict[str, Any]:
  """sha256 over the leaves of `state` (dtype, shape and bytes of each, in tree order).

  Args:
    state: any pytree of jax/NumPy arrays and Python scalars.

  Returns:
    `{"sha256": hex str, "num_leaves": int, "unhashed_leaves": int}`; `unhashed_leaves` counts
    leaves sharded across processes, for which only dtype and shape enter the hash.
  """
  h = hashlib.sha256()
  leaves = jax.tree.leaves(state)
  unhashed = 0
  for leaf in leaves:
    arr = _host_array(leaf)
    if arr is None:
      unhashed += 1
      h.update(f"{leaf.dtype}{tuple(leaf.shape)}|sharded|".encode())
      continue
    h.update(f"{arr.dtype.name}{arr.shape}|".encode())
    h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
  return {"sha256": h.hexdigest(), "num_leaves": len(leaves), "unhashed_leaves": unhashed}


class ChecksumError(ValueError):
  """A restored state does not match the checksum stored with it."""


def verify_checksum(stored: Any, state: Any) -> None:
  """Raises ChecksumError unless `state` hashes to the `stored` checksum item's sha256."""
  actual = state_checksum(state)
  if stored.get("sha256") != actual["sha256"]:
    raise ChecksumError(f"checksum mismatch: stored {str(stored.get('sha256'))[:16]}…, "
                        f"restored state hashes to {actual['sha256'][:16]}… "
                        f"({actual['num_leaves']} leaves; stored {stored.get('num_leaves')})")


class StateMismatchError(ValueError):
  """A checkpoint holds a state of another structure or shape: a config (or code) change, which is
  an error to report, never corruption to skip (DESIGN §6)."""


def _path_str(path) -> str:
  """A tree path as "a/b/0/c", the same for orbax's metadata dicts and the TrainState dataclass."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def state_mismatch(stored_tree: Any, abstract_state: Any) -> str | None:
  """The first leaf whose presence or shape differs between a checkpoint and the requested state.

  Args:
    stored_tree: the `tree` of orbax's item metadata of a saved state (leaves have `.shape`).
    abstract_state: the requested state (arrays or ShapeDtypeStructs).

  Returns:
    None when every array leaf has the same path and shape; else a short description. Typed PRNG
    keys are left out (orbax stores them as their uint32 key data).
  """
  def is_key(leaf):
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key)

  wanted = {_path_str(p): tuple(np.shape(x)) for p, x in
            jax.tree_util.tree_leaves_with_path(abstract_state) if not is_key(x)}
  keys = {_path_str(p) for p, x in jax.tree_util.tree_leaves_with_path(abstract_state) if is_key(x)}
  stored = {_path_str(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(stored_tree)
            if _path_str(p) not in keys}
  for name in sorted(set(wanted) | set(stored)):
    if name not in stored:
      return f"{name} is missing from the checkpoint (requested shape {list(wanted[name])})"
    if name not in wanted:
      return f"{name} (shape {list(stored[name])}) is not in the requested state"
    if stored[name] != wanted[name]:
      return f"{name} has shape {list(stored[name])}, requested {list(wanted[name])}"
  return None


def check_structure(path: str, abstract_state: Any, *, step: int, where: str) -> None:
  """Raises StateMismatchError when a step's saved state has another structure than requested.

  Args:
    path: the step's state item, `<directory>/<step>/state`.
    abstract_state: the requested state (arrays or ShapeDtypeStructs).
    step, where: the step and its checkpoint directory, for the message.

  Unreadable metadata is left to the restore itself (and then counts as corruption)."""
  try:
    with ocp.PyTreeCheckpointer() as reader:
      stored_tree = reader.metadata(path).item_metadata.tree
  except Exception:  # noqa: BLE001  (unreadable metadata: the restore reports the corruption)
    return
  mismatch = state_mismatch(stored_tree, abstract_state)
  if mismatch is not None:
    raise StateMismatchError(
        f"checkpoint step {step} in {where} holds a state of another structure ({mismatch}): "
        "the config (or lix_jax's model code) differs from the run's; nothing was moved")
