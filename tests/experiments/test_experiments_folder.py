"""The experiments folders: packaged family files, a user's folder, the install without the repository."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from tcred import cli, experiments
from tcred.experiments import folders, registry
from tcred.experiments.defaults import REAL_MODEL_TASKS, TASKS

REPO = pathlib.Path(__file__).resolve().parents[2]
FAMILIES = ("entropy", "information", "outcome", "trees", "variance")


@pytest.fixture
def fresh_registry():
  """A registry loaded anew inside the test and again after it, `$TCRED_EXPERIMENTS` as before."""
  saved = os.environ.pop(folders.ENV, None)
  registry._unload()
  yield
  os.environ.pop(folders.ENV, None)
  if saved is not None:
    os.environ[folders.ENV] = saved
  registry._unload()


def test_one_file_per_family_and_explicit_methods():
  fams = experiments.families()
  assert set(FAMILIES) <= set(fams)
  for family in FAMILIES:
    assert experiments.family_file(family) == folders.packaged_folder() / f"{family}.py"
  assert sum(len(v) for v in fams.values()) == len(experiments.experiment_names())
  for name in experiments.experiment_names():
    cfg = experiments.get_experiment(name)
    assert experiments.experiment_for(cfg.task, cfg.method) == name
  assert experiments.get_experiment("countdown-dr-grpo").method == "dr-grpo"  # a name the suffix rule misreads


def test_tree_experiments_have_a_measured_budget_for_every_task():
  # Every tree experiment runs the prompts per step measured for its task and fork rule (equal generated
  # tokens with GRPO): none falls back to the chains' 16 (long-addition did before issue 12).
  trees = sys.modules[registry.family_module_name("trees")]
  tree_names = experiments.families()["trees"]
  assert len(tree_names) == 2 * len(TASKS + REAL_MODEL_TASKS)
  for name in tree_names:
    cfg = experiments.get_experiment(name)
    assert cfg.rl.prompts_per_step == trees.PROMPTS_PER_STEP[(cfg.task, cfg.tree.fork_at)]
    if cfg.task in TASKS:  # measured; the real-model tasks keep their chains' 8 prompts (no fixed policy)
      assert cfg.rl.prompts_per_step != 16


def test_a_task_without_a_tree_budget_is_an_error(monkeypatch):
  trees = sys.modules[registry.family_module_name("trees")]
  monkeypatch.delitem(trees.PROMPTS_PER_STEP, ("countdown", "step"))
  base = experiments.get_experiment("countdown-grpo")
  with pytest.raises(ValueError, match="no measured tree prompt budget for task 'countdown'"):
    trees._tree("tree-grpo", "step")(base)


USER_FAMILY = '''
import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import register_method

register_method("my-top30", "my method: top-30% entropy tokens",
                lambda c: dataclasses.replace(c, credit=make_credit("entropy-mask", rho=0.3)), tasks=("countdown",))
'''


def test_a_user_folder_adds_a_family_run_by_name(tmp_path, capsys, fresh_registry):
  (tmp_path / "my_family.py").write_text(USER_FAMILY)
  (tmp_path / "suites.py").write_text(textwrap.dedent('''
      from tcred.experiments.registry import Suite, experiment_for, register_suite
      register_suite(Suite(name="my-suite", description="mine vs GRPO", seeds=1,
                           experiments=(experiment_for("countdown", "grpo"), experiment_for("countdown", "my-top30"))))
      '''))
  assert cli.main(["--experiments", str(tmp_path), "list"]) == 0
  out = capsys.readouterr().out
  assert f"my_family ({tmp_path / 'my_family.py'}):" in out and "countdown-my-top30" in out and "my-suite" in out
  assert os.environ[folders.ENV] == str(tmp_path)  # what `tcred table --jobs` children inherit
  assert cli.main(["show", "countdown-my-top30"]) == 0
  cfg = experiments.get_experiment("countdown-my-top30")
  assert cfg.method == "my-top30" and cfg.credit.rho == 0.3
  assert dataclasses.replace(cfg, name="countdown-grpo", description="", method="grpo",
                             credit=experiments.get_experiment("countdown-grpo").credit) == \
      dataclasses.replace(experiments.get_experiment("countdown-grpo"), description="")
  assert "countdown-my-top30" in experiments.get_suite("suite-full").experiments  # suites load after families


def test_a_user_family_may_not_reuse_a_name(tmp_path, monkeypatch, capsys, fresh_registry):
  (tmp_path / "outcome.py").write_text("")
  monkeypatch.setenv(folders.ENV, str(tmp_path))
  with pytest.raises(ValueError, match="experiment family 'outcome' is defined twice"):
    experiments.experiment_names()
  (tmp_path / "outcome.py").unlink()
  (tmp_path / "mine.py").write_text(USER_FAMILY.replace("my-top30", "grpo"))
  with pytest.raises(ValueError, match="experiment 'countdown-grpo' is already registered \\(family 'outcome'\\)"):
    experiments.experiment_names()
  monkeypatch.setenv(folders.ENV, str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="not a directory"):
    experiments.experiment_names()
  monkeypatch.delenv(folders.ENV)
  assert cli.main(["--experiments", str(tmp_path / "absent"), "list"]) == 2
  assert f"tcred: error: --experiments: experiments folder {tmp_path / 'absent'} is not a directory" in \
      capsys.readouterr().err


KEYLESS_TASK = '''
import dataclasses
from tcred.tasks.base import Task
from tcred.tasks.registry import register_task

@dataclasses.dataclass(frozen=True, kw_only=True)
class KeylessConfig:
  pass

class Keyless(Task):  # every method of a task but problem_key
  name = "keyless"
  answer_cue = "#"
  max_prompt_len = max_response_len = 4
  def sample(self, rng): ...
  def reward(self, problem, response): ...
  def step_ends(self, response): ...
  def prefix_value(self, problem, prefix): ...
  def demonstration(self, problem, rng): ...

register_task("keyless", KeylessConfig, Keyless)
'''


def test_a_user_task_without_a_problem_key_is_refused(tmp_path, capsys, fresh_registry):
  """Issue 23: a task without a canonical problem key is refused when its file registers it, saying what to add."""
  (tmp_path / "keyless.py").write_text(KEYLESS_TASK)
  assert cli.main(["--experiments", str(tmp_path), "list"]) == 2
  err = capsys.readouterr().err
  assert "tcred: error: --experiments: task 'keyless' (Keyless) defines no problem_key: add a method " \
      "`def problem_key(self, problem: Problem) -> str`" in err and "Traceback" not in err


# ~6 s (build, install, a fresh interpreter importing jax); 39 s at load average 20 on 2 cores.
def test_installed_without_the_repository_lists_every_experiment(tmp_path):
  # A non-editable build (the setuptools backend pip calls), installed with --target, run from another
  # directory with the repository off the path: the packaged copy of experiments/ is found.
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "setup.py", "README.md"):
    shutil.copy2(REPO / name, src / name)
  ignore = shutil.ignore_patterns("__pycache__", "packaged")
  for name in ("tcred", "experiments"):
    shutil.copytree(REPO / name, src / name, ignore=ignore)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", folders.ENV)}
  subprocess.run([sys.executable, "-c", f"import setuptools.build_meta as b; b.build_wheel({str(tmp_path / 'dist')!r})"],
                 cwd=src, env=env, check=True, capture_output=True)
  wheel = next((tmp_path / "dist").glob("tcred-*.whl"))
  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                  str(wheel)], env=env, check=True, capture_output=True)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env["PYTHONPATH"] = str(site)
  out = subprocess.run([sys.executable, "-c", "import tcred, runpy, sys; print(tcred.__file__); sys.argv = ['tcred', "
                        "'list']; runpy.run_module('tcred.cli', run_name='__main__')"],
                       cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout
  assert out.splitlines()[0] == str(site / "tcred" / "__init__.py")
  listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ")}
  assert listed == set(experiments.experiment_names())
  for family in FAMILIES:
    assert f"  {family} ({site / 'tcred' / 'experiments' / 'packaged' / family}.py):" in out
  assert not (REPO / "tcred" / "experiments" / "packaged").exists()
