"""A contender for `RunLock` in a race between processes (used by tests/training/test_run_lock.py).

It lives in the package, not in the test module, so that a `forkserver` process can preload it and
fork contenders that neither import pytest nor inherit JAX's threads.
"""

from __future__ import annotations

import pathlib

from tcred.training.tracking import RunError, RunLock


def contend(run_dir: str, start, done, wins) -> None:
  """Waits for every contender (`start` barrier), tries the lock once, and holds it until every
  contender has tried (`done` barrier); counts a win in the shared integer `wins`."""
  start.wait()
  try:
    lock = RunLock(pathlib.Path(run_dir)).__enter__()
  except RunError:
    done.wait()
    return
  with wins.get_lock():
    wins.value += 1
  done.wait()
  lock.__exit__(None, None, None)
