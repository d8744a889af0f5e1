"""Run directory, lock, and the metric tracker (JSONL + TensorBoard)."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np


class RunError(RuntimeError):
  """A run directory cannot be used (locked, exists without --resume, config mismatch)."""


class RunLock:
  """An exclusive lock file `run_dir/.lock` holding the owner's pid; stale locks are taken over."""

  def __init__(self, run_dir: pathlib.Path):
    self.path = run_dir / ".lock"

  def __enter__(self):
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        try:
          pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
          pid = 0
        if pid and _alive(pid):
          raise RunError(f"{self.path.parent} is in use by process {pid} (lock {self.path})") from None
        self.path.unlink(missing_ok=True)  # stale lock of a dead process
        continue
      with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
      return self
    raise RunError(f"could not take the lock {self.path}")

  def __exit__(self, *exc):
    self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _scalar(v: Any) -> float | int:
  v = np.asarray(v)
  return v.item()


class Tracker:
  """Writes one JSON object per step to `metrics.jsonl` and the same scalars to TensorBoard.

  On resume, lines after `resume_step` are dropped and TensorBoard events after
  it are purged, so a resumed run's logs equal the uninterrupted run's.
  """

  def __init__(self, run_dir: pathlib.Path, *, resume_step: int | None = None):
    from tensorboardX import SummaryWriter

    self.path = run_dir / "metrics.jsonl"
    if resume_step is None:
      self.path.write_text("")
    elif self.path.exists():
      keep = [line for line in self.path.read_text().splitlines()
              if line.strip() and json.loads(line)["step"] <= resume_step]
      self.path.write_text("".join(line + "\n" for line in keep))
    self._file = self.path.open("a")
    self._tb = SummaryWriter(str(run_dir), purge_step=None if resume_step is None else resume_step + 1,
                             flush_secs=10)

  def log(self, step: int, metrics: dict[str, Any]):
    row = {"step": step, **{k: _scalar(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    for k, v in row.items():
      if k != "step":
        self._tb.add_scalar(k, v, step)

  def text(self, tag: str, text: str, step: int):
    self._tb.add_text(tag, text, step)

  def close(self):
    self._file.close()
    self._tb.close()
