"""The oracle judge: the task's exact prefix value, the ceiling of every judge (DESIGN §4.6)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from tcred.judges.base import Judge, register_judge
from tcred.tasks.base import Problem, Task


@register_judge
@dataclasses.dataclass(frozen=True, kw_only=True)
class OracleJudge(Judge):
  """s_k = 1 if a correct response can still be reached after step k (`Task.prefix_value`), else 0.

  It knows reachability exactly but not the policy's skill: a reachable prefix
  the policy rarely completes still scores 1. Its credit is the ceiling any
  learned judge is measured against.
  """

  name = "oracle"
  description = "the task's exact prefix value: can a correct answer still be reached after the step?"
  needs_oracle = True

  def score(self, task: Task, problem: Problem, response: str, ends: Sequence[int]) -> np.ndarray:
    self.check_task(task)
    return np.array([task.prefix_value(problem, response[:end]) for end in ends], np.float64)

  def prior(self, task: Task, problem: Problem) -> float:
    self.check_task(task)
    return float(task.prefix_value(problem, ""))
