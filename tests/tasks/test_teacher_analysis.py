"""The tasks' teacher analyses of single steps (the generative judge's SFT start) and the step-judge task."""

import numpy as np
import pytest

from tcred.tasks import step_judge
from tcred.tasks.registry import make_task


@pytest.fixture(scope="module")
def countdown():
  task = make_task("countdown")
  return task, task.make_problem([3, 5, 7], 22)


@pytest.mark.parametrize("prefix, step, text, good", [
    ("", "3*5=15", "3*5=15;left 7 15;22 reachable", True),  # 15 + 7 = 22 is still possible
    ("", "3*5=16", "3*5=15 not 16", False),  # wrong arithmetic
    ("", "3*5=1", "3*5=15 not 1", False),  # a number cut short is wrong, not a prefix
    ("", "3*9=27", "9 not available", False),
    ("", "3-5=2", "3-5 not positive", False),
    ("", "7/5=1", "7/5 not exact", False),
    ("", "3+5=8", "3+5=8;left 7 8;22 unreachable", False),  # from {7, 8}: 15, 1, 56 — never 22
    ("3*5=15", ",15+7=22", "15+7=22;left 22;22 hit", True),
    ("3*5=15,15+7=22", "#22", "last 22;target 22;answer 22;right", True),
    ("3*5=15,15+7=22", "#21", "last 22;target 22;answer 21;wrong", False),
    ("3*5=16", ",7+3=10", "earlier step wrong", False),
    ("", "3 times 5", "bad format", False),
])
def test_countdown_teacher(countdown, prefix, step, text, good):
  task, problem = countdown
  assert task.teacher_analysis(problem, prefix, step) == (text, good)


@pytest.mark.parametrize("prefix, step, text, good", [
    ("", "a-b", "a-b edge;d reachable", True),
    ("a-b", "-e", "b-e edge;d unreachable", False),  # e is a dead end (its only edge is back to b)
    ("a-b", "-d", "b-d no edge", False),
    ("a-b-c", "-d", "c-d edge;d reached", True),
    ("a-b-c-d", "#d", "end d;target d;answer d;right", True),
    ("a-b-c", "#c", "end c;target d;answer c;wrong", False),
    ("", "b-c", "starts b not a", False),
    ("a-b-c", "-b", "c-b edge;b visited", False),
    ("a-b-c-d", "-e", "d reached already", False),
])
def test_graph_path_teacher(prefix, step, text, good):
  task = make_task("graph-path")
  problem = task.make_problem(["ab", "bc", "cd", "be"], "a", "d")
  assert task.teacher_analysis(problem, prefix, step) == (text, good)


@pytest.mark.parametrize("prefix, step, text, good", [
    ("", "8+4=12", "col1 8+4=12;ok", True),
    ("8+4=12", ",3+9=12", "col2 3+9+1=13;wrong", False),  # the carry of 12 is missing
    ("8+4=12", ",3+9+1=13", "col2 3+9+1=13;ok", True),
    ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7", "#7332", "answer 7332;right", True),  # 4738 + 2594 = 7332
    ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7", "#7331", "answer 7332;wrong", False),
    ("8+4=13", ",3+9+1=14", "earlier step wrong", False),
])
def test_long_addition_teacher(prefix, step, text, good):
  task = make_task("long-addition")
  problem = task.make_problem(4738, 2594)
  assert task.teacher_analysis(problem, prefix, step) == (text, good)


@pytest.mark.parametrize("name, overrides", [("countdown", dict(demo_correct_prob=0.5)),
                                             ("graph-path", dict(num_nodes=6, max_hops=3, extra_edges=1)),
                                             ("long-addition", {})])
def test_teacher_verdict_is_the_oracle_of_the_complete_step(name, overrides):
  """On noisy demonstrations the teacher's verdict equals `prefix_value` after the step, except where the oracle
  reads a number cut at the step end as a prefix of a right one (the teacher judges the step as complete)."""
  task = make_task(name, **overrides)
  rng = np.random.default_rng(0)
  seen = {True: 0, False: 0}
  for _ in range(60):
    problem = task.sample(rng)
    response = task.demonstration(problem, rng)
    for start, end in step_judge.step_spans(task, response):
      verdict = task.teacher_analysis(problem, response[:start], response[start:end]).good
      seen[verdict] += 1
      closed = task.prefix_value(problem, response[:end + 1]) if end < len(response) else \
          task.reward(problem, response)
      if verdict != (task.prefix_value(problem, response[:end]) > 0):
        assert not verdict and closed == 0.0, (problem.prompt, response, start, end)
  assert seen[True] > 10 and seen[False] > 10


def test_tasks_without_a_teacher_say_so():
  task = make_task("jsonl")
  with pytest.raises(NotImplementedError, match="no teacher analysis"):
    task.teacher_analysis(task.problems()[0], "", "x")


def _examples(n_good, n_bad):
  task = make_task("countdown")
  problem = task.make_problem([3, 5, 7], 22)
  good = step_judge.step_examples(task, problem, "3*5=15,15+7=22#22", [True, True, True])
  bad = step_judge.step_examples(task, problem, "3*5=16", [False])
  return [good[i % 3] for i in range(n_good)] + [bad[0]] * n_bad


def test_step_judge_task_prompts_demonstrations_and_reward():
  examples = _examples(3, 1)
  assert examples[1].prompt == "3 5 7>22:3*5=15[,15+7=22]"  # the problem, the steps before, the step in brackets
  assert examples[1].analysis == "15+7=22;left 22;22 hit"
  assert examples[3].prompt == "3 5 7>22:[3*5=16]"
  task = step_judge.StepJudge(examples)
  good, bad = task.problem(1), task.problem(3)
  assert good.solution == "15+7=22;left 22;22 hit@+" and bad.solution == "3*5=15 not 16@-"
  assert task.demonstration(good, np.random.default_rng(0)) == good.solution
  assert task.reward(good, "anything@+") == 1.0 and task.reward(good, "anything@-") == 0.0
  assert task.reward(bad, "x@-") == 1.0 and task.reward(bad, "x@") == 0.0 and task.reward(bad, "x-") == 0.0
  assert task.reward(good, "a@-@+") == 1.0  # the verdict after the last cue counts
  assert task.prefix_value(bad, "3*5=15") == 1.0 and task.prefix_value(bad, "3*5@+") == 0.0
  assert task.step_ends(good.solution) == [7, 15, 22, 24]  # "15+7=22" ";left 22" ";22 hit" "@+"
  assert task.max_response_len == len("last 22;target 22;answer 22;right") + 3 + step_judge.RESPONSE_SLACK
  # Oracle verdicts: the teacher's conclusion, whatever the label says.
  flipped = step_judge.StepJudge([examples[0]._replace(label=False)], verdicts="teacher")
  assert flipped.problem(0).answer == "+"
  with pytest.raises(ValueError, match="allowed: label, teacher"):
    step_judge.StepJudge(examples, verdicts="mc")


def test_step_judge_task_balances_the_classes():
  task = step_judge.StepJudge(_examples(90, 10))  # 90% good steps
  rng = np.random.default_rng(0)
  answers = [task.sample(rng).answer for _ in range(4000)]
  frac = answers.count("+") / len(answers)
  assert abs(frac - 0.5) < 0.03  # each class drawn with probability 1/2 (std of the mean ≈ 0.008)
  assert task.class_counts == (90, 10)
  one_class = step_judge.StepJudge(_examples(5, 0))
  assert {one_class.sample(rng).answer for _ in range(20)} == {"+"}
