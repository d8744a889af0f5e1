"""The task interface of the benchmark suite (DESIGN §5).

A task is a seeded problem generator plus everything the credit methods and the
identifiability study need to know about a response: a 0/1 verifier, the
reference answer written after the task's answer cue, step boundaries, and the
oracle value of any prefix (can a correct response still be reached?).

A task owns its tokenizer (`Task.tokenizer`, a `tcred.tasks.text.TaskTokenizer`):
the embedded tasks use the character tokenizer (token j of a response is
character j of its text), the real-model tasks a Hugging Face tokenizer. Step
ends and everything else a task says about a response are character offsets in
its text; the tokenizer maps them to token positions.
Every response has the form ``<reasoning><answer_cue><answer>`` followed by EOS.
"""

from __future__ import annotations

import abc
import dataclasses
import unicodedata
from typing import Any, ClassVar, NamedTuple

import numpy as np

from tcred.tasks import text


class StepAnalysis(NamedTuple):
  """A teacher's check of one step (`Task.teacher_analysis`).

  Attributes:
    text: a short analysis (printable ASCII, no newline), e.g. ``"3*5=15;left 7 15;22 reachable"``.
    good: the teacher's verdict: the step as written is valid and a correct answer stays reachable.
  """

  text: str
  good: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
  """One problem instance.

  Attributes:
    prompt: text fed to the policy after BOS.
    answer: the reference answer y*, the text after the answer cue.
    solution: one correct response (reasoning + cue + answer), without EOS.
    data: task-specific hashable payload (numbers and target, edge list, ...).
  """

  prompt: str
  answer: str
  solution: str
  data: Any


class Task(abc.ABC):
  """A verifiable task. Subclasses are built from a frozen config dataclass."""

  name: ClassVar[str]
  answer_cue: ClassVar[str]
  has_oracle: ClassVar[bool] = True
  """Whether `prefix_value` is available (tasks without an oracle raise NotImplementedError)."""
  has_step_labels: ClassVar[bool] = False
  """Whether `step_label` judges a step written after an earlier error (the verifier's after_fatal="local")."""

  @property
  def tokenizer(self) -> text.TaskTokenizer:
    """Text <-> ids of this task's policy (default: the character tokenizer)."""
    return text.CHAR

  @property
  def checkpoint(self) -> str | None:
    """A Hugging Face checkpoint directory the task's experiments start their policy from (no SFT), or
    None (the embedded tasks: an SFT base policy from the task's demonstrations)."""
    return None

  @property
  def prompt_width(self) -> int:
    """P, the width of the left-padded prompt rows: the most tokens `tokenizer.prompt_ids` gives for a
    prompt of this config (default: max_prompt_len + 1, BOS and one token per character)."""
    return self.max_prompt_len + 1

  @abc.abstractmethod
  def problem_key(self, problem: Problem) -> str:
    """The canonical key of `problem`: equal for problems that are the same problem written differently
    (countdown's numbers in another order, a graph's edges reversed or listed in another order, addition's
    operands swapped, a question with other capitals or spacing), different for problems that differ.

    Held-out problems are kept out of every training stream (SFT demonstrations, RL prompts, a judge's
    data) by this key, not by prompt text, and the held-out set holds each key once
    (`tcred.training.data`): a policy that trained on ``"5 3 7>22:"`` has seen ``"3 5 7>22:"``.
    """

  def held_out_problems(self, n: int) -> list[Problem] | None:
    """The task's own fixed split: its first `n` held-out problems, or None to let
    `tcred.training.data.eval_problems` draw them (the generated tasks). Raises ValueError when the
    task cannot hold out `n` problems and still train on others, saying how many it needs."""
    del n
    return None

  @property
  @abc.abstractmethod
  def max_prompt_len(self) -> int:
    """Upper bound on len(problem.prompt) over all problems of this config."""

  @property
  @abc.abstractmethod
  def max_response_len(self) -> int:
    """Generation budget in characters (tokens), EOS included."""

  @abc.abstractmethod
  def sample(self, rng: np.random.Generator) -> Problem:
    """Draws one problem."""

  @abc.abstractmethod
  def reward(self, problem: Problem, response: str) -> float:
    """1.0 if `response` (text without EOS/padding) is correct, else 0.0."""

  @abc.abstractmethod
  def step_ends(self, response: str) -> list[int]:
    """Exclusive character offsets where the steps of `response` end (ascending)."""

  @abc.abstractmethod
  def prefix_value(self, problem: Problem, prefix: str) -> float:
    """Oracle: 1.0 if some continuation of `prefix` is a correct response, else 0.0."""

  @abc.abstractmethod
  def demonstration(self, problem: Problem, rng: np.random.Generator) -> str:
    """A noisy demonstration (correct with the config's probability), without EOS."""

  def step_label(self, problem: Problem, prefix: str, step: str) -> bool | None:
    """Whether `step` is right given `prefix` as written (`step` starts with its separator or the answer
    cue, as cut by `step_ends`): the label a process reward gives a step when earlier errors are carried
    forward, not charged again (PRM800K's convention). On a winnable prefix it agrees with the oracle (a step
    is right iff the prefix stays winnable); after an error it judges the step on the written state (a right
    lock key after a wrong one, a column added right from a wrong carry). None: the prefix cannot be read
    (malformed text), so the step has no label.

    Raises:
      NotImplementedError: the task judges no step after an error (the default; `has_step_labels`).
    """
    raise NotImplementedError(f"task {self.name!r} has no step labels after an error (only the lock-chain and "
                              "long-addition tasks judge a step on a wrong prefix)")

  def teacher_analysis(self, problem: Problem, prefix: str, step: str) -> StepAnalysis:
    """The teacher's short analysis of `step` written after `prefix` (the response so far; `step` starts
    with its separator or the answer cue, as cut by `step_ends`), for the SFT start of the generative
    step judge (DESIGN §4.6). It judges the step as complete: a number cut short is wrong, not a prefix.

    Raises:
      NotImplementedError: the task has no teacher (the default).
    """
    raise NotImplementedError(f"task {self.name!r} has no teacher analysis of its steps (only the embedded "
                              "tasks countdown, graph-path and long-addition write one)")


_QUESTION_END_PUNCTUATION = ".,;:!?\u2026\u00bf\u00a1\"\u201c\u201d\u00ab\u00bb"
"""What `normalise_question` strips from a question's ends besides whitespace: sentence punctuation
(``. , ; : ! ? …``, Spanish ``¿ ¡``) and double quotes (``" “ ” « »``). Not signs, dashes, brackets,
``$`` or single quotes: ``-5+3`` and ``5+3``, ``(a)`` and ``a)``, ``f'`` and ``f`` stay different."""


def normalise_question(question: str) -> str:
  """The canonical text of a free-form question (the `problem_key` of the question-file tasks):
  Unicode NFKC, casefolded, every run of whitespace (newlines included) one space, and whitespace and
  `_QUESTION_END_PUNCTUATION` stripped from both ends.

  Example: ``"  What is\\n2+2 ?"`` and ``"what is 2+2"`` give ``"what is 2+2"``; ``"What is 2 + 2?"``
  gives ``"what is 2 + 2"`` (a space between words or symbols is content; only a run's length is not:
  dropping spaces would make ``12 3`` and ``123`` one question).
  """
  text = " ".join(unicodedata.normalize("NFKC", question).casefold().split())
  return text.strip(_QUESTION_END_PUNCTUATION + " ")


def check_range(
    field: str, value: Any, low: float, high: float, *, integer: bool
) -> None:
  """Config validation: raises ValueError unless low <= value <= high.

  Args:
    field: the config field's name, quoted in the message.
    value: its value.
    low: smallest allowed value.
    high: largest allowed value.
    integer: whether `value` must be an int (bools are never accepted).
  """
  kind = int if integer else (int, float)
  if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
    what = "an integer" if integer else "a number"
    raise ValueError(f"{field} must be {what} in [{low}, {high}], got {value!r}")


def separator_step_ends(
    response: str, *, separator: str, cue: str, merge_first: bool = False
) -> list[int]:
  """Step ends of a response ``<s_1><sep><s_2>...<sep><s_k><cue><answer>``.

  A step ends at every separator of the reasoning (the separator starts the
  next step), the last step ends at the cue, and the answer step ends at
  len(response). Without a cue (a truncated response) the last, partial step
  ends at len(response). Ends at offset 0 (empty steps) are dropped.

  Example: ``"3+5=8,8*7=56#56"`` with separator "," gives [5, 12, 15].

  Args:
    response: the response text, without EOS.
    separator: the character between reasoning steps.
    cue: the answer cue.
    merge_first: the first separator is not a step end (graph paths: the start
      node and the first hop form one step).

  Returns:
    Strictly ascending exclusive offsets.
  """
  reasoning, has_cue, _ = response.partition(cue)
  ends = [i for i, char in enumerate(reasoning) if char == separator]
  if merge_first:
    ends = ends[1:]
  ends.append(len(reasoning))
  if has_cue:
    ends.append(len(response))
  return sorted({end for end in ends if end > 0})


def line_step_ends(response: str, *, cue: str) -> list[int]:
  """Step ends of a free-form response: the end of each reasoning line (before its newline) and of the
  answer, which starts at the last cue; without a cue the last, partial line ends at len(response).

  Example: ``"a\nb<answer>3"`` with cue "<answer>" gives [1, 3, 12].

  Returns:
    Strictly ascending exclusive character offsets (empty steps dropped).
  """
  reasoning, has_cue, _ = response.rpartition(cue)
  if not has_cue:
    reasoning = response
  ends = [i for i, char in enumerate(reasoning) if char == "\n"]
  ends.append(len(reasoning))
  if has_cue:
    ends.append(len(response))
  return sorted({end for end in ends if end > 0})
