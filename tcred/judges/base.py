"""Step judges: (prompt, steps of a rollout) -> one score per step in [0, 1] (DESIGN §4.6).

A judge sees a problem and a response cut at the task's step boundaries
(`Task.step_ends`, exclusive character offsets) and returns s_1 … s_K, its
estimate after each step of the probability that the response can still end
correct, plus s_0 for the prompt alone (`prior`). Judges are registered by name
like credit methods and experiments; `make_judge` validates the name and the
settings.

Judge credit reads only score changes s_k − s_{k−1} (`tcred.judges.credit`), so
a judge needs to be calibrated across steps of one rollout, not across prompts.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np

from tcred.tasks.base import Problem, Task


@dataclasses.dataclass(frozen=True, kw_only=True)
class Judge(abc.ABC):
  """Base class; subclasses are frozen dataclasses whose fields are the judge's settings."""

  name: ClassVar[str]
  description: ClassVar[str]
  needs_oracle: ClassVar[bool] = False
  """Whether the judge reads the task's exact prefix values (refused on tasks without an oracle)."""

  @abc.abstractmethod
  def score(self, task: Task, problem: Problem, response: str, ends: Sequence[int]) -> np.ndarray:
    """[K] scores in [0, 1] after each step; `ends` are the steps' exclusive character offsets."""

  @abc.abstractmethod
  def prior(self, task: Task, problem: Problem) -> float:
    """s_0: the score of the prompt alone, before any step."""

  def check_task(self, task: Task) -> None:
    """Raises ValueError when the judge cannot serve `task`."""
    if self.needs_oracle and not task.has_oracle:
      raise ValueError(f"judge {self.name!r} needs a task with an exact oracle (prefix values); "
                       f"task {task.name!r} has none")

  def scores_with_prior(self, task: Task, problem: Problem, response: str) -> np.ndarray:
    """[K + 1]: s_0, then the score after each of the response's steps."""
    ends = task.step_ends(response)
    s = np.asarray(self.score(task, problem, response, ends), np.float64)
    if s.shape != (len(ends),) or not np.all((s >= 0) & (s <= 1)):
      raise ValueError(f"judge {self.name!r} must give {len(ends)} scores in [0, 1], got {s.tolist()}")
    return np.concatenate([[self.prior(task, problem)], s])


_REGISTRY: dict[str, type[Judge]] = {}


def register_judge(cls: type[Judge]) -> type[Judge]:
  """Class decorator adding a judge to the registry under `cls.name`."""
  if cls.name in _REGISTRY:
    raise ValueError(f"judge {cls.name!r} is already registered")
  _REGISTRY[cls.name] = cls
  return cls


def judge_names() -> list[str]:
  return sorted(_REGISTRY)


def judge_class(name: str) -> type[Judge]:
  if name not in _REGISTRY:
    raise ValueError(f"unknown judge {name!r}; allowed: {judge_names()}")
  return _REGISTRY[name]


def make_judge(name: str, **settings: Any) -> Judge:
  """Builds a registered judge, validating the settings against its fields."""
  cls = judge_class(name)
  allowed = {f.name for f in dataclasses.fields(cls)}
  unknown = set(settings) - allowed
  if unknown:
    raise ValueError(f"judge {name!r} has no setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
  return cls(**settings)
