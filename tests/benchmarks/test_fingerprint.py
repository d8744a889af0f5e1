"""benchmarks/fingerprint.py names the code that ran by its commit, never by a path of this machine."""

import subprocess

from bench_support import load_benchmark

fingerprint = load_benchmark("fingerprint")


def _git(cwd, *words):
  subprocess.run(["git", *words], cwd=cwd, check=True, capture_output=True)


def test_a_checkout_is_named_by_its_commit_and_marked_when_changed(tmp_path):
  repo = tmp_path / "checkout"
  (repo / "pkg").mkdir(parents=True)
  _git(repo, "init", "-q")
  (repo / "pkg" / "a.py").write_text("x = 1\n")
  _git(repo, "add", ".")
  _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
  head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                        text=True, check=True).stdout.strip()
  assert fingerprint._checkout_commit(repo / "pkg") == head  # pylint: disable=protected-access
  (repo / "pkg" / "b.py").write_text("untracked files do not count\n")
  assert fingerprint._checkout_commit(repo / "pkg") == head  # pylint: disable=protected-access
  (repo / "pkg" / "a.py").write_text("x = 2\n")
  assert fingerprint._checkout_commit(repo / "pkg") == head + "+changes"  # pylint: disable=protected-access
  assert str(tmp_path) not in fingerprint._checkout_commit(repo / "pkg")  # pylint: disable=protected-access


def test_a_directory_outside_git_says_so(tmp_path):
  assert fingerprint._checkout_commit(tmp_path) == "not a git checkout"  # pylint: disable=protected-access
