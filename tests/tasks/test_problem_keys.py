"""Canonical problem keys (issue 23, held out by problem): every task defines one, equal for the same problem
written differently (reordered numbers, reversed or reordered edges, swapped operands, a re-spaced question),
different for different problems; a task without one is refused at registration."""

import dataclasses
import json

import numpy as np
import pytest

from tcred.judges.generative import teacher_labelled, examples_from_rollouts
from tcred.tasks import base, registry
from tcred.tasks.jsonl import Jsonl, JsonlConfig
from tcred.tasks.step_judge import StepJudge
from tcred.training.data import training_problems

COUNTDOWN = registry.make_task("countdown")
GRAPH = registry.make_task("graph-path")
ADDITION = registry.make_task("long-addition")


@pytest.mark.parametrize("name", registry.task_names())
def test_every_registered_task_defines_its_problem_key(name):
  task_cls = registry.task_entry(name).task_cls
  assert task_cls.problem_key is not base.Task.problem_key
  assert "problem_key" not in getattr(task_cls, "__abstractmethods__", ())


@pytest.mark.parametrize("name", ["countdown", "graph-path", "long-addition", "jsonl"])
def test_keys_are_strings_that_follow_the_problem_not_the_draw(name):
  task = registry.make_task(name)
  rng = np.random.default_rng(0)
  problems = [task.sample(rng) for _ in range(200)]
  keys = [task.problem_key(p) for p in problems]
  assert all(isinstance(k, str) and k for k in keys)
  by_prompt = {}
  for p, k in zip(problems, keys):
    assert by_prompt.setdefault(p.prompt, k) == k  # one prompt, one key
  assert len(set(keys)) > 1


def test_countdown_key_ignores_the_order_of_the_numbers():
  a = COUNTDOWN.make_problem([3, 5, 7], 22)
  b = COUNTDOWN.make_problem([7, 3, 5], 22)
  assert a.prompt != b.prompt and COUNTDOWN.problem_key(a) == COUNTDOWN.problem_key(b) == "3 5 7>22"
  assert COUNTDOWN.problem_key(COUNTDOWN.make_problem([3, 5, 7], 26)) != COUNTDOWN.problem_key(a)  # another target
  assert COUNTDOWN.problem_key(COUNTDOWN.make_problem([3, 5, 5, 7], 22)) != COUNTDOWN.problem_key(a)  # a multiset
  assert COUNTDOWN.problem_key(COUNTDOWN.make_problem([23, 1], 24)) == "1 23>24"  # numbers stay separated


def test_graph_path_key_is_the_undirected_edge_set_and_the_directed_query():
  a = GRAPH.make_problem(["ab", "bc", "cd", "be"], "a", "d")
  b = GRAPH.make_problem(["eb", "dc", "ba", "cb"], "a", "d")  # reordered and reversed edges
  assert a.prompt != b.prompt and GRAPH.problem_key(a) == GRAPH.problem_key(b) == "ab bc be cd|a>d"
  reverse_query = GRAPH.make_problem(["ab", "bc", "cd", "be"], "d", "a")
  assert GRAPH.problem_key(reverse_query) != GRAPH.problem_key(a)  # a path from d is another answer
  other_graph = GRAPH.make_problem(["ab", "bc", "cd", "ce"], "a", "d")
  assert GRAPH.problem_key(other_graph) != GRAPH.problem_key(a)


def test_long_addition_key_ignores_the_order_of_the_operands():
  a, b = ADDITION.make_problem(4738, 2594), ADDITION.make_problem(2594, 4738)
  assert a.prompt != b.prompt and ADDITION.problem_key(a) == ADDITION.problem_key(b) == "2594+4738"
  assert ADDITION.problem_key(ADDITION.make_problem(4738, 2595)) != ADDITION.problem_key(a)
  split_elsewhere = ADDITION.make_problem(473, 82594)  # the same digits, "47+382594" vs "473+82594"
  assert ADDITION.problem_key(ADDITION.make_problem(47, 382594)) != ADDITION.problem_key(split_elsewhere)


def test_normalise_question():
  n = base.normalise_question
  assert n("  What is\n2+2 ?") == n("what is 2+2") == n('"WHAT  is 2+2."') == "what is 2+2"
  assert n("What is 2 + 2?") == "what is 2 + 2"  # spacing inside a line is content
  assert n("-5+3") != n("5+3") and n("(a) x") == "(a) x" and n("f'") == "f'"  # signs, brackets, primes stay
  assert n("ﬁve") == "five"  # NFKC


def test_jsonl_dedupes_and_keys_by_the_normalised_question(tmp_path):
  lines = [{"question": "What is 2+2?", "answer": "4", "solution": "2+2=4."},
           {"question": "what is  2+2", "answer": "4", "solution": "Two and two."},  # the same question
           {"question": "What is 3+3?", "answer": "6", "solution": "3+3=6."},
           {"question": "What is 4+4?", "answer": "8", "solution": "4+4=8."}]
  path = tmp_path / "q.jsonl"
  path.write_text("".join(json.dumps(x) + "\n" for x in lines))
  task = Jsonl(JsonlConfig(path=str(path)))
  problems = task.problems()
  assert problems[0].prompt != problems[1].prompt
  assert task.problem_key(problems[0]) == task.problem_key(problems[1]) == "what is 2+2"
  held = task.held_out_problems(2)
  assert len({task.problem_key(p) for p in held}) == 2
  with pytest.raises(ValueError, match="has 3 distinct questions, too few to hold out 3"):
    task.held_out_problems(3)  # 4 lines, 3 questions
  # A stream that holds out "What is 2+2?" never draws its re-spaced copy either.
  drawn = training_problems(task, 40, namespace=1, seed=0, step=0, exclude_keys=frozenset({"what is 2+2"}))
  assert {p.data.line for p in drawn} == {3, 4}
  assert {p.data.line for p in training_problems(task, 40, namespace=1, seed=0, step=0, exclude_keys=frozenset())} \
      == {1, 2, 3, 4}


def test_step_judge_key_is_the_base_problem_key_and_the_steps():
  a = COUNTDOWN.make_problem([3, 5, 7], 22)
  b = COUNTDOWN.make_problem([7, 5, 3], 22)
  responses = ["3*5=15,15+7=22#22", "3*5=15,15+7=22#22", "3+5=8,8*7=56#56"]
  data = teacher_labelled(COUNTDOWN, [a, b, a], responses)
  task = StepJudge(examples_from_rollouts(COUNTDOWN, data))
  problems = task.problems()
  assert len(problems) == 9  # three steps each
  keys = [task.problem_key(p) for p in problems]
  assert problems[0].prompt != problems[3].prompt
  assert keys[:3] == keys[3:6]  # the same steps judged on the reordered problem
  assert keys[0] != keys[6] and len(set(keys[:3])) == 3
  assert json.loads(keys[1]) == ["3 5 7>22", "3*5=15", ",15+7=22"]


def test_a_task_without_problem_key_is_refused_at_registration():
  @dataclasses.dataclass(frozen=True, kw_only=True)
  class KeylessConfig:
    pass

  class Keyless(base.Task):  # every other method of a task, as a new task might forget the key
    name = "keyless"
    max_prompt_len = max_response_len = 1
    sample = reward = step_ends = prefix_value = demonstration = lambda *a: None

  with pytest.raises(ValueError, match=r"defines no problem_key: add a method `def problem_key\(self, problem"):
    registry.register_task("keyless", KeylessConfig, Keyless)
  assert "keyless" not in registry.task_names()
