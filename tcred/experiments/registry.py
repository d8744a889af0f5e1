"""The experiment registry: every method the benchmark compares, by name.

An experiment is a fully resolved `ExperimentConfig`; a suite is a named list
of experiments with the seeds `tcred table` runs.
"""

from __future__ import annotations

import dataclasses
import pathlib

from tcred.training.config import ExperimentConfig

_EXPERIMENTS: dict[str, ExperimentConfig] = {}
_SUITES: dict[str, "Suite"] = {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Suite:
  """A named list of experiments with their seed count.

  `overrides` (`section.field=value`, as `tcred run --set`) apply to every
  experiment of the suite, e.g. a shorter RL budget; such a suite keeps its runs
  under `<out>/<runs_under or suite name>/` so they never mix with runs of the
  registered configs. Suites with equal overrides may share runs via `runs_under`.
  """

  name: str
  description: str
  experiments: tuple[str, ...]
  seeds: int = 3
  baseline: str | None = None  # per task: "<task>-grpo" when None
  overrides: tuple[str, ...] = ()
  runs_under: str | None = None

  def config(self, experiment: str) -> ExperimentConfig:
    """The experiment's config as this suite runs it."""
    return get_experiment(experiment).with_overrides(list(self.overrides))

  def runs_root(self, out) -> pathlib.Path:
    """Where this suite's runs live under the runs root `out`."""
    return pathlib.Path(out) / (self.runs_under or self.name) if self.overrides else pathlib.Path(out)


def register_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
  if cfg.name in _EXPERIMENTS or cfg.name in _SUITES:
    raise ValueError(f"experiment {cfg.name!r} is already registered")
  _EXPERIMENTS[cfg.name] = cfg
  return cfg


def register_suite(suite: Suite) -> Suite:
  if suite.name in _SUITES or suite.name in _EXPERIMENTS:
    raise ValueError(f"suite {suite.name!r} is already registered")
  unknown = [e for e in suite.experiments if e not in _EXPERIMENTS]
  if unknown:
    raise ValueError(f"suite {suite.name!r} names unknown experiments {unknown}")
  for name in suite.experiments:
    suite.config(name)  # raises ValueError on an override the experiment does not accept
  if suite.runs_under is not None:
    other = _SUITES.get(suite.runs_under)
    if other is None or other.overrides != suite.overrides:
      raise ValueError(f"suite {suite.name!r} shares the runs of {suite.runs_under!r}, which must be a registered "
                       f"suite with the same overrides {suite.overrides}")
  _SUITES[suite.name] = suite
  return suite


def experiment_names() -> list[str]:
  return sorted(_EXPERIMENTS)


def suite_names() -> list[str]:
  return sorted(_SUITES)


def get_experiment(name: str) -> ExperimentConfig:
  if name not in _EXPERIMENTS:
    raise ValueError(f"unknown experiment {name!r}; allowed: {experiment_names()}")
  return _EXPERIMENTS[name]


def get_suite(name: str) -> Suite:
  if name not in _SUITES:
    raise ValueError(f"unknown suite {name!r}; allowed: {suite_names()}")
  return _SUITES[name]
