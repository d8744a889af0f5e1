"""The run lock (tcred.training.tracking.RunLock): one owner, always, even in a race."""

import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tcred.testing.lock_race import contend
from tcred.training.tracking import RunError, RunLock

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_processes_racing_for_the_lock_have_exactly_one_winner(tmp_path):
  # Contenders fork from a fresh forkserver (no JAX threads) that has the contender preloaded.
  ctx = multiprocessing.get_context("forkserver")
  ctx.set_forkserver_preload(["tcred.testing.lock_race"])
  n, trials = 6, 40
  for trial in range(trials):
    start, done, wins = ctx.Barrier(n), ctx.Barrier(n), ctx.Value("i", 0)
    procs = [ctx.Process(target=contend, args=(str(tmp_path / f"run-{trial}"), start, done, wins))
             for _ in range(n)]
    for p in procs:
      p.start()
    for p in procs:
      p.join(30)
      assert p.exitcode == 0
    assert wins.value == 1, f"trial {trial}: {wins.value} processes took the lock"
    assert not (tmp_path / f"run-{trial}" / ".lock").exists()  # released by its owner


def test_a_lock_whose_owner_has_not_written_its_pid_yet_is_not_stale(tmp_path):
  # The window of the old protocol (create the file, then write the PID): the file is empty.
  with RunLock(tmp_path):
    (tmp_path / ".lock").write_text("")
    with pytest.raises(RunError, match="in use by another process"):
      RunLock(tmp_path).__enter__()


def test_lock_names_its_owner_and_is_free_after_release(tmp_path):
  with RunLock(tmp_path):
    with pytest.raises(RunError, match=f"in use by process {os.getpid()}"):
      RunLock(tmp_path).__enter__()
  with RunLock(tmp_path):  # released: taken again
    pass


def test_lock_of_a_killed_process_is_free(tmp_path):
  code = ("import pathlib, sys, time; from tcred.training.tracking import RunLock; "
          "RunLock(pathlib.Path(sys.argv[1])).__enter__(); print('locked', flush=True); time.sleep(60)")
  env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
  proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, env=env)
  try:
    assert proc.stdout.readline().strip() == b"locked"
    with pytest.raises(RunError, match=f"process {proc.pid}"):
      RunLock(tmp_path).__enter__()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert (tmp_path / ".lock").exists()  # left behind by the killed owner, but not locked
  with RunLock(tmp_path):
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
