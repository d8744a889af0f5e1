"""Run directory, lock, atomic file writes, and the metric tracker (JSONL + TensorBoard)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import numbers
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable, Iterator

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


def _fsync_dir(directory: pathlib.Path) -> None:
  """Makes a rename inside `directory` durable (a no-op where directories cannot be opened)."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path` to write; when the block ends, the file is flushed to
  disk (fsync) and renamed onto `path` (os.replace), so `path` is either its old content or the
  whole new one, never a part (a full disk, a kill). On an error the temporary file is removed
  and the error raised; `path` is untouched. The temporary name keeps `path`'s suffix (matplotlib
  reads the format from it) and starts with a dot."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
  os.close(fd)
  tmp = pathlib.Path(tmp)
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a report unreadable to others
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  _fsync_dir(path.parent)


def write_atomic(path: str | pathlib.Path, data: str | bytes) -> None:
  """Writes `data` (text as UTF-8) to `path` through `atomic_path`: every file of a run, cache
  or report is written this way (config.json, summary.json, tables, reports, caches)."""
  with atomic_path(path) as tmp:
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def write_json(path: str | pathlib.Path, value: Any, *, indent: int | None = 1) -> None:
  """`value` as JSON through `write_atomic`; NaN and ±inf are written as null (`json_ready`), so the
  file is valid JSON."""
  write_atomic(path, json.dumps(json_ready(value), indent=indent, allow_nan=False))


def json_ready(value: Any) -> Any:
  """`value` with every non-finite float (NaN, ±inf) replaced by None, through dicts, lists and tuples:
  what strict JSON readers (jq, JavaScript, pandas) accept. Readers turn None back into NaN."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(v) for v in value]
  return value


def write_directory_atomic(out: str | pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
  """Calls `write(tmp)` on a new temporary directory beside `out`, then fsyncs its files and renames
  it to `out` (which must not exist or be an empty directory), so `out` never holds a part of what
  `write` writes. On an error the temporary directory, and any parent of `out` this call created,
  are removed and the error raised."""
  out = pathlib.Path(out).absolute()
  created, parent = [], out.parent
  while not parent.exists():
    created.append(parent)
    parent = parent.parent
  tmp = None
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    write(tmp)
    for file in tmp.rglob("*"):
      if file.is_file():
        with open(file, "rb+") as f:
          os.fsync(f.fileno())
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    _fsync_dir(out.parent)
  except BaseException:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
    for directory in created:  # innermost first
      with contextlib.suppress(OSError):
        directory.rmdir()
    raise


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


_WRITERS = itertools.count()  # `Tracker` event writers opened by this process


def _writer(run_dir: pathlib.Path):
  """A tensorboardX writer of a new event file in `run_dir`. tensorboardX names a file by the second
  it was opened: a suffix unique to the writer keeps a second writer within that second (a quick
  resume, a test) from truncating the first one's file."""
  from tensorboardX import SummaryWriter

  return SummaryWriter(str(run_dir), flush_secs=10, filename_suffix=f".{os.getpid()}-{next(_WRITERS)}")


def _add_scalars(writer, step: int, row: dict[str, Any]) -> None:
  for k, v in row.items():
    if k != "step":
      writer.add_scalar(k, v, step)


def _scalar_event_files(run_dir: pathlib.Path) -> list[pathlib.Path]:
  """The TensorBoard event files of `run_dir` a `Tracker` wrote (not the `.hparams` one), oldest first."""
  return sorted(p for p in run_dir.glob("events.out.tfevents.*") if not p.name.endswith(HPARAMS_SUFFIX))


def _events_up_to(files: list[pathlib.Path], last_step: int) -> dict[int, list[Any]]:
  """{step: [events]} of the summaries in `files` at steps <= `last_step` other than scalars (the
  text a `Tracker` wrote), as tensorboardX events; one per (tag, step), the first found. A record cut
  short by a kill ends its file's reading."""
  from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
  from tensorboardX.proto import event_pb2

  found: dict[int, list[Any]] = {}
  seen = set()
  for path in files:
    for record in RawEventFileLoader(str(path)).Load():
      event = event_pb2.Event.FromString(record)
      if not event.HasField("summary") or event.step > last_step:
        continue
      values = [v for v in event.summary.value if v.WhichOneof("value") != "simple_value"
                and (v.tag, event.step) not in seen]
      if not values:
        continue
      seen.update((v.tag, event.step) for v in values)
      del event.summary.value[:]
      event.summary.value.extend(values)
      found.setdefault(event.step, []).append(event)
  return found


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

  Non-finite values are written to metrics.jsonl as null (valid JSON; `tcred.evaluation.tables`
  reads them back as NaN) and to TensorBoard as they are. metrics.jsonl is flushed every step;
  tensorboardX writes its events from a queue, every 10 s, so a kill loses the latest TensorBoard
  events (up to 10 s of steps), which the resume writes again:

  on resume (`resume_step`: the step of the restored checkpoint), metrics.jsonl keeps its rows up to
  `resume_step`, and the run's TensorBoard scalars are rewritten so that every step is in exactly one
  event file, once. A new event file, closed before anything is removed, gets the kept rows of
  metrics.jsonl (every step up to the checkpoint, including those a killed run never got to write to
  TensorBoard) and the other events of the old files up to `resume_step` (text); then the old files
  (not the `.hparams` one) are removed. The steps after the checkpoint, which the run redoes, are
  written again as it goes. TensorBoard then shows each step once, and a resumed run's curves equal
  the uninterrupted run's (TensorBoard's `purge_step` relies on each reader honouring it, and cannot
  bring back steps that were never written before a kill).
  """

  def __init__(self, run_dir: pathlib.Path, *, resume_step: int | None = None):
    self.run_dir = run_dir
    self.path = run_dir / "metrics.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)
    kept: list[tuple[str, dict[str, Any]]] = []
    if resume_step is not None and self.path.exists():
      kept = [(line, row) for line in self.path.read_text().splitlines()
              if (row := _parse(line)) is not None and row["step"] <= resume_step]
    write_atomic(self.path, "".join(line + "\n" for line, _ in kept))
    old = _scalar_event_files(run_dir)
    other = _events_up_to(old, resume_step) if resume_step is not None else {}
    if resume_step is not None:  # the steps kept, in a file closed (all written) before the old ones go
      with _writer(run_dir) as replay:
        rows = {row["step"]: row for _, row in kept}
        for step in sorted(set(rows) | set(other)):
          for event in other.get(step, []):
            replay.file_writer.add_event(event)
          if step in rows:
            _add_scalars(replay, step, {k: math.nan if v is None else v for k, v in rows[step].items()})
    for path in old:  # after the new file holds everything: a kill in between leaves duplicates only
      path.unlink(missing_ok=True)  # until the next resume, which rewrites them again
    self._tb = _writer(run_dir)
    self._file = self.path.open("a")

  def log(self, step: int, metrics: dict[str, Any]):
    row = {"step": step, **{k: _scalar(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(json_ready(row), allow_nan=False) + "\n")
    self._file.flush()
    _add_scalars(self._tb, step, row)

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
