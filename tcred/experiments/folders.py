"""Where the experiments files are: the packaged folder, then the user's folders.

- The packaged experiments: the repository's top-level `experiments/` folder. A non-editable install
  carries a copy of it inside the package (`tcred/experiments/packaged/`, written by the build step in
  setup.py); a checkout or an editable install reads the folder itself, next to `tcred/`.
- The user's folders: `$TCRED_EXPERIMENTS`, folders separated by `os.pathsep` (`tcred --experiments DIR`
  prepends DIR to it, so the processes `tcred table --jobs` starts see the same experiments).

In each folder every `*.py` file whose name does not start with `_` is a method family (its
experiments are grouped under the file's name by `tcred list`), except `suites.py`, which registers
suites. Family files load first (folder by folder, files by name), then the suites files.
"""

from __future__ import annotations

import os
import pathlib

ENV = "TCRED_EXPERIMENTS"
SUITES_FILE = "suites.py"
PACKAGED = pathlib.Path(__file__).resolve().parent / "packaged"
REPOSITORY = pathlib.Path(__file__).resolve().parents[2] / "experiments"


def packaged_folder() -> pathlib.Path:
  """The folder of the experiments that come with tcred."""
  for folder in (PACKAGED, REPOSITORY):
    if folder.is_dir():
      return folder
  raise FileNotFoundError(f"tcred's experiments folder is missing: neither {PACKAGED} (an installed package) "
                          f"nor {REPOSITORY} (a repository checkout) exists")


def user_folders() -> list[pathlib.Path]:
  """The folders of `$TCRED_EXPERIMENTS`, in order; each must exist."""
  folders = [pathlib.Path(p).expanduser().resolve() for p in os.environ.get(ENV, "").split(os.pathsep) if p]
  for folder in folders:
    if not folder.is_dir():
      raise FileNotFoundError(f"${ENV} names {folder}, which is not a directory")
  return folders


def add_user_folders(folders) -> bool:
  """Puts `folders` first in `$TCRED_EXPERIMENTS` (of this process and the processes it starts);
  True when one of them was not there yet."""
  known = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
  added = [str(pathlib.Path(f).expanduser().resolve()) for f in folders]
  for folder in added:
    if not pathlib.Path(folder).is_dir():
      raise FileNotFoundError(f"experiments folder {folder} is not a directory")
  added = [f for i, f in enumerate(added) if f not in known and f not in added[:i]]
  if added:
    os.environ[ENV] = os.pathsep.join(added + known)
  return bool(added)


def experiment_files() -> list[pathlib.Path]:
  """Family files of every folder (packaged first), then the suites files."""
  folders = [packaged_folder()]
  folders += [f for f in user_folders() if f not in folders]
  files = [sorted(p for p in folder.glob("*.py") if not p.name.startswith("_")) for folder in folders]
  families = [p for group in files for p in group if p.name != SUITES_FILE]
  return families + [p for group in files for p in group if p.name == SUITES_FILE]
