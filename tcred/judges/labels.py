"""Monte-Carlo step labels for training and scoring step judges (DESIGN §4.6).

A rollout's reasoning is cut into K steps (the task's step boundaries). With K'
continuations sampled after step k, Q_k is their mean reward: the value of the
prefix that ends at step k. Q_0 is the value of the prompt alone. Three rules
turn the Q sequence into one binary label per step (StepWiser, arXiv 2508.19229;
the progress view of step rewards: Setlur et al., arXiv 2410.08146; Monte-Carlo
step values: VinePPO, arXiv 2410.01679):

  abs-q          y_k = [Q_k > 0]                        the step leaves a correct answer reachable
  rel-ratio      y_k = [Q_k > γ · Q_{k−1}]              the step keeps at least a fraction γ of the value
                 (γ ≈ 0.7–0.8; with Q_{k−1} = 0 this reads Q_k > 0: a step out of a dead end is good)
  rel-effective  y_k = [Q_k + α (Q⁽ⁿ⁾_k − Q⁽ⁿ⁾_{k−1}) > 0],  Q⁽ⁿ⁾ = 1 − (1 − Q)ⁿ
                 the value plus α times the progress of a best-of-n prover

Shapes: K steps. Inputs are host-side NumPy arrays: labels are judge training
data, computed once per labelled rollout, never inside the train step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tcred.validation import require_finite

LABEL_RULES = ("abs-q", "rel-ratio", "rel-effective")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelRule:
  """How Monte-Carlo step values become binary step labels.

  Attributes:
    rule: one of `LABEL_RULES`.
    gamma: rel-ratio's kept fraction of the previous value, in (0, 1].
    alpha: rel-effective's weight of the prover's progress, > 0.
    n: rel-effective's best-of-n prover size, an integer >= 1.
  """

  rule: str = "abs-q"
  gamma: float = 0.75
  alpha: float = 1.0
  n: int = 8

  def __post_init__(self):
    require_finite(self, "judge")  # the rule's fields are judge settings (judge.alpha, judge.gamma)
    if self.rule not in LABEL_RULES:
      raise ValueError(f"unknown label rule {self.rule!r}; allowed: {list(LABEL_RULES)}")
    if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0 < self.gamma <= 1:
      raise ValueError(f"label gamma must be a number in (0, 1] (StepWiser: 0.7–0.8), got {self.gamma!r}")
    if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
      raise ValueError(f"label alpha must be a positive number, got {self.alpha!r}")
    if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
      raise ValueError(f"label n must be an integer >= 1, got {self.n!r}")


def mc_labels(q: np.ndarray, rule: LabelRule) -> np.ndarray:
  """Binary labels of K steps from their Monte-Carlo values.

  Args:
    q: [K + 1] values in [0, 1]: Q_0 (the prompt alone), then Q_1 … Q_K after each step.
    rule: the labelling rule.

  Returns:
    [K] bool, True for a good step.
  """
  q = np.asarray(q, np.float64)
  if q.ndim != 1 or q.shape[0] < 1:
    raise ValueError(f"q must be [K + 1] (Q_0 first), got shape {q.shape}")
  if not np.all(np.isfinite(q)) or np.any(q < 0) or np.any(q > 1):
    raise ValueError(f"Monte-Carlo values must lie in [0, 1], got {q.tolist()}")
  prev, cur = q[:-1], q[1:]
  if rule.rule == "abs-q":
    return cur > 0
  if rule.rule == "rel-ratio":
    return cur > rule.gamma * prev
  prover = 1.0 - (1.0 - q) ** rule.n  # [K + 1] Q⁽ⁿ⁾
  return cur + rule.alpha * (prover[1:] - prover[:-1]) > 0


def first_error(labels: np.ndarray) -> int:
  """Index of the first step labelled bad, or -1 when every step is good (ProcessBench's convention)."""
  labels = np.asarray(labels, bool)
  bad = np.flatnonzero(~labels)
  return int(bad[0]) if bad.size else -1
