import os
import signal
import subprocess
import sys
import time

import pytest

from tcred.runtime import HUGE_PAGES_TUNABLE, huge_pages_environ


def test_sets_the_tunable_and_keeps_other_tunables():
  env = huge_pages_environ({"PATH": "/bin"}, platform="linux")
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": f"{HUGE_PAGES_TUNABLE}=1"}
  env = huge_pages_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, platform="linux")
  assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGE_PAGES_TUNABLE}=1"


@pytest.mark.parametrize("environ, platform", [
    ({"GLIBC_TUNABLES": f"{HUGE_PAGES_TUNABLE}=0"}, "linux"),  # already decided (e.g. by a parent process)
    ({"TCRED_HUGE_PAGES": "0"}, "linux"),  # opted out
    ({}, "darwin"),  # not glibc
])
def test_nothing_to_do(environ, platform):
  assert huge_pages_environ(environ, platform=platform) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="re-execution happens on Linux only")
def test_reexecutes_once_with_the_same_command_line():
  code = ("import os, sys; from tcred.runtime import reexec_with_huge_pages; print('start', flush=True); "
          "reexec_with_huge_pages(); print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TCRED_HUGE_PAGES")}
  out = subprocess.run([sys.executable, "-c", code, "a", "--b"], env=env, capture_output=True, text=True,
                       check=True).stdout.split("\n")
  assert out[:3] == ["start", "start", f"{HUGE_PAGES_TUNABLE}=1 ['a', '--b']"]  # printed before and after exec


def test_a_failed_restart_carries_on(monkeypatch, capsys):
  import tcred.runtime as runtime

  def fail(*args):
    raise OSError("exec format error")

  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.delenv("TCRED_HUGE_PAGES", raising=False)
  monkeypatch.setattr(runtime.sys, "platform", "linux")
  monkeypatch.setattr(runtime.os, "execve", fail)
  runtime.reexec_with_huge_pages()  # returns instead of raising
  assert "continuing without huge pages" in capsys.readouterr().err


# --- a `tcred table` child dies with its parent; SIGTERM / SIGHUP stop like Ctrl-C -------------------

def _dead(pid: int) -> bool:
  try:
    state = next(line for line in open(f"/proc/{pid}/status") if line.startswith("State:"))
  except (OSError, StopIteration):
    return True
  return "Z" in state  # a zombie waiting for a reaper has stopped running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_child_dies_with_its_parent_even_across_exec():
  # parent: starts the child (TCRED_PARENT_PID = its pid) and sleeps; the child arms the death
  # signal, then replaces itself by another program (as the huge-pages re-execution does).
  child = ("import os, sys; from tcred.runtime import die_with_parent; die_with_parent(); "
           "os.execv(sys.executable, [sys.executable, '-c', "
           "'import os, time; print(\"child\", os.getpid(), flush=True); time.sleep(60)'])")
  parent = ("import os, subprocess, sys, time; "
            f"subprocess.Popen([sys.executable, '-c', {child!r}], env={{**os.environ, 'TCRED_PARENT_PID': str(os.getpid())}}); "
            "time.sleep(60)")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, env=env)
  try:
    line = proc.stdout.readline().split()
    assert line[0] == b"child"
    pid = int(line[1])
    assert not _dead(pid)
  finally:
    proc.kill()  # SIGKILL: the parent cannot pass anything on
    proc.wait()
  deadline = time.time() + 10
  while not _dead(pid) and time.time() < deadline:
    time.sleep(0.05)
  assert _dead(pid), "the child outlived its parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_child_whose_parent_died_before_arming_stops_at_once():
  # TCRED_PARENT_PID names a process that is not (any longer) this one's parent.
  code = "from tcred.runtime import die_with_parent; die_with_parent(); print('still running')"
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TCRED_PARENT_PID": "1"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
  assert out.returncode == 128 + signal.SIGTERM and "still running" not in out.stdout
  assert "parent process 1 has exited" in out.stderr


def test_stop_signals_raise_like_ctrl_c_or_wait_for_the_step():
  from tcred.runtime import Stopped, stop_signals

  before = signal.getsignal(signal.SIGTERM)
  # The test runner itself may run under nohup (SIGHUP ignored, which stop_signals keeps): start from
  # SIGHUP's default disposition here.
  hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
  try:
    with stop_signals() as stop:
      with pytest.raises(Stopped) as e:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(1)
      assert isinstance(e.value, KeyboardInterrupt) and e.value.signum == signal.SIGHUP
      stop.defer()
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.05)
      assert stop.signum == signal.SIGTERM  # recorded, not raised: the step finishes first
      with pytest.raises(Stopped):  # a second signal does not wait
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
      stop.undefer()
    assert signal.getsignal(signal.SIGTERM) is before
  finally:
    signal.signal(signal.SIGHUP, hangup)


def test_an_ignored_hangup_stays_ignored():  # nohup tcred run ...
  from tcred.runtime import stop_signals

  before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
  try:
    with stop_signals():
      assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
      os.kill(os.getpid(), signal.SIGHUP)
      time.sleep(0.05)
  finally:
    signal.signal(signal.SIGHUP, before)


def test_shown_command_leaves_no_absolute_path(tmp_path, monkeypatch):
  """Results files print their command through `shown_command`: no directory of this machine appears."""
  from tcred.runtime import shown_command, shown_path

  home = tmp_path / "home"
  monkeypatch.setenv("HOME", str(home))
  repo = tmp_path / "repo"
  assert shown_path(str(repo / "runs" / "x"), cwd=repo) == "runs/x"
  assert shown_path(str(repo), cwd=repo) == "."
  assert shown_path(str(home / "cache"), cwd=repo) == "~/cache"
  assert shown_path("/elsewhere/runs-c13/", cwd=repo) == ".../runs-c13"
  assert shown_path("runs/x", cwd=repo) == "runs/x" and shown_path("--seeds", cwd=repo) == "--seeds"
  line = shown_command(["tcred", "table", "suite-quick", "--out", "/elsewhere/runs", f"--results={repo}/r",
                        "a b"], cwd=repo)
  assert line == "tcred table suite-quick --out .../runs --results=r 'a b'"
  assert str(tmp_path) not in line
