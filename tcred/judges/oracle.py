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


def prefix_values(task: Task, problems: Sequence[Problem], tokens: np.ndarray, mask: np.ndarray,
                  rewards: np.ndarray) -> np.ndarray:
  """`[N, G, T + 1]` the exact value (`Task.prefix_value`) of each response's prefix of k tokens, k = 0..L
  (k = L: the reward `rewards [N, G]`); NaN beyond L. `tokens`, `mask`: `[N, G, T]` responses of `problems`."""
  n, g, t = tokens.shape
  out = np.full((n, g, t + 1), np.nan)
  lengths = mask.sum(-1)
  for i in range(n):
    memo: dict[str, float] = {}
    for j in range(g):
      length = int(lengths[i, j])
      for k in range(length):
        text = task.tokenizer.decode(tokens[i, j, :k])
        if text not in memo:
          memo[text] = float(task.prefix_value(problems[i], text))
        out[i, j, k] = memo[text]
      out[i, j, length] = rewards[i, j]
  return out


def fatal_tokens(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`[..., T]` bool: the fatal errors, tokens across which the oracle value goes 1 → 0, from the prefix
  values `values` `[..., T + 1]` (`prefix_values`) and the response mask `[..., T]`."""
  return mask & (np.nan_to_num(values[..., :-1]) == 1.0) & (np.nan_to_num(values[..., 1:], nan=1.0) == 0.0)
