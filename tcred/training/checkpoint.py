"""Orbax checkpoints of a train state plus JSON metadata (loop counters, config).

The state is saved as its flat list of leaves; restoring rebuilds the tree from
a template of the same structure, so NNX/optax container types never reach
Orbax. A checkpoint that fails to restore, or holds non-finite values, is
reported and the previous one is used (DESIGN §8).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """No usable checkpoint could be restored."""


def _all_finite(leaves) -> bool:
  return all(np.all(np.isfinite(np.asarray(x))) for x in leaves
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


class Checkpointer:
  """Saves and restores `(state, metadata)` under `directory/<step>/`."""

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def save(self, step: int, state: Any, metadata: dict[str, Any]) -> bool:
    """Saves synchronously; refuses (returns False) if the state holds non-finite values."""
    leaves = jax.tree.leaves(state)
    if not _all_finite(leaves):
      log.warning("step %d: state holds non-finite values; checkpoint not written", step)
      return False
    tree = {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(metadata)), force=True)
    self._manager.wait_until_finished()
    return True

  def steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def restore_latest(self, template: Any) -> tuple[int, Any, dict[str, Any]]:
    """Restores the newest usable checkpoint into the structure of `template`.

    Raises:
      CheckpointError: if no checkpoint exists or none can be restored.
    """
    steps = self.steps()
    if not steps:
      raise CheckpointError(f"no checkpoint under {self.directory}")
    errors = []
    for step in reversed(steps):
      try:
        return step, *self._restore(step, template)
      except Exception as e:  # noqa: BLE001 - any failure means "try the previous one"
        log.warning("checkpoint %s/%d is unusable (%s: %s); trying the previous one",
                    self.directory, step, type(e).__name__, e)
        errors.append(f"step {step}: {type(e).__name__}: {e}")
    raise CheckpointError(f"no usable checkpoint under {self.directory}: " + "; ".join(errors))

  def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restores the checkpoint of `step` (no fallback) into the structure of `template`.

    Raises:
      CheckpointError: if there is no checkpoint of `step` (the message lists the
        available steps) or it cannot be restored.
    """
    steps = self.steps()
    if step not in steps:
      raise CheckpointError(f"no checkpoint of step {step} under {self.directory}; available steps: {steps}")
    try:
      return self._restore(step, template)
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(f"checkpoint {self.directory}/{step} is unusable: {type(e).__name__}: {e}") from e

  def _restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
    leaves, treedef = jax.tree.flatten(template)
    abstract = {f"{i:05d}": jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
                for i, x in enumerate(leaves)}
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    restored = [out["state"][f"{i:05d}"] for i in range(len(leaves))]
    if not _all_finite(restored):
      raise CheckpointError("non-finite values")
    for i, (a, b) in enumerate(zip(restored, leaves)):
      if np.shape(a) != np.shape(b):
        raise CheckpointError(f"leaf {i} has shape {np.shape(a)}, expected {np.shape(b)}")
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in restored]), dict(out["meta"])

  def close(self):
    self._manager.close()
