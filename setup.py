"""Build step (the rest of the build is declared in pyproject.toml).

The packaged experiments live in the repository's top-level `experiments/` folder, outside the
`tcred` package; a non-editable build copies its files into `tcred/experiments/packaged/`, where
`tcred.experiments.folders` finds them when the repository is not there.
"""

import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

EXPERIMENTS = pathlib.Path(__file__).resolve().parent / "experiments"


class BuildPyWithExperiments(build_py):
  def run(self):
    super().run()
    if self.editable_mode:  # an editable install reads experiments/ in place
      return
    target = pathlib.Path(self.build_lib) / "tcred" / "experiments" / "packaged"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(EXPERIMENTS.glob("*.py")):
      shutil.copy2(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithExperiments})
