"""Long addition with explicit carries: mistakes are errors, not forks.

Prompt ``"4738+2594:"``: two positive integers without leading zeros, ``+``,
``:``. Response ``"8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#7332"``: one step per digit
column, from the units column up, separated by ``,``; the answer cue ``#`` and
the answer.

Column k (k = 1 is the units column) is written ``a+b=s`` or ``a+b+1=s``:
a and b are the k-th digits from the right of the first and second number (0
where a number has fewer than k digits), ``+1`` is the carry into the column,
written iff the previous column's written sum is at least 10, and s is the
column's sum in decimal without leading zeros (0 to 19). There are as many
columns as the longer number has digits. The answer is what the steps
computed, read off them: the last column's sum followed by the units digits of
the other sums from the top column down (``7`` ``3`` ``3`` ``2`` above), so a
final carry is part of the last sum.

The format has exactly one correct response per problem (the reference
solution), so the verifier's reward is 1 iff the response is that text, and
the exact oracle value of a prefix is 1 iff it is a prefix of it: 1 until the
first wrong character, 0 from there on. Every mistake is fatal and nothing is
a fork: the policy's choice at a correct prefix is right or wrong, never one
of several right ways.

Noisy demonstrations make a mistake in each of their n columns independently
with probability ``e = 1 - demo_correct_prob ** (1 / n)``, so a demonstration
is correct with probability demo_correct_prob. A mistake is of a uniformly
chosen kind: a misread operand digit, a wrong carry (dropped or spurious
``+1``) or a slipped sum (off by 1 or 10); the columns after it follow the
written, wrong state (their carries come from the wrong sum) and the answer is
read off the written steps, so a wrong demonstration is consistent with
itself and only its mistakes are wrong. Independent column errors matter: a
policy fit to demonstrations with one mistake in a random column learns a
per-column error rate and samples correct responses more often than the
demonstrations were correct (measured: 0.56 from 50% correct demonstrations);
with independent errors its pass@1 matches demo_correct_prob.

Carry traps (``trap_prob > 0``): after a column whose written sum is exactly
10, a demonstration drops the carry with probability `trap_prob` before any
other noise (the next column is written ``a+b=s`` with s = a + b, one too
small), the slip of a round 10. Where trap_prob > 1/2 the base policy's most
likely step after a sum of 10 is wrong (its greedy response fails on about
half of 8-digit problems), so RL must change one conditional habit while
keeping the others, and an all-or-nothing outcome does not say which column
went wrong. Without traps the base policy's mode is right at every column and
RL only sharpens it, which outcome credit does nearly as fast as a perfect
verifier (suite-credit's long-addition-d8, BUILD_NOTES issue 24); the same
held for lock chains until their traps (`lock_chain.py`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tcred.tasks import base
from tcred.validation import HASH_NEUTRAL_DEFAULT

_SEPARATOR = ","
_ERROR_KINDS = ("operand", "carry", "sum")
_INT64_DIGITS = 18  # operands of up to this many digits are drawn in one call (10**18 < 2**63)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongAdditionConfig:
  """Long-addition problem distribution.

  Attributes:
    min_digits: fewest digits of each operand, in [1, 20].
    max_digits: most digits of each operand, in [min_digits, 20]. The digit
      count of each operand is drawn uniformly and independently.
    demo_correct_prob: probability that a demonstration is correct, in [0, 1] (without traps).
    trap_prob: probability that a demonstration drops the carry out of a column whose written sum is
      exactly 10, in [0, 1] (0: no traps).
  """

  min_digits: int = 3
  max_digits: int = 4
  demo_correct_prob: float = 0.4
  trap_prob: float = dataclasses.field(default=0.0, metadata=HASH_NEUTRAL_DEFAULT)  # base policies built before it

  def __post_init__(self):
    base.check_range("min_digits", self.min_digits, 1, 20, integer=True)
    base.check_range("max_digits", self.max_digits, self.min_digits, 20, integer=True)
    base.check_range("demo_correct_prob", self.demo_correct_prob, 0.0, 1.0, integer=False)
    base.check_range("trap_prob", self.trap_prob, 0.0, 1.0, integer=False)


class LongAdditionData(NamedTuple):
  """`Problem.data` of long addition: the two operands, in prompt order."""

  a: int
  b: int


class Column(NamedTuple):
  """One written column step: operand digits, carry in (0 or 1), written sum."""

  a: int
  b: int
  carry: int
  total: int

  @property
  def text(self) -> str:
    """``"a+b=s"`` or ``"a+b+1=s"``."""
    return f"{self.a}+{self.b}{'+1' if self.carry else ''}={self.total}"


def column_digits(a: int, b: int) -> list[tuple[int, int]]:
  """[(k-th digit of a, k-th digit of b)] from the units column up, 0-padded.

  Example: column_digits(95, 7) == [(5, 7), (9, 0)].
  """
  da, db = str(a)[::-1], str(b)[::-1]
  width = max(len(da), len(db))
  return [(int(da[k]) if k < len(da) else 0, int(db[k]) if k < len(db) else 0) for k in range(width)]


def correct_columns(a: int, b: int) -> list[Column]:
  """The reference steps of a + b, from the units column up."""
  columns, carry = [], 0
  for x, y in column_digits(a, b):
    columns.append(Column(x, y, carry, x + y + carry))
    carry = int(x + y + carry >= 10)
  return columns


def read_answer(columns: Sequence[Column]) -> str:
  """The answer the written steps computed: the top sum, then lower units digits top-down."""
  return str(columns[-1].total) + "".join(str(c.total % 10) for c in reversed(columns[:-1]))


_COLUMN = re.compile(r"(\d)\+(\d)(\+1)?=(\d+)")


def parse_column(text: str) -> Column | None:
  """The column written as `text` (``"a+b=s"`` or ``"a+b+1=s"``), or None if it is not one."""
  m = _COLUMN.fullmatch(text)
  return None if m is None else Column(int(m[1]), int(m[2]), int(m[3] is not None), int(m[4]))


def _format(columns: Sequence[Column]) -> str:
  """The response ``"<column>,<column>,...#<answer>"`` (answer read off the columns)."""
  return _SEPARATOR.join(c.text for c in columns) + LongAddition.answer_cue + read_answer(columns)


def _problem(a: int, b: int) -> base.Problem:
  return base.Problem(
      prompt=f"{a}+{b}:",
      answer=str(a + b),
      solution=_format(correct_columns(a, b)),
      data=LongAdditionData(a, b),
  )


class LongAddition(base.Task):
  """The long-addition task (see the module docstring)."""

  name = "long-addition"
  answer_cue = "#"
  has_step_labels = True

  def __init__(self, config: LongAdditionConfig = LongAdditionConfig()):
    self.config = config

  @property
  def max_prompt_len(self) -> int:
    """Two operands of max_digits digits, ``+`` and ``:``."""
    return 2 * self.config.max_digits + 2

  @property
  def max_response_len(self) -> int:
    """D = max_digits columns of at most ``"a+b+1=sd"`` (8 characters), D − 1
    separators, the cue, an answer of at most D + 1 digits and EOS: 10·D + 1.
    Demonstrations fit too (their sums stay in [0, 19])."""
    d = self.config.max_digits
    return 8 * d + (d - 1) + len(self.answer_cue) + (d + 1) + 1

  def sample(self, rng: np.random.Generator) -> base.Problem:
    c = self.config
    operands = []
    for _ in range(2):
      digits = int(rng.integers(c.min_digits, c.max_digits + 1))
      if digits <= _INT64_DIGITS:
        operands.append(int(rng.integers(10 ** (digits - 1) if digits > 1 else 1, 10**digits)))
      else:  # 10**digits overflows int64: a uniform leading part (digits - 9 digits), then 9 uniform digits
        high = int(rng.integers(10 ** (digits - 10), 10 ** (digits - 9)))
        operands.append(high * 10**9 + int(rng.integers(0, 10**9)))
    return _problem(*operands)

  def make_problem(self, a: int, b: int) -> base.Problem:
    """A hand-made problem (any positive operands; the config's digit range need not hold).

    Raises:
      ValueError: unless both operands are positive integers.
    """
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (a, b)):
      raise ValueError(f"long-addition operands must be positive integers, got {a!r} and {b!r}")
    return _problem(a, b)

  def problem_key(self, problem: base.Problem) -> str:
    """The unordered operands, smaller first: ``"2594+4738"`` for both ``4738+2594:`` and ``2594+4738:``
    (the columns add the same digit pairs; only the order inside each column's text differs)."""
    a, b = problem.data
    return f"{min(a, b)}+{max(a, b)}"

  def reward(self, problem: base.Problem, response: str) -> float:
    """1.0 iff `response` is the reference solution (the format admits no other correct text)."""
    return float(response == problem.solution)

  def step_ends(self, response: str) -> list[int]:
    return base.separator_step_ends(response, separator=_SEPARATOR, cue=self.answer_cue)

  def prefix_value(self, problem: base.Problem, prefix: str) -> float:
    """1.0 iff `prefix` is a prefix of the unique correct response."""
    return float(problem.solution.startswith(prefix))

  def demonstration(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """A response with a mistake in each column independently (correct w.p. demo_correct_prob).

    Each of the n columns is wrong with probability 1 − demo_correct_prob^(1/n);
    a mistake's kind is uniform among a misread operand digit (another digit),
    a wrong carry (``+1`` dropped or added) and a slipped sum (s ± 1 or s ± 10,
    within [0, 19]). Later columns add the carry of the written sums, and the
    answer is read off the written steps. After a written sum of exactly 10 the
    next column drops its carry with probability trap_prob (`LongAdditionConfig`),
    before and instead of that column's other noise.
    """
    a, b = problem.data
    digits = column_digits(a, b)
    error_prob = 1.0 - self.config.demo_correct_prob ** (1.0 / len(digits))
    columns, carry = [], 0
    trap_prob = self.config.trap_prob
    for x, y in digits:
      total = x + y + carry
      if carry and columns and columns[-1].total == 10 and trap_prob > 0 and rng.random() < trap_prob:
        columns.append(Column(x, y, 0, x + y))  # the trap: the carry of a round 10 dropped
        carry = int(x + y >= 10)
        continue
      kind = _ERROR_KINDS[int(rng.integers(len(_ERROR_KINDS)))] if rng.random() < error_prob else None
      if kind == "operand":
        if rng.random() < 0.5:
          x = int(rng.choice([d for d in range(10) if d != x]))
        else:
          y = int(rng.choice([d for d in range(10) if d != y]))
        total = x + y + carry
      elif kind == "carry":
        carry = 1 - carry
        total = x + y + carry
      elif kind == "sum":
        total = int(rng.choice([total + d for d in (-10, -1, 1, 10) if 0 <= total + d <= 19]))
      columns.append(Column(x, y, carry, total))
      carry = int(total >= 10)
    return _format(columns)

  def step_label(self, problem: base.Problem, prefix: str, step: str) -> bool | None:
    """Whether `step` is right given the prefix as written (`Task.step_label`): column k must add the k-th
    digits and the carry of the previous column's written sum (so a column added right from a wrong carry is
    right); the answer must be the one read off the written columns (`read_answer`) after all of them. None
    where a written column cannot be read.

    Example (4738+2594, both prefixes already lost): ``",3+9+1=13"`` after ``"8+4=11"`` is right (a written
    11 carries 1, as 12 would); ``",3+9=12"`` after ``"8+4=2"`` is right (a written 2 carries nothing).
    """
    a, b = problem.data
    digits = column_digits(a, b)
    columns = [parse_column(c) for c in prefix.split(_SEPARATOR)] if prefix else []
    if any(c is None for c in columns):
      return None
    i = len(columns)
    if step.startswith(self.answer_cue):
      return i == len(digits) and step == self.answer_cue + read_answer(columns)
    if i >= len(digits) or step.startswith(_SEPARATOR) != (i > 0):
      return False
    carry = int(columns[-1].total >= 10) if columns else 0
    x, y = digits[i]
    return step.removeprefix(_SEPARATOR) == Column(x, y, carry, x + y + carry).text

  def teacher_analysis(self, problem: base.Problem, prefix: str, step: str) -> base.StepAnalysis:
    """Recomputes the column's digits, carry and sum (every mistake is fatal in this task).

    Examples (4738+2594): ``"8+4=12"`` first gives ``"col1 8+4=12;ok"`` (good); ``",3+9=12"`` after
    ``"8+4=12"`` gives ``"col2 3+9+1=13;wrong"`` (bad: the carry is missing); ``"#7332"`` after the four
    right columns gives ``"answer 7332;right"``.
    """
    a, b = problem.data
    if not problem.solution.startswith(prefix):
      return base.StepAnalysis("earlier step wrong", False)
    if step.startswith(self.answer_cue):
      good = prefix + step == problem.solution
      return base.StepAnalysis(f"answer {problem.answer};{'right' if good else 'wrong'}", good)
    columns = correct_columns(a, b)
    k = len([s for s in prefix.split(_SEPARATOR) if s])
    if k >= len(columns):
      return base.StepAnalysis(f"no column {k + 1}", False)
    want = columns[k].text
    good = step.removeprefix(_SEPARATOR) == want
    return base.StepAnalysis(f"col{k + 1} {want};{'ok' if good else 'wrong'}", good)


# Difficulty levels (issue 24): each is a named task config registered as its own task,
# `long-addition-d<D>`: two operands of exactly D digits, so a response holds D decisive columns.


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongAdditionD8Config(LongAdditionConfig):
  """Level d8: 8-digit operands."""

  min_digits: int = 8
  max_digits: int = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongAdditionD12Config(LongAdditionConfig):
  """Level d12: 12-digit operands."""

  min_digits: int = 12
  max_digits: int = 12


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongAdditionD16Config(LongAdditionConfig):
  """Level d16: 16-digit operands."""

  min_digits: int = 16
  max_digits: int = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongAdditionD20Config(LongAdditionConfig):
  """Level d20: 20-digit operands (the largest the config allows)."""

  min_digits: int = 20
  max_digits: int = 20


class LongAdditionD8(LongAddition):
  name = "long-addition-d8"

  def __init__(self, config: LongAdditionConfig = LongAdditionD8Config()):
    super().__init__(config)


class LongAdditionD12(LongAddition):
  name = "long-addition-d12"

  def __init__(self, config: LongAdditionConfig = LongAdditionD12Config()):
    super().__init__(config)


class LongAdditionD16(LongAddition):
  name = "long-addition-d16"

  def __init__(self, config: LongAdditionConfig = LongAdditionD16Config()):
    super().__init__(config)


class LongAdditionD20(LongAddition):
  name = "long-addition-d20"

  def __init__(self, config: LongAdditionConfig = LongAdditionD20Config()):
    super().__init__(config)


LEVELS: dict[str, tuple[type, type[LongAddition]]] = {
    "d8": (LongAdditionD8Config, LongAdditionD8),
    "d12": (LongAdditionD12Config, LongAdditionD12),
    "d16": (LongAdditionD16Config, LongAdditionD16),
    "d20": (LongAdditionD20Config, LongAdditionD20),
}
"""The difficulty levels: level -> (config class, task class); the task is named `long-addition-<level>`."""
