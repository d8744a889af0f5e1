"""The experiment registry: every method the benchmark compares, by name.

An experiment is a fully resolved `ExperimentConfig`; a suite is a named list
of experiments with the seeds `tcred table` runs. Both are defined by plain
Python files in experiments folders (`tcred.experiments.folders`), loaded the
first time the registry is read: one file per method family, then the suites
files. An experiment's family is the name of the file that registered it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import pathlib
import sys

from tcred.experiments import folders as _folders
from tcred.tasks.registry import level_hint
from tcred.training.config import ExperimentConfig

_EXPERIMENTS: dict[str, ExperimentConfig] = {}
_SUITES: dict[str, "Suite"] = {}
_FAMILIES: dict[str, str] = {}  # experiment name -> family (the stem of the file that registered it)
_FAMILY_FILES: dict[str, pathlib.Path] = {}
_LOAD = {"state": "not loaded", "family": None}  # "not loaded" -> "loading" -> "loaded"


def load() -> None:
  """Runs every experiments file once (family files, then suites files), in the order of
  `experiment_files()`. Called by every function of this module that reads or adds to the registry."""
  if _LOAD["state"] != "not loaded":
    return
  _LOAD["state"] = "loading"
  try:
    for path in _folders.experiment_files():
      family = path.stem
      if family in _FAMILY_FILES and path.name != _folders.SUITES_FILE:
        raise ValueError(f"experiment family {family!r} is defined twice: {_FAMILY_FILES[family]} and {path}")
      _FAMILY_FILES.setdefault(family, path)
      with _family(family):
        _run_file(path, family)
  except BaseException:  # leave nothing half-loaded: the next read raises the same error again
    _unload()
    raise
  _LOAD["state"] = "loaded"


def _unload() -> None:
  for registry in (_EXPERIMENTS, _SUITES, _FAMILIES, _FAMILY_FILES):
    registry.clear()
  _LOAD["state"] = "not loaded"


def add_folders(folders) -> None:
  """Adds experiments folders of the user (`tcred --experiments DIR`, see `tcred.experiments.folders`);
  a registry already loaded is loaded again with them."""
  if _folders.add_user_folders(folders) and _LOAD["state"] == "loaded":
    _unload()
    load()


@contextlib.contextmanager
def _family(name: str):
  previous, _LOAD["family"] = _LOAD["family"], name
  try:
    yield
  finally:
    _LOAD["family"] = previous


def family_module_name(family: str) -> str:
  """The `sys.modules` name under which the file of `family` ran."""
  return f"tcred_experiments.{family}"


def _run_file(path: pathlib.Path, family: str) -> None:
  module_name = family_module_name(family if path.name != _folders.SUITES_FILE else f"suites_of_{path.parent.name}")
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module  # dataclasses defined in the file look their module up
  spec.loader.exec_module(module)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Suite:
  """A named list of experiments with their seed count and design.

  `overrides` (`section.field=value`, as `tcred run --set`) apply to every
  experiment of the suite, e.g. a shorter RL budget; such a suite keeps its runs
  under `<out>/<runs_under or suite name>/` so they never mix with runs of the
  registered configs. Suites with equal overrides and bases may share runs via `runs_under`.

  Paired design over `bases` SFT base policies (a random factor): seed s of every experiment
  starts from base `s mod bases` — its `sft.seed` is the experiment's own plus `s mod bases`
  (`config(name, seed)`) — so every method of one seed starts from the same base policy and draws
  the same prompt stream (the RL prompts are a function of the task, the seed and the held-out
  set). With more than one base the runs live under `<out>/<runs_under or suite name>/` too.
  `baseline` is the method of each task's reference experiment (GRPO); `oracle`, if set, the
  method of each task's positive control, the "perfect credit" end of the credit score; `negative_controls`, the
  methods of the negative controls, which the resolution's pooled variance leaves out (`tables.paired_section`).
  `scaling`, if set, lists the suite's tasks as levels of one difficulty `knob` (`(task, value)`, at least
  two): its table then adds the scaling picture (`tables.scaling_section`, `tables.scaling_figure`).
  """

  name: str
  description: str
  experiments: tuple[str, ...]
  seeds: int = 3
  bases: int = 3  # SFT bases; a table with fewer seeds uses min(bases, seeds)
  baseline: str = "grpo"  # the method of each task's baseline experiment
  oracle: str | None = None  # the method of each task's positive control (credit score 1)
  negative_controls: tuple[str, ...] = ()  # methods left out of the resolution's pooled variance
  paired: bool = True  # report the paired statistics against the baseline
  overrides: tuple[str, ...] = ()
  runs_under: str | None = None
  scaling: tuple[tuple[str, float], ...] = ()  # (task, knob value) in knob order: the scaling picture's levels
  knob: str = ""  # the scaling picture's x axis, e.g. "decisive keys k"

  def __post_init__(self):
    for field in ("seeds", "bases"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"suite {self.name!r}: {field} must be an integer >= 1, got {value!r}")
    for method in self.negative_controls:
      if method in (self.baseline, self.oracle):
        raise ValueError(f"suite {self.name!r}: negative control {method!r} is also its baseline or oracle method")

  def config(self, experiment: str, seed: int | None = None) -> ExperimentConfig:
    """The experiment's config as this suite runs it; with `seed`, the SFT base of that seed
    (`sft.seed` + seed mod bases)."""
    cfg = get_experiment(experiment).with_overrides(list(self.overrides))
    if seed is None or self.bases == 1:
      return cfg
    return dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, seed=cfg.sft.seed + seed % self.bases))

  def run_overrides(self, experiment: str, seed: int) -> tuple[str, ...]:
    """`--set` items that make `tcred run EXPERIMENT --seed SEED` run it as this suite does (`config`)."""
    if self.bases == 1:
      return self.overrides
    return self.overrides + (f"sft.seed={self.config(experiment, seed).sft.seed}",)

  def runs_root(self, out) -> pathlib.Path:
    """Where this suite's runs live under the runs root `out`."""
    own = self.overrides or min(self.bases, self.seeds) > 1
    return pathlib.Path(out) / (self.runs_under or self.name) if own else pathlib.Path(out)


def register_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
  """Registers `cfg` under `cfg.name`, in the family of the experiments file being loaded ("user"
  outside one)."""
  load()
  if cfg.name in _EXPERIMENTS or cfg.name in _SUITES:
    where = f" (family {_FAMILIES[cfg.name]!r})" if cfg.name in _FAMILIES else ""
    raise ValueError(f"experiment {cfg.name!r} is already registered{where}")
  _EXPERIMENTS[cfg.name] = cfg
  _FAMILIES[cfg.name] = _LOAD["family"] or "user"
  return cfg


def register_suite(suite: Suite) -> Suite:
  load()
  if suite.name in _SUITES or suite.name in _EXPERIMENTS:
    raise ValueError(f"suite {suite.name!r} is already registered")
  unknown = [e for e in suite.experiments if e not in _EXPERIMENTS]
  if unknown:
    raise ValueError(f"suite {suite.name!r} names unknown experiments {unknown}")
  for name in suite.experiments:
    suite.config(name)  # raises ValueError on an override the experiment does not accept
  if suite.runs_under is not None:
    other = _SUITES.get(suite.runs_under)
    if other is None or other.overrides != suite.overrides or other.bases != suite.bases:
      raise ValueError(f"suite {suite.name!r} shares the runs of {suite.runs_under!r}, which must be a registered "
                       f"suite with the same overrides {suite.overrides} and bases ({suite.bases})")
  if suite.scaling:
    tasks = {get_experiment(e).task for e in suite.experiments}
    levels = [task for task, _ in suite.scaling]
    if len(levels) < 2 or not suite.knob or len(set(levels)) != len(levels) or not set(levels) <= tasks:
      raise ValueError(f"suite {suite.name!r}: scaling must list at least two distinct tasks of its experiments "
                       f"{sorted(tasks)} with their knob values, and knob must name the knob; got {suite.scaling} "
                       f"and knob {suite.knob!r}")
  methods = sorted({get_experiment(e).method for e in suite.experiments})
  if suite.oracle is not None and suite.oracle not in methods:
    raise ValueError(f"suite {suite.name!r} names the oracle method {suite.oracle!r}, which none of its experiments "
                     f"has; its methods: {methods}")
  _SUITES[suite.name] = suite
  return suite


def experiment_names() -> list[str]:
  load()
  return sorted(_EXPERIMENTS)


def suite_names() -> list[str]:
  load()
  return sorted(_SUITES)


def families() -> dict[str, list[str]]:
  """`{family: [experiment, ...]}`, families in loading order, names sorted."""
  load()
  out: dict[str, list[str]] = {}
  for name, family in _FAMILIES.items():
    out.setdefault(family, []).append(name)
  return {family: sorted(names) for family, names in out.items()}


def family_file(family: str) -> pathlib.Path | None:
  """The file that defines `family` (None for experiments registered outside an experiments file)."""
  load()
  return _FAMILY_FILES.get(family)


def experiment_for(task: str, method: str) -> str:
  """The name of the registered experiment of `task` with method `method`."""
  load()
  found = [name for name, cfg in _EXPERIMENTS.items() if cfg.task == task and cfg.method == method]
  if len(found) != 1:
    allowed = sorted({cfg.method for cfg in _EXPERIMENTS.values() if cfg.task == task})
    what = "no experiment" if not found else f"{len(found)} experiments {sorted(found)}"
    raise ValueError(f"{what} for task {task!r} with method {method!r}; methods of {task!r}: {allowed}")
  return found[0]


def get_experiment(name: str) -> ExperimentConfig:
  load()
  if name not in _EXPERIMENTS:
    raise ValueError(f"unknown experiment {name!r}; {level_hint(name)}allowed: {experiment_names()}")
  return _EXPERIMENTS[name]


def get_suite(name: str) -> Suite:
  load()
  if name not in _SUITES:
    raise ValueError(f"unknown suite {name!r}; allowed: {suite_names()}")
  return _SUITES[name]
