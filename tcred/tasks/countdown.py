"""Countdown: reach a target number with + - * / over given numbers.

Prompt ``"3 5 7>22:"``: the numbers (space-separated, in random order), ``>``,
the target, ``:``. Response ``"3*5=15,15+7=22#22"``: steps ``a op b=c``
separated by ``,``, the answer cue ``#`` and the answer.

Rules. The available numbers start as the multiset of given numbers. A step
``a op b=c`` takes two available numbers a and b (two copies if a == b),
removes them and makes c = a op b available; c must be a positive integer
(subtraction positive, division exact). Numbers are written in decimal without
leading zeros. Reward 1 iff there is at least one step, every step is valid,
the last step's result is the target and the answer is the target's text.
Not every number has to be used.

Steps are the ``a op b=c`` pieces plus the answer. The oracle value of a
prefix is exact: a memoised search over multisets of available numbers decides
whether the target is still reachable, and partially written steps are matched
as string prefixes of all valid next steps. Problems are solvable by
construction (the target is the result of a random solution whose results stay
at most `max_target`) and never trivial (the target is not a given number).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from tcred.tasks import base

_SEPARATOR = ","
_OPS = "+-*/"
_STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")
_MAX_SAMPLE_TRIES = 10_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class CountdownConfig:
  """Countdown problem distribution.

  Attributes:
    num_numbers: how many numbers are given, in [2, 5].
    max_number: the numbers are drawn uniformly from [1, max_number], with
      repetition; in [2, 100].
    max_target: targets lie in [1, max_target], and the generating solution's
      intermediate results too; in [max_number, 9999].
    demo_correct_prob: probability that a demonstration is correct, in [0, 1].
  """

  num_numbers: int = 3
  max_number: int = 12
  max_target: int = 60
  demo_correct_prob: float = 0.5

  def __post_init__(self):
    base.check_range("num_numbers", self.num_numbers, 2, 5, integer=True)
    base.check_range("max_number", self.max_number, 2, 100, integer=True)
    base.check_range("max_target", self.max_target, self.max_number, 9999, integer=True)
    base.check_range("demo_correct_prob", self.demo_correct_prob, 0.0, 1.0, integer=False)


class CountdownData(NamedTuple):
  """`Problem.data` of countdown: the given numbers (prompt order) and the target."""

  numbers: tuple[int, ...]
  target: int


class Move(NamedTuple):
  """One valid step from a multiset of available numbers.

  Attributes:
    text: ``"a op b=c"``.
    result: c.
    rest: the available numbers after the step, sorted.
  """

  text: str
  result: int
  rest: tuple[int, ...]


def _apply(a: int, op: str, b: int) -> int | None:
  """a op b if it is a positive integer, else None."""
  if op == "+":
    return a + b
  if op == "*":
    return a * b
  if op == "-":
    return a - b if a > b else None
  return a // b if a % b == 0 else None


@functools.lru_cache(maxsize=1 << 16)
def moves(numbers: tuple[int, ...]) -> Mapping[str, Move]:
  """All valid next steps from the sorted multiset `numbers`, keyed by text."""
  table = {}
  for i, a in enumerate(numbers):
    for j, b in enumerate(numbers):
      if i == j:
        continue
      others = tuple(x for k, x in enumerate(numbers) if k not in (i, j))
      for op in _OPS:
        c = _apply(a, op, b)
        if c is not None:
          text = f"{a}{op}{b}={c}"
          table[text] = Move(text, c, tuple(sorted(others + (c,))))
  return types.MappingProxyType(table)


@functools.lru_cache(maxsize=1 << 20)
def solvable(numbers: tuple[int, ...], target: int) -> bool:
  """Whether one or more steps from the sorted multiset `numbers` end at `target`."""
  return any(
      move.result == target or solvable(move.rest, target)
      for move in moves(numbers).values()
  )


def _replay(
    numbers: tuple[int, ...], steps: Sequence[str]
) -> tuple[tuple[int, ...], int | None] | None:
  """Applies step texts to the sorted multiset `numbers`.

  Returns:
    (available numbers after the steps, last result or None if no steps), or
    None if some step is invalid.
  """
  last = None
  for step in steps:
    move = moves(numbers).get(step)
    if move is None:
      return None
    numbers, last = move.rest, move.result
  return numbers, last


def _solution_steps(
    numbers: tuple[int, ...], target: int, rng: np.random.Generator | None = None
) -> list[Move]:
  """A correct sequence of steps from the sorted multiset `numbers`.

  Each step is drawn uniformly (or, without `rng`, the first in enumeration
  order) among the steps from which the target stays reachable; the walk stops
  at the first step that makes the target.

  Raises:
    ValueError: if the target cannot be reached.
  """
  if not solvable(numbers, target):
    raise ValueError(f"countdown target {target} cannot be reached from {numbers}")
  steps = []
  while not steps or steps[-1].result != target:
    options = [m for m in moves(numbers).values() if m.result == target or solvable(m.rest, target)]
    steps.append(options[0 if rng is None else rng.integers(len(options))])
    numbers = steps[-1].rest
  return steps


def _format(steps: Sequence[Move], answer: int) -> str:
  """The response ``"<step>,<step>,...#<answer>"``."""
  return _SEPARATOR.join(m.text for m in steps) + Countdown.answer_cue + str(answer)


def _problem(numbers: tuple[int, ...], target: int, solution: Sequence[Move]) -> base.Problem:
  return base.Problem(
      prompt=" ".join(map(str, numbers)) + f">{target}:",
      answer=str(target),
      solution=_format(solution, target),
      data=CountdownData(numbers, target),
  )


def _num_digits(x: int) -> int:
  return len(str(x))


class Countdown(base.Task):
  """The countdown task (see the module docstring)."""

  name = "countdown"
  answer_cue = "#"

  def __init__(self, config: CountdownConfig = CountdownConfig()):
    self.config = config

  @property
  def max_prompt_len(self) -> int:
    """``"<n numbers>" + (n - 1) spaces + ">" + "<target>" + ":"``."""
    c = self.config
    return c.num_numbers * _num_digits(c.max_number) + c.num_numbers + _num_digits(c.max_target) + 1

  @property
  def max_response_len(self) -> int:
    """Longest well-formed attempt (valid steps, answer = last result) + EOS.

    A value made from p given numbers is at most m**p (m = max_number >= 2,
    since a + b <= a * b for a, b >= 2), so step k (0-based) has operands made
    from p and q given numbers with p + q <= k + 2 and a result <= m**(k+2).
    Correct responses fit a fortiori.
    """
    m, n = self.config.max_number, self.config.num_numbers
    total = 0
    for k in range(n - 1):
      operands = max(_num_digits(m**p) + _num_digits(m ** (k + 2 - p)) for p in range(1, k + 2))
      total += operands + 2 + _num_digits(m ** (k + 2))  # "a op b=c"
    total += n - 2  # separators
    return total + len(self.answer_cue) + _num_digits(m**n) + 1  # cue, answer, EOS

  def _random_steps(
      self, numbers: tuple[int, ...], rng: np.random.Generator, *, avoid_last: int | None = None
  ) -> list[Move]:
    """A random full-length solution attempt with results <= max_target.

    Args:
      numbers: the sorted given numbers.
      rng: randomness.
      avoid_last: the last result must differ from this. Results above
        max_target are taken only where no other step is allowed.
    """
    steps = []
    while len(numbers) > 1:
      valid = list(moves(numbers).values())
      if avoid_last is not None and len(numbers) == 2:
        valid = [m for m in valid if m.result != avoid_last]
      # `valid` is never empty: for x >= y, x + y differs from x - y (x > y) or
      # from x / x (x == y). If every available number is <= max_target, x - y
      # or x / x is capped too, but it may be `avoid_last`.
      options = [m for m in valid if m.result <= self.config.max_target] or valid
      steps.append(options[rng.integers(len(options))])
      numbers = steps[-1].rest
    return steps

  def sample(self, rng: np.random.Generator) -> base.Problem:
    c = self.config
    for _ in range(_MAX_SAMPLE_TRIES):
      numbers = tuple(int(x) for x in rng.integers(1, c.max_number + 1, size=c.num_numbers))
      steps = self._random_steps(tuple(sorted(numbers)), rng)
      if steps[-1].result not in numbers:
        return _problem(numbers, steps[-1].result, steps)
    raise RuntimeError(f"no non-trivial countdown problem found for {c}")

  def make_problem(self, numbers: Sequence[int], target: int) -> base.Problem:
    """A hand-made problem; its solution is the first one found by the search.

    The config's ranges (and so the length bounds) need not hold for it.

    Args:
      numbers: positive integers, in prompt order (any count, any size).
      target: a positive integer.

    Raises:
      ValueError: if the problem has no solution.
    """
    numbers = tuple(int(x) for x in numbers)
    if not all(x > 0 for x in numbers):
      raise ValueError(f"countdown numbers must be positive, got {numbers}")
    return _problem(numbers, int(target), _solution_steps(tuple(sorted(numbers)), int(target)))

  def problem_key(self, problem: base.Problem) -> str:
    """The sorted numbers and the target, ``"3 5 7>22"``: the prompt's order of the numbers is not part
    of the problem (the rules take them as a multiset)."""
    numbers, target = problem.data
    return " ".join(map(str, sorted(numbers))) + f">{target}"

  def reward(self, problem: base.Problem, response: str) -> float:
    numbers, target = problem.data
    reasoning, cue, answer = response.partition(self.answer_cue)
    replay = _replay(tuple(sorted(numbers)), reasoning.split(_SEPARATOR))
    return float(bool(cue) and replay is not None and replay[1] == target and answer == str(target))

  def step_ends(self, response: str) -> list[int]:
    return base.separator_step_ends(response, separator=_SEPARATOR, cue=self.answer_cue)

  def prefix_value(self, problem: base.Problem, prefix: str) -> float:
    numbers, target = problem.data
    reasoning, cue, answer = prefix.partition(self.answer_cue)
    steps = reasoning.split(_SEPARATOR)
    if cue:  # The reasoning is complete: it must already reach the target.
      replay = _replay(tuple(sorted(numbers)), steps)
      return float(replay is not None and replay[1] == target and str(target).startswith(answer))
    replay = _replay(tuple(sorted(numbers)), steps[:-1])
    if replay is None:
      return 0.0
    available, partial = replay[0], steps[-1]
    if not partial:  # At the start, or after a separator: a new step is due.
      return float(solvable(available, target))
    return float(
        any(
            text.startswith(partial) and (move.result == target or solvable(move.rest, target))
            for text, move in moves(available).items()
        )
    )

  def demonstration(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """A correct response with probability demo_correct_prob, else a wrong one.

    Correct: a random walk over the steps from which the target stays reachable
    (uniform among them), stopping at the first step that makes the target.
    Wrong: `num_numbers - 1` random valid steps whose last result is not the
    target, answered with that result.
    """
    numbers, target = problem.data
    if rng.random() < self.config.demo_correct_prob:
      return _format(_solution_steps(tuple(sorted(numbers)), target, rng), target)
    steps = self._random_steps(tuple(sorted(numbers)), rng, avoid_last=target)
    return _format(steps, steps[-1].result)

  def teacher_analysis(self, problem: base.Problem, prefix: str, step: str) -> base.StepAnalysis:
    """Recomputes the step's arithmetic and says whether the target stays reachable from what is left.

    Examples (numbers 3 5 7, target 22): after ``""`` the step ``"3*5=15"`` gives
    ``"3*5=15;left 7 15;22 reachable"`` (good); ``"3*5=16"`` gives ``"3*5=15 not 16"`` (bad);
    ``"#22"`` after ``"3*5=15,15+7=22"`` gives ``"last 22;target 22;answer 22;right"`` (good).
    """
    numbers, target = problem.data
    reasoning = prefix.partition(self.answer_cue)[0]
    done = [s for s in reasoning.split(_SEPARATOR) if s]
    replay = _replay(tuple(sorted(numbers)), done)
    if replay is None or self.answer_cue in prefix:
      return base.StepAnalysis("earlier step wrong", False)
    available, last = replay
    if step.startswith(self.answer_cue):
      answer = step[len(self.answer_cue):]
      good = last == target and answer == str(target)
      return base.StepAnalysis(f"last {'none' if last is None else last};target {target};answer {answer};{'right' if good else 'wrong'}", good)
    match = _STEP.fullmatch(step.removeprefix(_SEPARATOR))
    if match is None:
      return base.StepAnalysis("bad format", False)
    a, op, b, c = match.groups()
    a, b, c = int(a), int(b), int(c)
    pool = list(available)
    for x in (a, b):
      if x not in pool:
        return base.StepAnalysis(f"{x} not available", False)
      pool.remove(x)
    value = _apply(a, op, b)
    if value is None:
      return base.StepAnalysis(f"{a}{op}{b} {'not positive' if op == '-' else 'not exact'}", False)
    if value != c:
      return base.StepAnalysis(f"{a}{op}{b}={value} not {c}", False)
    rest = tuple(sorted(pool + [c]))
    good = c == target or solvable(rest, target)
    reach = "hit" if c == target else "reachable" if good else "unreachable"
    return base.StepAnalysis(f"{a}{op}{b}={c};left {' '.join(map(str, rest))};{target} {reach}", good)
