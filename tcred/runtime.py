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
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

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
