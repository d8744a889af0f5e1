"""The step-judge task: a task derived from labelled steps of another task's rollouts (DESIGN §4.6).

The generative step judge (StepWiser, arXiv 2508.19229; "reasoning before
scoring" as in GenPRM 2504.00891 and ThinkPRM 2504.16828) is a small language
model trained on this task by tcred's own SFT and GRPO pipeline, so its
problems, demonstrations and reward are a `Task`'s:

  * a problem is (original problem, the rollout's steps 1..k, the label of step k);
    its prompt is the original prompt, the steps before k, and step k in
    brackets, the step to judge: ``"3 5 7>22:3*5=15,[,15+7=22]"``;
  * a response is a short analysis, the verdict cue ``@`` and the verdict,
    ``+`` (good) or ``-`` (bad): ``"15+7=22;left 22;22 hit@+"``;
  * the demonstration (SFT) is the base task's teacher analysis
    (`Task.teacher_analysis`) followed by the example's label as the verdict,
    so SFT sees exactly the training labels (where a Monte-Carlo label
    disagrees with the teacher's own conclusion, the verdict follows the label);
  * the reward is 1 iff the verdict after the last cue is the label.

Classes are balanced by sampling (StepWiser balances good and bad steps):
`sample` draws the class with probability 1/2, then an example of it, so every
labelled step is used and judges stay comparable at equal numbers of labels.
The task is built from examples in memory (they come from a policy's rollouts,
not from a config), so it is not in the task registry.

Steps of a judge response are its ``;``-separated analysis clauses and the
verdict. Oracle: any analysis can still be followed by the right verdict, so a
prefix has value 1 until a wrong verdict is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tcred.tasks import base
from tcred.tasks.text import CHAR
from tcred.validation import Choice

VERDICT_CUE = "@"
GOOD, BAD = "+", "-"
_SEPARATOR = ";"
_OPEN, _CLOSE = "[", "]"
RESPONSE_SLACK = 8  # characters a sampled analysis may run past the longest teacher analysis


class Verdicts(Choice):
  """The verdict a judge example teaches: the training label, or the teacher's own conclusion (oracle)."""

  LABEL = "label"
  TEACHER = "teacher"


class JudgeExample(NamedTuple):
  """One labelled step, as the judge sees it.

  Attributes:
    prompt: `judge_prompt` of the step.
    analysis: the teacher's analysis (no cue, no newline).
    label: the training label (True: a good step).
    teacher: the teacher's own verdict (`StepAnalysis.good`).
    key: the judged step's problem key (`step_key`): the base task's `problem_key` of its problem, the
      steps before and the step.
  """

  prompt: str
  analysis: str
  label: bool
  teacher: bool
  key: str


class JudgeData(NamedTuple):
  """`Problem.data` of the step-judge task: the example's index, label and teacher verdict."""

  index: int
  label: bool
  teacher: bool


def verdict_text(good: bool) -> str:
  return GOOD if good else BAD


def _layout(prompt, before, step) -> tuple:
  """The judge prompt's pieces in order (the one definition of its layout): problem, steps before, [step]."""
  return prompt, before, _OPEN, step, _CLOSE


def judge_prompt(problem: base.Problem, response: str, start: int, end: int) -> str:
  """The judge's prompt for the step `response[start:end]`: the problem, the steps before, the step in brackets."""
  return "".join(_layout(problem.prompt, response[:start], response[start:end]))


def judge_prompt_ids(problem: base.Problem, response_ids: np.ndarray, start: int, end: int) -> np.ndarray:
  """`judge_prompt` as char-tokenizer ids [P] (no BOS), the response's pieces taken from its own ids.

  `response_ids[start:end]` is the step in tokens (`CHAR.step_token_ends`). The policy's ids are used as
  they are: an id that decodes to U+FFFD (the unused range of `tcred.tasks.tokenizer`) has no character to
  re-encode, so building the prompt from the text would fail (or lose which id it was).
  """
  ids = np.asarray(response_ids, np.int32).reshape(-1)
  pieces = _layout(problem.prompt, ids[:start], ids[start:end])
  return np.concatenate([CHAR.encode(p) if isinstance(p, str) else p for p in pieces]).astype(np.int32)


def step_spans(task: base.Task, response: str) -> list[tuple[int, int]]:
  """`[(start, end)]` character spans of the K steps of `response` (`task.step_ends`)."""
  ends = task.step_ends(response)
  return list(zip([0, *ends[:-1]], ends))


def step_key(task: base.Task, problem: base.Problem, response: str, start: int, end: int) -> str:
  """The problem key of judging `response[start:end]`: a JSON list of the base task's `problem_key` of
  `problem`, the steps before and the step. The same steps judged on a reordered copy of the problem
  (``"5 3 7>22:"`` for ``"3 5 7>22:"``) are the same judging problem, though their prompts differ."""
  return json.dumps([task.problem_key(problem), response[:start], response[start:end]])


def step_examples(task: base.Task, problem: base.Problem, response: str, labels: Sequence[bool]
                  ) -> list[JudgeExample]:
  """The judge examples of the first `len(labels)` steps of one rollout (teacher analyses by `task`)."""
  spans = step_spans(task, response)
  if len(labels) > len(spans):
    raise ValueError(f"{len(labels)} labels for a response with {len(spans)} steps: {response!r}")
  out = []
  for (start, end), label in zip(spans, labels):
    teacher = task.teacher_analysis(problem, response[:start], response[start:end])
    out.append(JudgeExample(judge_prompt(problem, response, start, end), teacher.text, bool(label),
                            bool(teacher.good), step_key(task, problem, response, start, end)))
  return out


def parse_verdict(response: str) -> bool | None:
  """The verdict of a judge response (True: ``+``), or None when it has no single-character verdict."""
  _, cue, verdict = response.rpartition(VERDICT_CUE)
  if not cue or verdict not in (GOOD, BAD):
    return None
  return verdict == GOOD


class StepJudge(base.Task):
  """The step-judge task over a fixed list of examples (see the module docstring).

  Args:
    examples: the labelled steps (both classes should be present; one alone is drawn alone).
    verdicts: "label" (the verdict to learn is the example's label) or "teacher" (the teacher's own
      conclusion, for studies with oracle verdicts).
  """

  name = "step-judge"
  answer_cue = VERDICT_CUE

  def __init__(self, examples: Sequence[JudgeExample], *, verdicts: str = "label"):
    if not examples:
      raise ValueError("the step-judge task needs at least one labelled step")
    self.verdicts = Verdicts.parse(verdicts, field="verdicts")
    for ex in examples:
      if VERDICT_CUE in ex.analysis or "\n" in ex.analysis:
        raise ValueError(f"a teacher analysis may hold neither {VERDICT_CUE!r} nor a newline: {ex.analysis!r}")
    self.examples = tuple(examples)
    targets = np.array([self._target(ex) for ex in self.examples])
    self._classes = [np.flatnonzero(targets), np.flatnonzero(~targets)]

  def _target(self, ex: JudgeExample) -> bool:
    return ex.label if self.verdicts is Verdicts.LABEL else ex.teacher

  @property
  def class_counts(self) -> tuple[int, int]:
    """(good, bad) examples."""
    return len(self._classes[0]), len(self._classes[1])

  def problem(self, index: int) -> base.Problem:
    ex = self.examples[index]
    verdict = verdict_text(self._target(ex))
    return base.Problem(prompt=ex.prompt, answer=verdict, solution=ex.analysis + VERDICT_CUE + verdict,
                        data=JudgeData(index, ex.label, ex.teacher))

  def problems(self) -> list[base.Problem]:
    return [self.problem(i) for i in range(len(self.examples))]

  @property
  def max_prompt_len(self) -> int:
    return max(len(ex.prompt) for ex in self.examples)

  @property
  def max_response_len(self) -> int:
    """The longest teacher analysis, the cue, the verdict, EOS and `RESPONSE_SLACK`."""
    return max(len(ex.analysis) for ex in self.examples) + 3 + RESPONSE_SLACK

  def sample(self, rng: np.random.Generator) -> base.Problem:
    """A class with probability 1/2 (the only one if the other is empty), then one of its examples."""
    present = [c for c in self._classes if len(c)]
    members = present[int(rng.integers(len(present)))]
    return self.problem(int(members[rng.integers(len(members))]))

  def problem_key(self, problem: base.Problem) -> str:
    """The example's `JudgeExample.key` (`step_key`). The examples come from a judge's training data,
    which already leaves out the base task's held-out problems by key; this key lets a stream of judged
    steps be checked against them too."""
    return self.examples[problem.data.index].key

  def reward(self, problem: base.Problem, response: str) -> float:
    verdict = parse_verdict(response)
    return float(verdict is not None and verdict_text(verdict) == problem.answer)

  def step_ends(self, response: str) -> list[int]:
    return base.separator_step_ends(response, separator=_SEPARATOR, cue=VERDICT_CUE)

  def prefix_value(self, problem: base.Problem, prefix: str) -> float:
    _, cue, verdict = prefix.partition(VERDICT_CUE)
    return float(not cue or problem.answer.startswith(verdict))

  def demonstration(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """The teacher analysis and the verdict to learn (noiseless)."""
    del rng
    return problem.solution
