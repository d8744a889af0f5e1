"""Tests of the countdown task: verifier, oracle, generator and demonstrations."""

import dataclasses
import itertools
import re

import numpy as np
import pytest

from tcred.tasks import tokenizer as tok
from tcred.tasks.countdown import Countdown, CountdownConfig, CountdownData

TASK = Countdown()
PROBLEM = TASK.make_problem([3, 5, 7], 22)  # 22 = 3 * 5 + 7.


def _all_attempts(numbers, target):
  """Reference enumeration, independent of the task code: every well-formed
  attempt (steps, answer = last result) and every correct response."""
  attempts, correct = [], []

  def walk(available, steps):
    for i, j in itertools.permutations(range(len(available)), 2):
      a, b = available[i], available[j]
      for op, c in (("+", a + b), ("-", a - b), ("*", a * b), ("/", a // b if a % b == 0 else 0)):
        if c <= 0:
          continue
        rest = [x for k, x in enumerate(available) if k not in (i, j)] + [c]
        new_steps = steps + [f"{a}{op}{b}={c}"]
        reasoning = ",".join(new_steps)
        attempts.append(f"{reasoning}#{c}")
        if c == target:
          correct.append(f"{reasoning}#{c}")
        walk(rest, new_steps)

  walk(list(numbers), [])
  return sorted(set(attempts)), sorted(set(correct))


def _parse_steps(response):
  """[(a, op, b, c)] of the reasoning, the answer text; asserts the format."""
  reasoning, cue, answer = response.partition("#")
  assert cue == "#", response
  steps = [re.fullmatch(r"(\d+)([-+*/])(\d+)=(\d+)", s) for s in reasoning.split(",")]
  assert all(steps), response
  return [(int(m[1]), m[2], int(m[3]), int(m[4])) for m in steps], answer


def _assert_valid_steps(numbers, steps):
  available = list(numbers)
  for a, op, b, c in steps:
    available.remove(a)
    available.remove(b)
    assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op] and c > 0
    assert op != "/" or a % b == 0
    available.append(c)


def test_problem_format():
  assert PROBLEM.prompt == "3 5 7>22:"
  assert PROBLEM.answer == "22"
  assert PROBLEM.data == CountdownData((3, 5, 7), 22)
  assert TASK.reward(PROBLEM, PROBLEM.solution) == 1.0


@pytest.mark.parametrize(
    "response, reward",
    [
        ("3*5=15,15+7=22#22", 1.0),
        ("5*3=15,7+15=22#22", 1.0),
        ("7-3=4,5*4=20#20", 0.0),  # Valid steps, wrong result.
        ("3*5=16,16+6=22#22", 0.0),  # Wrong arithmetic.
        ("7/3=2,2*5=10#10", 0.0),  # Inexact division.
        ("3-5=2,2*7=14#14", 0.0),  # Negative subtraction written as positive.
        ("3*5=15,15+15=30#30", 0.0),  # Reuse of a result.
        ("5*5=25,25-3=22#22", 0.0),  # Reuse of a given number.
        ("3*5=15,15+7=22#21", 0.0),  # Wrong answer.
        ("3*5=15,15+7=22#022", 0.0),
        ("3*5=15,15+7=22", 0.0),  # No cue.
        ("3*5=15,15+7=22,#22", 0.0),  # Empty step.
        ("03*5=15,15+7=22#22", 0.0),  # Leading zero.
        ("3*5=15,15+7=22 #22", 0.0),
        ("#22", 0.0),  # No step.
        ("", 0.0),
    ],
)
def test_reward(response, reward):
  assert TASK.reward(PROBLEM, response) == reward


def test_reward_allows_unused_numbers():
  problem = TASK.make_problem([3, 5, 7], 15)
  assert TASK.reward(problem, "3*5=15#15") == 1.0
  assert TASK.reward(problem, "5*3=15#15") == 1.0


@pytest.mark.parametrize(
    "prefix, value",
    [
        ("", 1.0),
        ("3", 1.0),
        ("3*", 1.0),
        ("3+", 0.0),  # 3+5 and 3+7 are dead ends.
        ("3+5=", 0.0),
        ("3+5=8", 0.0),
        ("3+5=8,", 0.0),  # {7, 8} cannot make 22.
        ("7-5=2,", 0.0),
        ("3*5=1", 1.0),  # Partial number.
        ("3*5=16", 0.0),  # Wrong arithmetic.
        ("3*5=15", 1.0),
        ("3*5=15,", 1.0),
        ("3*5=15,1", 1.0),
        ("3*5=15,15+7=2", 1.0),
        ("3*5=15,15+7=22", 1.0),
        ("3*5=15,15+7=22,", 0.0),  # Nothing left to combine.
        ("3*5=15,15*15", 0.0),  # Reuse.
        ("3*3", 0.0),  # Reuse of a given number.
        ("3*5=15#", 0.0),  # Cue before the target is made.
        ("3*5=15,15+7=22#", 1.0),
        ("3*5=15,15+7=22#2", 1.0),
        ("3*5=15,15+7=22#22", 1.0),
        ("3*5=15,15+7=22#222", 0.0),
        ("3*5=15,15+7=22#23", 0.0),
        ("#", 0.0),
        ("x", 0.0),
    ],
)
def test_prefix_value(prefix, value):
  assert TASK.prefix_value(PROBLEM, prefix) == value


@pytest.mark.parametrize("numbers, target", [((3, 5, 7), 22), ((2, 2, 6), 5), ((4, 6, 9), 3)])
def test_oracle_and_verifier_match_brute_force(numbers, target):
  problem = TASK.make_problem(numbers, target)
  attempts, correct = _all_attempts(numbers, target)
  assert correct
  for response in attempts:
    assert TASK.reward(problem, response) == float(response in correct), response
  prefixes = {a[:i] for a in attempts for i in range(len(a) + 1)}
  prefixes |= {p + "#" + str(target) for p in list(prefixes)}  # Cues at odd places.
  for prefix in prefixes:
    expected = float(any(c.startswith(prefix) for c in correct))
    assert TASK.prefix_value(problem, prefix) == expected, prefix


def test_step_ends():
  assert TASK.step_ends("3*5=15,15+7=22#22") == [6, 14, 17]
  assert TASK.step_ends("3*5=15,15+") == [6, 10]  # Truncated.
  assert TASK.step_ends("3*5=15#15") == [6, 9]
  assert TASK.step_ends("#22") == [3]
  assert TASK.step_ends("") == []


def test_make_problem_rejects_unsolvable():
  with pytest.raises(ValueError, match="cannot be reached"):
    TASK.make_problem([1, 1], 5)


def test_sampling_is_deterministic():
  a = [TASK.sample(np.random.default_rng(7)) for _ in range(3)]
  b = [TASK.sample(np.random.default_rng(7)) for _ in range(3)]
  assert a == b
  rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
  assert [TASK.demonstration(PROBLEM, rng_a) for _ in range(20)] == [
      TASK.demonstration(PROBLEM, rng_b) for _ in range(20)
  ]


@pytest.mark.parametrize(
    "config",
    [
        CountdownConfig(),
        CountdownConfig(num_numbers=2),
        CountdownConfig(num_numbers=4, max_number=20, max_target=99),
    ],
    ids=["default", "two", "four"],
)
def test_sampled_problems(config):
  task = Countdown(config)
  rng = np.random.default_rng(0)
  for _ in range(100):
    problem = task.sample(rng)
    numbers, target = problem.data
    assert len(numbers) == config.num_numbers and all(1 <= x <= config.max_number for x in numbers)
    assert 1 <= target <= config.max_target and target not in numbers
    assert problem.prompt == " ".join(map(str, numbers)) + f">{target}:"
    assert problem.answer == str(target)
    assert len(problem.prompt) <= task.max_prompt_len
    assert len(problem.solution) + 1 <= task.max_response_len
    tok.encode(problem.prompt + problem.solution)
    assert task.reward(problem, problem.solution) == 1.0
    for i in range(len(problem.solution) + 1):
      assert task.prefix_value(problem, problem.solution[:i]) == 1.0
    assert task.step_ends(problem.solution)[-1] == len(problem.solution)


@pytest.mark.parametrize("prob", [0.0, 0.3, 1.0])
def test_demonstrations(prob):
  task = Countdown(CountdownConfig(demo_correct_prob=prob))
  rng = np.random.default_rng(0)
  rewards = []
  for _ in range(400):
    problem = task.sample(rng)
    demo = task.demonstration(problem, rng)
    steps, answer = _parse_steps(demo)
    _assert_valid_steps(problem.data.numbers, steps)
    assert answer == str(steps[-1][3])
    assert len(demo) + 1 <= task.max_response_len
    rewards.append(task.reward(problem, demo))
  assert abs(np.mean(rewards) - prob) <= 0.07


def test_max_response_len_is_tight():
  task = Countdown()  # Longest well-formed attempt of 3 numbers <= 12:
  assert len("12*12=144,144*12=1728#1728") + 1 == task.max_response_len
  assert task.max_prompt_len == len("12 12 12>60:")


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_numbers", 1),
        ("num_numbers", 6),
        ("num_numbers", 2.5),
        ("num_numbers", True),
        ("max_number", 1),
        ("max_target", 11),  # < max_number.
        ("max_target", 10_000),
        ("demo_correct_prob", -0.1),
        ("demo_correct_prob", 1.5),
        ("demo_correct_prob", float("nan")),
    ],
)
def test_bad_config_values_name_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    CountdownConfig(**{field: value})


def test_config_is_frozen_and_keyword_only():
  with pytest.raises(TypeError):
    CountdownConfig(3)  # pylint: disable=too-many-function-args
  with pytest.raises(dataclasses.FrozenInstanceError):
    CountdownConfig().num_numbers = 4
