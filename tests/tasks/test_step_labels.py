"""`Task.step_label` (the perfect verifier's after_fatal="local", issue 24): a step judged on its prefix as written,
on hand-made responses, against the oracle on winnable prefixes, and against the demonstrations' own mistakes."""

import numpy as np
import pytest

from tcred.tasks.base import Task
from tcred.tasks.lock_chain import LockChain, LockChainConfig
from tcred.tasks.long_addition import LongAddition, LongAdditionConfig, column_digits
from tcred.tasks.registry import make_task, task_entry, task_names


def _labels(task: Task, problem, response: str) -> list[bool | None]:
  """The label of every step of `response` (cut by `step_ends`)."""
  out, start = [], 0
  for end in task.step_ends(response):
    out.append(task.step_label(problem, response[:start], response[start:end]))
    start = end
  return out


LOCKS = LockChain(LockChainConfig(decisions=3, filler=4))
LOCK_PROBLEM = LOCKS.make_problem("KQB", (3, 7, 1))  # "K3=3abcd,Q7=0abcd,B1=1abcd#1"


@pytest.mark.parametrize("response, labels", [
    ("K3=3abcd,Q7=0abcd,B1=1abcd#1", [True, True, True, True]),
    # A wrong first key: the later keys are right and their checksums continue the written 5 (5+7=12 -> 2,
    # 2+1 -> 3), and the answer is the last written checksum.
    ("K5=5abcd,Q7=2abcd,B1=3abcd#3", [False, True, True, True]),
    # The true checksums after a wrong key: wrong on the prefix as written (0 does not continue 5).
    ("K5=5abcd,Q7=0abcd,B1=1abcd#1", [False, False, True, True]),
    ("K3=3abcd,Q7=0abcd,B1=1abcd#2", [True, True, True, False]),  # a wrong answer
    ("K3=3abce,Q7=0abcd,B1=1abcd#1", [False, True, True, True]),  # a filler slip, carried forward
    ("Q7=7abcd,K3=0abcd,B1=1abcd#1", [False, False, True, True]),  # locks out of order
    ("K3=3abcd,Q7=0abcd#0", [True, True, False]),  # the answer before the last lock
    ("K3=3abcd,Q7=0abcd,B1=1abcd,Q7=8abcd#8", [True, True, True, False, False]),  # a lock too many
    ("K3=3abcd,Q7=0ab", [True, False]),  # cut short
    # No written checksum for B's to continue (no label); the answer reads B's, which is written.
    ("K3=3abcd,Q7=Xabcd,B1=1abcd#1", [True, False, None, True]),
])
def test_lock_chain_labels_by_hand(response, labels):
  assert _labels(LOCKS, LOCK_PROBLEM, response) == labels


ADDITION = LongAddition(LongAdditionConfig(min_digits=4, max_digits=4))
ADD_PROBLEM = ADDITION.make_problem(4738, 2594)  # "8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#7332"


@pytest.mark.parametrize("response, labels", [
    ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#7332", [True, True, True, True, True]),
    # A slipped units sum (11): the next column's carry follows it (11 >= 10) and is right.
    ("8+4=11,3+9+1=13,7+5+1=13,4+2+1=7#7331", [False, True, True, True, True]),
    # A slipped sum of 2 carries nothing: the columns added from the written state are right; the answer is the
    # one read off the written columns.
    ("8+4=2,3+9=12,7+5+1=13,4+2+1=7#7322", [False, True, True, True, True]),
    # A carry the written 2 does not give; the true answer is not the one these columns computed (7332).
    ("8+4=2,3+9+1=13,7+5+1=13,4+2+1=7#7322", [False, False, True, True, False]),
    ("8+4=12,3+9=12,7+5+1=13,4+2+1=7#7322", [True, False, True, True, True]),  # a dropped carry
    ("8+4=12,3+9+1=13,7+5+1=13#332", [True, True, True, False]),  # the answer a column early
    ("8+4=12,3+9+1=1x,7+5+1=13,4+2+1=7#7332", [True, False, None, None, None]),  # unreadable column
    ("8+4=12,3+9+1=13,7+5", [True, True, False]),  # cut short
])
def test_long_addition_labels_by_hand(response, labels):
  assert _labels(ADDITION, ADD_PROBLEM, response) == labels


def test_only_the_labelled_tasks_claim_labels():
  assert {n for n in task_names() if task_entry(n).task_cls.has_step_labels} == {
      n for n in task_names() if n.startswith(("lock-chain", "long-addition"))}
  with pytest.raises(NotImplementedError, match="lock-chain and long-addition"):
    task = make_task("countdown")
    task.step_label(task.sample(np.random.default_rng(0)), "", "3+5=8")


@pytest.mark.parametrize("task", [LockChain(LockChainConfig(decisions=5, filler=3, demo_correct_prob=0.2)),
                                  LockChain(LockChainConfig(decisions=6, filler=2, codebook=True, trap_prob=0.6)),
                                  LongAddition(LongAdditionConfig(min_digits=3, max_digits=7, demo_correct_prob=0.2,
                                                                  trap_prob=0.5))])
def test_labels_agree_with_the_oracle_while_winnable_and_find_each_demonstration_mistake(task):
  """On a winnable prefix a step is right iff the prefix stays winnable once the step is complete (both read with
  the character that ends them: long addition's slipped sum ``=1`` for ``=11`` is a prefix of the solution until
  its separator; the answer: iff the reward is 1); on any prefix, a demonstration's step is wrong exactly where the
  demonstration made a mistake (its later steps follow the written state, `demonstration`)."""
  rng = np.random.default_rng(3)
  wrong_after_fatal = right_after_fatal = 0
  for _ in range(300):
    problem = task.sample(rng)
    demo = task.demonstration(problem, rng)
    labels, start = _labels(task, problem, demo), 0
    for k, end in enumerate(task.step_ends(demo)):
      prefix, step = demo[:start], demo[start:end]
      if task.prefix_value(problem, demo[:start + (start > 0)]) == 1.0:  # the prefix read with its separator
        oracle = (task.reward(problem, demo) == 1.0 if end == len(demo)
                  else task.prefix_value(problem, demo[:end + 1]) == 1.0)
        assert labels[k] == oracle
      else:
        wrong_after_fatal += labels[k] is False
        right_after_fatal += labels[k] is True
      start = end
    assert labels == _mistakes(task, problem, demo)
  assert wrong_after_fatal > 0 and right_after_fatal > 0


def _mistakes(task, problem, demo: str) -> list[bool]:
  """Each step of a demonstration by hand: False where it made a mistake (a wrong key; a wrong column: operand,
  carry of the written previous sum, or sum), True elsewhere (the answer is read off the written steps)."""
  reasoning, _, _ = demo.partition(task.answer_cue)
  parts = reasoning.split(",")
  if isinstance(task, LockChain):
    return [part[1] == str(key) for part, key in zip(parts, problem.data.keys)] + [True]
  out, carry = [], 0
  for part, (x, y) in zip(parts, column_digits(*problem.data)):
    operands, total = part.split("=")
    terms = [int(t) for t in operands.split("+")]
    c = int(len(terms) == 3)
    out.append(terms[:2] == [x, y] and c == carry and int(total) == x + y + c)
    carry = int(int(total) >= 10)
  return out + [True]
