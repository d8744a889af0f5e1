import os
import subprocess
import sys

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
