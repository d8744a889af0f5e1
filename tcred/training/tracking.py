"""Run directory, lock, and the metric tracker (JSONL + TensorBoard)."""

from __future__ import annotations

import fcntl
import json
import numbers
import os
import pathlib
from typing import Any

import numpy as np


class RunError(RuntimeError):
  """A run cannot start: a bad setting found before anything is written (the CLI exits 2), or a run
  directory that cannot be used (locked, exists without --resume, config mismatch)."""


def check_writable_dir(path: str | pathlib.Path, flag: str) -> None:
  """Raises RunError naming `flag` unless `path` is, or can be created as, a writable directory.

  Creates nothing: it finds the nearest existing ancestor, which must be a directory, and creates
  and removes one probe file in it (root passes permission bits, a read-only filesystem does not).
  """
  import tempfile

  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise RunError(f"{flag} {str(path)!r} is not a directory")
  ancestor = path.absolute()
  while not ancestor.exists():
    ancestor = ancestor.parent
  if not ancestor.is_dir():
    raise RunError(f"{flag} {str(path)!r}: {ancestor} is not a directory")
  try:
    fd, probe = tempfile.mkstemp(prefix=".tcred-write-probe-", dir=ancestor)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise RunError(f"{flag} {str(path)!r}: cannot write in {ancestor} ({e.strerror or e})") from None


class RunLock:
  """An exclusive lock on `run_dir/.lock`, held for the life of the owning process.

  Acquisition is one atomic step: `flock(LOCK_EX | LOCK_NB)` on the open lock
  file. The kernel releases the lock when its owner exits or is killed, so a
  lock left by a dead process is free with no staleness guess, and two
  processes starting in the same microsecond cannot both win (a reader of a
  half-written PID file could, with a create-then-write-PID protocol). The
  file holds the owner's PID for the message of a process that finds it taken.
  The file is removed on release; a process that locked an inode already
  unlinked by a releasing owner sees that it no longer is `path` and retries.
  """

  def __init__(self, run_dir: pathlib.Path):
    self.path = run_dir / ".lock"
    self._fd: int | None = None

  def __enter__(self):
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
      fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        raise RunError(f"{self.path.parent} is in use by {_owner(self.path)} (lock {self.path})") from None
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if not same:  # the previous owner removed the file after we opened it: lock the new one
        os.close(fd)
        continue
      os.ftruncate(fd, 0)
      os.write(fd, str(os.getpid()).encode())
      self._fd = fd
      return self
    raise RunError(f"could not take the lock {self.path}")

  def __exit__(self, *exc):
    if self._fd is not None:
      self.path.unlink(missing_ok=True)  # before unlocking: a waiter then sees a fresh inode
      os.close(self._fd)
      self._fd = None


def _owner(path: pathlib.Path) -> str:
  """'process N' from the lock file, or 'another process' while its owner has not written it yet."""
  try:
    pid = int(path.read_text().strip())
  except (OSError, ValueError):
    return "another process"
  return f"process {pid}"


def _scalar(v: Any) -> float | int:
  v = np.asarray(v)
  return v.item()


def _parse(line: str) -> dict[str, Any] | None:
  """One metrics.jsonl row, or None for a blank line or one cut short by a kill mid-write."""
  try:
    row = json.loads(line)
  except json.JSONDecodeError:
    return None
  return row if isinstance(row, dict) and "step" in row else None


HPARAMS_SUFFIX = ".hparams"  # event files holding a run's hparams record (one per finished run)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
  """Nested dict -> {"rl.lr": 1e-4, "credit.name": "grpo", ...} of TensorBoard hparam values.

  Dicts nest with "."; bools, numbers and strings stay; None is left out (an
  unset hparam, so a field that is None in one run and a number in another
  keeps a numeric type); anything else (lists, tuples) becomes its JSON text.
  """
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if value is None:
      continue
    if isinstance(value, dict):
      flat.update(flatten_config(value, prefix=name + "."))
    elif isinstance(value, (bool, str, numbers.Real)):
      flat[name] = value if isinstance(value, (bool, str)) else float(value)
    else:
      flat[name] = json.dumps(value)
  return flat


class Tracker:
  """Writes one JSON object per step to `metrics.jsonl` and the same scalars to TensorBoard.

  On resume, lines after `resume_step` are dropped and TensorBoard events after
  it are purged, so a resumed run's logs equal the uninterrupted run's.
  """

  def __init__(self, run_dir: pathlib.Path, *, resume_step: int | None = None):
    from tensorboardX import SummaryWriter

    self.run_dir = run_dir
    self.path = run_dir / "metrics.jsonl"
    if resume_step is None:
      self.path.write_text("")
    elif self.path.exists():
      keep = [line for line in self.path.read_text().splitlines()
              if (row := _parse(line)) is not None and row["step"] <= resume_step]
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

  def hparams(self, config: dict[str, Any], metrics: dict[str, Any], *, step: int):
    """Records the run for TensorBoard's HParams dashboard (call once, when the run ends).

    Writes, into this run's directory (so the HParams session is the run
    itself, `NAME/seed-S`), a session-start record holding `flatten_config(config)`,
    the numeric entries of `metrics` as scalars `summary/<key>` at `step` (the
    dashboard's metric columns), and a session-end record. It uses its own event
    file (suffix `.hparams`, replacing an earlier one of a resumed run), so it
    may be called after `close()`.

    No experiment-level summary is written on purpose: TensorBoard uses the
    first one it finds for every run, which would hide the hparams of methods
    whose credit config has other fields. Without it, the dashboard unions
    the hparams of all sessions and offers every scalar tag as a metric.
    """
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams as hparams_summaries

    flat = flatten_config(config)
    numeric = {f"summary/{k}": float(v) for k, v in metrics.items()
               if isinstance(v, numbers.Real) and not isinstance(v, bool)}
    _, start, end = hparams_summaries(flat, numeric)
    for old in self.run_dir.glob(f"events.out.tfevents.*{HPARAMS_SUFFIX}"):
      old.unlink()
    with SummaryWriter(str(self.run_dir), filename_suffix=HPARAMS_SUFFIX) as w:
      w.file_writer.add_summary(start, step)
      for k, v in numeric.items():
        w.add_scalar(k, v, step)
      w.file_writer.add_summary(end, step)

  def close(self):
    self._file.close()
    self._tb.close()


class NoTracker:
  """A `Tracker` that writes nothing: the processes other than process 0 of a run across
  several processes (`tcred.parallel.distributed`), which compute the same rows."""

  def log(self, step: int, metrics: dict[str, Any]):
    pass

  def text(self, tag: str, text: str, step: int):
    pass

  def hparams(self, config: dict[str, Any], metrics: dict[str, Any], *, step: int):
    pass

  def close(self):
    pass
