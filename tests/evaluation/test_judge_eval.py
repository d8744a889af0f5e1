"""ProcessBench metrics of a judge's first wrong step against the oracle's (tcred.evaluation.judges)."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from tcred.evaluation.judges import EvalRollouts, evaluate_judge, first_wrong, processbench
from tcred.judges import Judge, JudgeContext, make_judge
from tcred.tasks.registry import make_task


def test_first_wrong_is_the_first_step_scored_below_one_half():
  # s_0 is not a step; padding (valid False) is ignored.
  scores = np.array([[[0.2, 0.9, 0.6, 0.4, 0.1], [1.0, 0.5, 0.5, 0.0, 0.0], [0.5, 0.7, 0.49, 0.0, 0.0]]])
  valid = np.array([[[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]], bool)
  # 0.4 < 0.5 at step 3 (index 2); 0.5 is not wrong: no error; 0.49 at step 2 (index 1).
  np.testing.assert_array_equal(first_wrong(scores, valid), [[2, -1, 1]])


def test_processbench_metrics_by_hand():
  truth = np.array([-1, -1, 0, 2, 1])
  predicted = np.array([-1, 1, 0, 1, 1])
  m = processbench(predicted, truth)
  # Erroneous rollouts 2, 3, 4: found exactly at 2 and 4 -> 2/3; error-free 0, 1: called so at 0 -> 1/2.
  assert m["acc_error"] == pytest.approx(2 / 3) and m["acc_correct"] == pytest.approx(1 / 2)
  assert m["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))  # = 4/7
  assert math.isnan(processbench(np.array([-1]), np.array([-1]))["acc_error"])


@dataclasses.dataclass(frozen=True, kw_only=True)
class _NeverWrong(Judge):
  name = "never-wrong"
  description = "scores every step 1"

  def score(self, task, problem, response, ends):
    return np.ones(len(ends))

  def prior(self, task, problem):
    return 1.0


def test_the_oracle_finds_every_first_error_and_a_judge_that_never_objects_scores_f1_zero():
  task = make_task("countdown")
  p = task.make_problem((2, 3, 5), 25)
  texts = [["2+3=5,5*5=25#25", "2*3=6,6+5=11#11"], ["2+3=5,5*5=25#26", "2+3=5,5*5=25#25"]]
  ctx = JudgeContext(graphdef=None, params=None, key=jax.random.key(0), temperature=1.0)
  oracle = make_judge("oracle")
  scored = oracle.score_groups(task, [p, p], texts, ctx)
  truth = first_wrong(scored.scores, scored.valid)
  np.testing.assert_array_equal(truth, [[-1, 0], [2, -1]])  # 2·3 kills step 1; the wrong answer is step 3
  data = EvalRollouts([p, p], texts, [[None] * 2] * 2, np.zeros((2, 2)), truth, 0)
  exact = evaluate_judge(oracle, task, ctx, data, bootstrap=20)
  assert (exact["f1"], exact["acc_error"], exact["acc_correct"]) == (1.0, 1.0, 1.0)
  assert exact["f1_ci"] == [1.0, 1.0] and (exact["erroneous"], exact["error_free"]) == (2, 2)
  blind = evaluate_judge(_NeverWrong(), task, ctx, data, bootstrap=0)
  assert (blind["f1"], blind["acc_error"], blind["acc_correct"]) == (0.0, 0.0, 1.0)
