"""Process settings that must be in place before the process starts.

XLA:CPU allocates each jitted call's temporary buffers afresh, and glibc's `malloc`
serves every block above 32 MiB with a new `mmap`: the kernel then faults the pages
in 4 KiB at a time. The RL train step of `bench-27m` touched ≈ 2 GB of fresh pages
per step that way (≈ 510,000 minor page faults, 1.3–2 s of system time per step on
two cores). glibc ≥ 2.35 can ask for transparent huge pages on those mappings
(tunable `glibc.malloc.hugetlb=1`, i.e. `madvise(MADV_HUGEPAGE)`), which cuts the
faults ≈ 350-fold and the step time by ≈ 17% on that machine
(`benchmarks/results/performance.md`). Tunables are read only when a process
starts, so the command line re-executes itself once with the tunable set.

Two more process settings live here: a child process of `tcred table` dies with
its parent (`die_with_parent`), and SIGTERM / SIGHUP stop a command the way
Ctrl-C does, after the current RL step where that step can be finished
(`stop_signals`). `shown_command` writes the command line a results file prints
without this machine's absolute paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "TCRED_HUGE_PAGES"  # "0" keeps glibc's default (no re-execution)


def huge_pages_environ(environ: Mapping[str, str], platform: str | None = None) -> dict[str, str] | None:
  """The environment to re-execute with so that glibc backs large allocations with
  transparent huge pages, or None when there is nothing to do (not Linux, opted out
  with `TCRED_HUGE_PAGES=0`, or the tunable is already set, e.g. by a parent process).
  Other glibc tunables are kept. Harmless where the tunable is unknown (glibc < 2.35)
  or transparent huge pages are disabled."""
  platform = sys.platform if platform is None else platform
  if not platform.startswith("linux") or environ.get(OPT_OUT, "1") == "0":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if HUGE_PAGES_TUNABLE in tunables:
    return None
  setting = f"{HUGE_PAGES_TUNABLE}=1"
  return dict(environ) | {"GLIBC_TUNABLES": f"{tunables}:{setting}" if tunables else setting}


def reexec_with_huge_pages() -> None:
  """Replaces this process by the same command with `huge_pages_environ`'s environment
  (returns without doing anything when that is None). Call it first thing in a command
  line entry point, before JAX is imported: nothing done before it survives."""
  env = huge_pages_environ(os.environ)
  if env is None or not sys.executable:  # an embedded interpreter has no executable to restart
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    # sys.orig_argv keeps the interpreter's own options (`-m tcred.cli`, `-X ...`).
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError as e:  # carry on with glibc's defaults rather than fail the command
    print(f"tcred: could not restart with {HUGE_PAGES_TUNABLE}=1 ({e}); continuing without huge pages",
          file=sys.stderr)


PARENT_PID = "TCRED_PARENT_PID"  # set by `tcred table` in the environment of its `tcred run` children
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(environ: Mapping[str, str] | None = None) -> None:
  """In a child of `tcred table` (`$TCRED_PARENT_PID` set): asks Linux to send SIGTERM to this
  process when its parent dies (`prctl(PR_SET_PDEATHSIG)`), then exits at once if the parent
  has died already (between the fork and this call). Does nothing elsewhere.

  The setting survives `execve` (the huge-pages re-execution keeps its pid and parent);
  calling this again after it re-arms it and repeats the check. SIGTERM then stops the run
  like `tcred run` itself stopped by SIGTERM: after its current step, with a checkpoint.
  """
  environ = os.environ if environ is None else environ
  parent = environ.get(PARENT_PID)
  if not parent or not sys.platform.startswith("linux"):
    return
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
      raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
  except (OSError, AttributeError) as e:
    print(f"tcred: could not ask to be stopped with the parent process ({e})", file=sys.stderr)
  if str(os.getppid()) != parent:  # the parent died before the death signal was armed
    print(f"tcred: parent process {parent} has exited; stopping", file=sys.stderr)
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)


class Stopped(KeyboardInterrupt):
  """SIGTERM or SIGHUP asked the process to stop; raised like Ctrl-C's KeyboardInterrupt, so
  the same clean-up runs (locks released, files closed, child processes stopped)."""

  def __init__(self, signum: int):
    super().__init__(f"stopped by {signal.Signals(signum).name}")
    self.signum = signum


class StopRequest:
  """What `stop_signals` yields: the signal received while stops were deferred (`signum`)."""

  def __init__(self):
    self.signum: int | None = None
    self._defer = 0

  def defer(self):
    """From now until `undefer()`, a first stop signal is only recorded in `signum` (the caller
    checks it where stopping is safe); a second one raises `Stopped` at once."""
    self._defer += 1

  def undefer(self):
    self._defer -= 1

  def _handle(self, signum, frame):
    del frame
    if self._defer and self.signum is None:
      self.signum = signum
      return
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
  """SIGTERM and SIGHUP raise `Stopped` in the main thread within this block (or are recorded
  between `StopRequest.defer()` and `undefer()`); the previous handlers come back after it. A signal
  that is ignored (`nohup`) stays ignored; outside the main thread (where Python cannot set handlers)
  it changes nothing."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  # A signal already ignored stays ignored: `nohup tcred run ...` must survive the terminal's SIGHUP.
  previous = {s: signal.signal(s, request._handle) for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
  try:
    yield request
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def shown_path(text: str, cwd: str | os.PathLike | None = None) -> str:
  """`text` as a results file may print it: an absolute path under `cwd` (default: the working directory) becomes
  relative to it, one under the home directory `~/...`, any other absolute path `.../NAME` (its last part), so no
  committed file names a directory of the machine it was made on. Anything else is returned as it is."""
  if not text.startswith(os.sep):
    return text
  path = pathlib.Path(os.path.normpath(text))
  for root, shown in ((pathlib.Path(cwd or os.getcwd()), None), (pathlib.Path.home(), "~")):
    try:
      rel = path.relative_to(root)
    except ValueError:
      continue
    if shown is None:
      return str(rel)
    return f"{shown}/{rel}" if str(rel) != "." else shown
  return f".../{path.name}" if path.name else text


def shown_command(words: Sequence[str], cwd: str | os.PathLike | None = None) -> str:
  """A shell command line of `words` with every absolute path, alone or as a `--flag=PATH` value, shown by
  `shown_path`."""
  def word(w: str) -> str:
    flag, eq, value = w.partition("=")
    if eq and flag.startswith("-"):
      return f"{flag}={shown_path(value, cwd)}"
    return shown_path(w, cwd)

  return shlex.join(word(w) for w in words)
