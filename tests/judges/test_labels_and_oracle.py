import numpy as np
import pytest

from tcred.judges import LabelRule, first_error, judge_names, make_judge, mc_labels
from tcred.tasks.registry import make_task


def test_abs_q_labels_a_step_good_while_a_correct_answer_stays_reachable():
  q = [0.5, 0.75, 0.5, 0.0, 0.25]  # Q_0 … Q_4
  np.testing.assert_array_equal(mc_labels(q, LabelRule(rule="abs-q")), [True, True, False, True])


def test_rel_ratio_keeps_a_fraction_gamma_of_the_previous_value():
  q = [0.5, 0.75, 0.5, 0.0, 0.25]
  # 0.75 > 0.75·0.5 = 0.375 ✓; 0.5 > 0.75·0.75 = 0.5625 ✗; 0 > 0.375 ✗; 0.25 > 0.75·0 = 0 ✓ (out of a dead end)
  np.testing.assert_array_equal(mc_labels(q, LabelRule(rule="rel-ratio", gamma=0.75)), [True, False, False, True])


def test_rel_effective_adds_the_progress_of_a_best_of_n_prover():
  q = [0.5, 0.75, 0.5, 0.0, 0.25]
  # n = 2: Q⁽²⁾ = 1 − (1 − Q)² = [0.75, 0.9375, 0.75, 0, 0.4375]; α = 1:
  # 0.75 + 0.1875 > 0 ✓; 0.5 − 0.1875 = 0.3125 ✓; 0 − 0.75 < 0 ✗; 0.25 + 0.4375 ✓
  np.testing.assert_array_equal(mc_labels(q, LabelRule(rule="rel-effective", alpha=1.0, n=2)),
                                [True, True, False, True])
  # A reachable step can still be bad when the prover loses enough: Q = [1, 0.25], n = 8, α = 3:
  # Q⁽⁸⁾ = [1, 1 − 0.75⁸ = 0.8999]; 0.25 + 3·(0.8999 − 1) = −0.0503 < 0.
  assert not mc_labels([1.0, 0.25], LabelRule(rule="rel-effective", alpha=3.0, n=8))[0]
  assert mc_labels([1.0, 0.25], LabelRule(rule="rel-effective", alpha=2.0, n=8))[0]  # 0.25 − 0.2002 > 0


def test_first_error_follows_processbench():
  assert first_error([True, False, True, False]) == 1
  assert first_error([True, True]) == -1


@pytest.mark.parametrize("kw, message", [
    (dict(rule="abs"), "unknown label rule 'abs'; allowed: ['abs-q', 'rel-ratio', 'rel-effective']"),
    (dict(rule="rel-ratio", gamma=0.0), "gamma must be a number in (0, 1]"),
    (dict(alpha=-1.0), "alpha must be a positive number"),
    (dict(n=0), "n must be an integer >= 1"),
])
def test_bad_label_settings_name_the_field_and_what_is_allowed(kw, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                     .replace("]", r"\]")):
    LabelRule(**kw)


def test_mc_labels_refuse_values_outside_0_1():
  with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
    mc_labels([0.5, 1.5], LabelRule())


def test_oracle_judge_scores_hand_made_countdown_rollouts():
  task = make_task("countdown")
  problem = task.make_problem((2, 3, 5), 25)
  judge = make_judge("oracle")
  # (2+3)·5 = 25: every prefix can still reach 25.
  np.testing.assert_array_equal(judge.scores_with_prior(task, problem, "2+3=5,5*5=25#25"), [1, 1, 1, 1])
  # 2·3 = 6 leaves {5, 6}: 11, 1, 30 — 25 is out of reach from the first step on.
  np.testing.assert_array_equal(judge.scores_with_prior(task, problem, "2*3=6,6+5=11#11"), [1, 0, 0, 0])
  # A right reasoning with a wrong answer fails at the answer step only.
  np.testing.assert_array_equal(judge.scores_with_prior(task, problem, "2+3=5,5*5=25#26"), [1, 1, 1, 0])


def test_unknown_judge_and_unknown_setting_list_what_is_allowed():
  with pytest.raises(ValueError, match=r"unknown judge 'orcale'; allowed: \[.*'oracle'"):
    make_judge("orcale")
  with pytest.raises(ValueError, match=r"judge 'oracle' has no setting\(s\) \['k'\]"):
    make_judge("oracle", k=3)
  assert "oracle" in judge_names()


def test_the_oracle_refuses_a_task_without_one():
  task = make_task("countdown")
  no_oracle = type("NoOracle", (type(task),), {"has_oracle": False, "name": "no-oracle"})(task.config)
  with pytest.raises(ValueError, match="judge 'oracle' needs a task with an exact oracle"):
    make_judge("oracle").prior(no_oracle, task.make_problem((2, 3, 5), 25))
