"""Orbax checkpoints of a train state plus JSON metadata (loop counters, config).

The state is saved as its flat list of leaves; restoring rebuilds the tree from
a template of the same structure, so NNX/optax container types never reach
Orbax. Each checkpoint's metadata also holds a digest of every leaf
(`leaf_digests`), so a checkpoint whose bytes still decode but whose values
changed (plausible, finite, wrong) is caught as surely as a truncated or
unreadable one.

Sharded state (`tcred.parallel.mesh`): a leaf placed over several devices is given to
Orbax as the jax.Array it is, so each process writes its own shards; a restore places
every leaf as the template's leaf is placed, so a run saved on one mesh resumes on
another shape (or on one device). The digests are of the global array, whatever its
placement, so they check a checkpoint restored on another mesh just the same.

A checkpoint that fails to restore, fails its digests or holds non-finite values
is reported in one line and the previous one is used (DESIGN §8). With
`quarantine=True` (the RL loop) the unusable step directory is moved to
`<directory>/quarantine/<step>-<reason>/` (with the full error text in
`restore-error.txt`), so the run can write that step again and rotation keeps
the good checkpoints, never the corrupt one. Orbax's, absl's and asyncio's
output around a failed restore or save (hundreds of lines of tracebacks from
its writer threads) is captured, not printed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

from tcred.parallel.distributed import host_value
from tcred.training.tracking import RunError, write_atomic

log = logging.getLogger(__name__)

DIGESTS_KEY = "leaf_digests"  # metadata entry: one hex digest per state leaf (absent in old checkpoints)
QUARANTINE = "quarantine"  # sub-directory of the checkpoint directory holding unusable steps
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(RunError):
  """No usable checkpoint could be restored (the message names each one and what is wrong with it)."""


class CheckpointWriteError(RunError):
  """A checkpoint could not be written (e.g. no space left on the device); nothing was kept of it."""


class _Unusable(Exception):
  """One checkpoint failed a check; `reason` is a short slug for its quarantine directory name."""

  def __init__(self, reason: str, message: str, details: str = ""):
    super().__init__(message)
    self.reason = reason
    self.details = details  # the full error text and whatever Orbax printed meanwhile


def _sharded(x) -> bool:
  """Whether `x` is a jax.Array placed over more than one device."""
  return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1


def _all_finite(leaves) -> bool:
  return all(np.all(np.isfinite(x)) for x in map(host_value, leaves) if np.issubdtype(x.dtype, np.inexact))


def leaf_digest(x) -> str:
  """SHA-256 (first 16 hex digits) of one leaf's dtype, shape and bytes (its global value)."""
  a = np.ascontiguousarray(host_value(x))
  h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
  h.update(a.reshape(-1).view(np.uint8))  # the bytes, without a copy (any dtype, bfloat16 too)
  return h.hexdigest()[:16]


def disk_full(e: BaseException) -> bool:
  """Whether `e`, or an exception it was raised from, says the device is full.

  Python's own writes raise OSError(ENOSPC); Orbax's TensorStore writer raises a
  ValueError `RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']`.
  """
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
      return True
    if any(os.strerror(n) in str(e) for n in DISK_FULL_ERRNOS):
      return True
    e = e.__cause__ or e.__context__
  return False


def _drop_closed_loop_callbacks() -> None:
  """Stops Python printing the "Event loop is closed" errors of TensorStore's late callbacks.

  After a failed Orbax read or write, reads still in flight complete on TensorStore's
  threads and try to wake the asyncio loop that Orbax has closed; Python reports each
  as an unraisable exception (a 6-line traceback), possibly seconds later. Only that
  error is dropped; every other unraisable exception goes to the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_tcred_drops_closed_loop", False):
    return

  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    previous(unraisable)

  hook._tcred_drops_closed_loop = True
  sys.unraisablehook = hook


class _Capture:
  """What `_captured_output` yields: `text` once the block has ended."""

  def __init__(self, file):
    self._file = file
    self.text = ""

  def settle(self, *, quiet_s: float = 0.3, max_s: float = 3.0):
    """Waits until nothing more was written for `quiet_s` (at most `max_s`): after a failed
    read, Orbax's reader threads print their tracebacks for a moment after the error returns."""
    deadline, size, t = time.monotonic() + max_s, -1, time.monotonic()
    while time.monotonic() < deadline:
      now = os.fstat(self._file.fileno()).st_size
      if now != size:
        size, t = now, time.monotonic()
      elif time.monotonic() - t >= quiet_s:
        return
      time.sleep(0.05)


@contextlib.contextmanager
def _captured_output() -> Iterator[_Capture]:
  """Runs the block with logging disabled and file descriptor 2 sent to a temporary file.

  Orbax reports a failed read or write through absl logging and through
  tracebacks that its TensorStore callbacks print from other threads; neither
  helps a user. The captured text is in the yielded object's `text` after the block.
  """
  previous_disable = logging.root.manager.disable
  logging.disable(logging.CRITICAL)
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  with tempfile.TemporaryFile() as tmp:
    capture = _Capture(tmp)
    try:
      saved = os.dup(2)
      os.dup2(tmp.fileno(), 2)
    except OSError:  # no descriptor 2 (an embedding without stderr): nothing to capture
      saved = None
    try:
      yield capture
    finally:
      sys.stderr.flush()
      if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
      logging.disable(previous_disable)
      tmp.seek(0)
      capture.text = tmp.read().decode(errors="replace")


def _first_line(e: BaseException, limit: int = 160) -> str:
  text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  return text if len(text) <= limit else text[:limit] + "..."


def _read_error(e: BaseException) -> _Unusable:
  """Classifies an exception of Orbax's restore (truncated data files read past their end)."""
  text = str(e)
  if "OUT_OF_RANGE" in text or "is not valid for value of size" in text:
    return _Unusable("truncated", "truncated: a data file is shorter than its index says")
  return _Unusable("unreadable", f"unreadable: {type(e).__name__}: {_first_line(e, 100)}")


def _placement(x) -> jax.sharding.Sharding:
  """Where a restored leaf goes: as the template leaf is placed (a jax.Array), else the first local device.
  Orbax needs it when the checkpoint was written on another mesh ("topology mismatch")."""
  if isinstance(x, jax.Array):
    return x.sharding
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


class Checkpointer:
  """Saves and restores `(state, metadata)` under `directory/<step>/`.

  Across several processes (`tcred.parallel.distributed`) a checkpoint is collective: every
  process calls `save` and `restore` alike (Orbax writes each process's shards, process 0 the
  metadata), and `directory` must be on a file system they all see. `local=True`: this
  process's own checkpoint of arrays it holds whole (a cache, e.g. the SFT base policy),
  written and read without the others (Orbax's `active_processes` = this one).
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2, local: bool = False,
               keep_every: int | None = None):
    """`keep_every`: checkpoints whose step is a multiple of it are never rotated out (beside the last
    `max_to_keep`; Orbax's `EveryNSteps` preservation policy)."""
    self.directory = pathlib.Path(directory).absolute()
    if not (local and jax.process_count() > 1):
      if keep_every is None:
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
      else:
        from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

        options = ocp.CheckpointManagerOptions(create=True, preservation_policy=pp.AnyPreservationPolicy(
            [pp.LatestN(max_to_keep), pp.EveryNSteps(keep_every)]))
      self._manager = ocp.CheckpointManager(self.directory, options=options)
      return
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                               barrier_sync_key_prefix=f"tcred-local-{me}")
    self.directory.mkdir(parents=True, exist_ok=True)  # Orbax's create=True is for all processes only
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False,
                                                             multiprocessing_options=alone),
        item_handlers={"state": ocp.StandardCheckpointHandler(multiprocessing_options=alone),
                       "meta": ocp.JsonCheckpointHandler(multiprocessing_options=alone)})

  def save(self, step: int, state: Any, metadata: dict[str, Any]) -> bool:
    """Saves synchronously; refuses (returns False) if the state holds non-finite values.

    Raises:
      CheckpointWriteError: if the device is full (or another OS error stops
        the write); the partial step directory is removed first.
    """
    leaves = jax.tree.leaves(state)
    if not _all_finite(leaves):
      log.warning("step %d: state holds non-finite values; checkpoint not written", step)
      return False
    # Sharded leaves go to Orbax as jax.Arrays (each process writes its shards); the rest as host arrays.
    tree = {f"{i:05d}": x if _sharded(x) else np.asarray(x) for i, x in enumerate(leaves)}
    meta = {**metadata, DIGESTS_KEY: [leaf_digest(x) for x in tree.values()]}
    try:
      with _captured_output() as captured:
        try:
          self._manager.save(step, args=ocp.args.Composite(
              state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
          self._manager.wait_until_finished()
        except Exception:
          _drop_closed_loop_callbacks()
          captured.settle()
          raise
    except Exception as e:  # noqa: BLE001 - classified below; anything else is re-raised as is
      full = disk_full(e)
      if not (full or isinstance(e, OSError)):
        raise
      self._remove_partial(step)
      reason = "no space left on the device" if full else f"{type(e).__name__}: {_first_line(e)}"
      raise CheckpointWriteError(f"could not write checkpoint step {step} under {self.directory}: {reason}; "
                                 f"the checkpoints written before are kept") from e
    return True

  def _remove_partial(self, step: int):
    """Deletes what a failed save of `step` left (Orbax's temporary directory, or the step itself)."""
    for path in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
      shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(Exception):
      self._manager.reload()
    if step not in self._manager.all_steps():
      shutil.rmtree(self.directory / str(step), ignore_errors=True)

  def steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def _restore_step(self, step: int, abstract: dict, template_leaves: list, paths: list[str]
                    ) -> tuple[list, dict[str, Any]]:
    """Restores and checks one step; raises _Unusable naming what is wrong."""
    with _captured_output() as captured:
      try:
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        arrays = [out["state"][f"{i:05d}"] for i in range(len(template_leaves))]
        restored = [host_value(x) for x in arrays]
        meta = dict(out["meta"])
      except Exception as e:  # noqa: BLE001 - any failure to read makes this checkpoint unusable
        error = e
        _drop_closed_loop_callbacks()
        captured.settle()
      else:
        error = None
    if error is not None:
      unusable = _read_error(error)
      unusable.details = f"{type(error).__name__}: {error}\n\nOutput captured meanwhile:\n{captured.text}"
      raise unusable from None
    for i, (a, b) in enumerate(zip(restored, template_leaves)):
      if np.shape(a) != np.shape(b):
        raise _Unusable("shape", f"leaf {i} ({paths[i]}) has shape {np.shape(a)}, expected {np.shape(b)}")
    digests = meta.pop(DIGESTS_KEY, None)
    if digests is not None:
      if len(digests) != len(restored):
        raise _Unusable("checksum", f"holds {len(digests)} leaf digests for {len(restored)} leaves")
      bad = [i for i, (a, d) in enumerate(zip(restored, digests)) if leaf_digest(a) != d]
      if bad:
        raise _Unusable("checksum", f"checksum mismatch in {len(bad)} of {len(restored)} leaves "
                                    f"(first: leaf {bad[0]}, {paths[bad[0]]})")
    if not _all_finite(restored):
      raise _Unusable("non-finite", "holds non-finite values")
    # Leaves placed over several devices stay as Orbax placed them (the template's placement).
    return [a if _sharded(a) else r for a, r in zip(arrays, restored)], meta

  def _quarantine(self, step: int, unusable: _Unusable) -> pathlib.Path:
    """Moves `directory/<step>` to `directory/quarantine/<step>-<reason>[-k]/`; returns the new path."""
    root = self.directory / QUARANTINE
    root.mkdir(exist_ok=True)
    target, k = root / f"{step}-{unusable.reason}", 1
    while target.exists():
      k += 1
      target = root / f"{step}-{unusable.reason}-{k}"
    shutil.move(str(self.directory / str(step)), str(target))
    write_atomic(target / "restore-error.txt", f"{unusable}\n\n{unusable.details}")
    self._manager.reload()
    return target

  def restore_latest(self, template: Any, *, quarantine: bool = False) -> tuple[int, Any, dict[str, Any]]:
    """Restores the newest usable checkpoint into the structure of `template`.

    Each unusable checkpoint (unreadable, truncated, checksum mismatch, wrong
    shapes, non-finite values) is reported in one warning line; with
    `quarantine=True` it is also moved out of the way (module docstring), so a
    writer that resumes from an older step can save this step again.

    Raises:
      CheckpointError: if no checkpoint exists or none can be restored; the
        message names each checkpoint and what is wrong with it.
    """
    steps = self.steps()
    if not steps:
      raise CheckpointError(f"no checkpoint under {self.directory}")
    treedef, leaves, paths, abstract = self._abstract(template)
    errors = []
    for step in reversed(steps):
      try:
        restored, meta = self._restore_step(step, abstract, leaves, paths)
      except _Unusable as e:
        where = ""
        if quarantine:
          where = f"; moved to {self._quarantine(step, e)} (see its restore-error.txt)"
        log.warning("checkpoint %s/%d is unusable (%s)%s; trying the previous one", self.directory, step, e, where)
        errors.append(f"step {step}: {e}{where}")
        continue
      return step, self._unflatten(treedef, restored), meta
    raise CheckpointError(f"no usable checkpoint under {self.directory}: " + "; ".join(errors))

  def _abstract(self, template: Any):
    """`(treedef, leaves, leaf paths, abstract arrays)` of a restore template."""
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = [x for _, x in path_leaves]
    paths = [jax.tree_util.keystr(p) for p, _ in path_leaves]
    abstract = {f"{i:05d}": jax.ShapeDtypeStruct(np.shape(x), x.dtype if isinstance(x, jax.Array)
                                                 else np.asarray(x).dtype, sharding=_placement(x))
                for i, x in enumerate(leaves)}
    return treedef, leaves, paths, abstract

  @staticmethod
  def _unflatten(treedef, restored: list) -> Any:
    return jax.tree.unflatten(treedef, [x if _sharded(x) else jax.numpy.asarray(x) for x in restored])

  def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restores the checkpoint of `step` (no fallback) into the structure of `template`.

    Raises:
      CheckpointError: if there is no checkpoint of `step` (the message lists the
        available steps) or it cannot be restored (the message says why).
    """
    steps = self.steps()
    if step not in steps:
      raise CheckpointError(f"no checkpoint of step {step} under {self.directory}; available steps: {steps}")
    treedef, leaves, paths, abstract = self._abstract(template)
    try:
      restored, meta = self._restore_step(step, abstract, leaves, paths)
    except _Unusable as e:
      raise CheckpointError(f"checkpoint {self.directory}/{step} is unusable ({e})") from None
    return self._unflatten(treedef, restored), meta

  def close(self):
    self._manager.close()
