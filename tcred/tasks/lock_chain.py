"""Lock chain: k decisive choices, far apart, in a long forced response (issue 24).

The LLM analogue of bsuite's credit-assignment chains (umbrella_chain,
discounting_chain): the reward is all-or-nothing at the end, only k characters
of a long response decide it, and the oracle knows the value of every prefix.

Prompt ``"K3Q7B1:"``: k locks, each an uppercase letter (distinct) followed by
its key digit, then ``:``. Response, for ``filler=4``::

    K3=3abcd,Q7=0abcd,B1=1abcd#1

one segment per lock, in prompt order, separated by ``,``: the lock's letter,
the chosen key digit, ``=``, the running checksum ``s_i = (s_{i-1} + key_i) mod
10`` (``s_0 = 0``) of the keys written so far, and the first `filler` lowercase
letters (a counting filler); then the answer cue ``#`` and the final checksum
``s_k``. The key digit is the segment's one decisive character; everything else
is forced by the prompt and the response so far: the lock letter is copied
from the prompt, the checksum is derived from the written keys, the filler is
fixed. A segment is ``filler + 4`` characters, so decisions lie ``filler + 5``
apart.

The format has exactly one correct response (the reference solution): reward
1 iff the response is that text, and the exact oracle value of a prefix is 1
iff it is a prefix of it. A prefix is winnable iff every key so far is right
and the forced text so far is consistent with it.

Noisy demonstrations pick a wrong key (uniform among the other nine digits)
in each segment independently with probability ``e = 1 − demo_correct_prob **
(1 / k)``, so a demonstration is correct with probability demo_correct_prob,
and the noise sits at the decisive characters only: the checksums follow the
written keys and the answer is the last written checksum, so a wrong
demonstration is consistent with itself (as in long addition). A policy fit to
them picks each key right with probability about 1 − e, so its pass@1 is about
demo_correct_prob whatever k; RL must make k separate choices reliable from
one all-or-nothing reward.

Codebook mode (``codebook=True``): the prompt lists the locks only
(``"KQB:"``) and each lock's key is fixed by the task (`CODEBOOK`, one digit
per letter), so the k decisions of a response are k separate facts the
policy must hold, not k uses of one skill (copying a digit from the prompt):
outcome credit cannot tell which of them went wrong, and improving one does
not improve the others. On its own it did not let a perfect verifier beat
GRPO in the issue 24 pilots (BUILD_NOTES); with traps it did.

Traps (``trap_prob > 0``): at the trap locks (`TRAP_LOCKS`, every third
letter), a demonstration writes the lock's decoy key ((key + 5) mod 10)
with probability `trap_prob` before any other noise, so where trap_prob >
1/2 the base policy's most likely key there is wrong (its greedy response
fails) and RL must change a few decisions while keeping the others: the
outcome says only that some key was wrong. Without traps the base
policy's mode is right at every key (greedy pass@1 1.0) and RL only
sharpens it, which outcome credit does about as fast as a perfect
verifier (BUILD_NOTES, issue 24 pilots).

Difficulty knob: `decisions` (k), with `filler` (the distance between
decisions). The registered levels ``lock-chain-k2``, ``-k4``, ``-k8``, ``-k10`` and
``-k12`` (`LEVELS`) differ in k only; they are in codebook mode with traps
(`LockChainLevelConfig`).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tcred.tasks import base

_SEPARATOR = ","
_EQUALS = "="
_LOCKS = string.ascii_uppercase
_FILLER = string.ascii_lowercase
MAX_DECISIONS = 12
MAX_FILLER = len(_FILLER)
CODEBOOK = dict(zip(_LOCKS, (int(d) for d in "70192205146210363445879358")))
"""Codebook mode's fixed key of each lock (each digit 2 or 3 times; drawn once, then fixed)."""
TRAP_LOCKS = _LOCKS[::3]
"""The locks whose demonstrations write the decoy key with probability `trap_prob`: A, D, G, ..., Y (9 of 26)."""
DECOY_SHIFT = 5
"""A trap lock's decoy key: (key + DECOY_SHIFT) mod 10."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockChainConfig:
  """Lock-chain problem distribution.

  Attributes:
    decisions: k, the number of locks (decisive characters), in [1, 12].
    filler: forced filler letters per segment, in [0, 26] (decisions lie
      filler + 5 characters apart).
    demo_correct_prob: probability that a demonstration is correct, in [0, 1].
    codebook: keys fixed per lock (`CODEBOOK`) and left out of the prompt, which lists the locks only.
    trap_prob: probability that a demonstration writes a trap lock's decoy key, in [0, 1] (0: no traps).
  """

  decisions: int = 4
  filler: int = 16
  demo_correct_prob: float = 0.3
  codebook: bool = False
  trap_prob: float = 0.0

  def __post_init__(self):
    base.check_range("decisions", self.decisions, 1, MAX_DECISIONS, integer=True)
    base.check_range("filler", self.filler, 0, MAX_FILLER, integer=True)
    base.check_range("demo_correct_prob", self.demo_correct_prob, 0.0, 1.0, integer=False)
    base.check_range("trap_prob", self.trap_prob, 0.0, 1.0, integer=False)
    if not isinstance(self.codebook, bool):
      raise ValueError(f"codebook must be true or false, got {self.codebook!r}")


class LockChainData(NamedTuple):
  """`Problem.data` of lock chain: the lock letters and their key digits, in prompt order."""

  locks: str
  keys: tuple[int, ...]


def checksums(keys: Sequence[int]) -> list[int]:
  """The running checksums s_1..s_k of written keys: s_i = (s_{i-1} + key_i) mod 10, s_0 = 0.

  Example: checksums([3, 7, 1]) == [3, 0, 1].
  """
  return [int(s) % 10 for s in np.cumsum(keys, dtype=np.int64)] if len(keys) else []


def segment_text(lock: str, key: int, checksum: int, filler: int) -> str:
  """One segment: ``"<lock><key>=<checksum><filler letters>"``, e.g. ``"Q7=0abcd"``."""
  return f"{lock}{key}{_EQUALS}{checksum}{_FILLER[:filler]}"


def _format(locks: str, keys: Sequence[int], filler: int) -> str:
  """The response for written `keys` (checksums and the answer follow them)."""
  sums = checksums(keys)
  segments = [segment_text(lock, key, s, filler) for lock, key, s in zip(locks, keys, sums)]
  return _SEPARATOR.join(segments) + LockChain.answer_cue + str(sums[-1])


class LockChain(base.Task):
  """The lock-chain task (see the module docstring)."""

  name = "lock-chain"
  answer_cue = "#"
  has_step_labels = True

  def __init__(self, config: LockChainConfig = LockChainConfig()):
    self.config = config

  @property
  def max_prompt_len(self) -> int:
    """Every prompt has this length: k letter-digit pairs (k letters in codebook mode) and ``:``."""
    return (1 if self.config.codebook else 2) * self.config.decisions + 1

  @property
  def max_response_len(self) -> int:
    """Every solution and demonstration has k segments of filler + 4 characters, k − 1
    separators, the cue and one answer digit; plus EOS."""
    c = self.config
    return c.decisions * (c.filler + 4) + (c.decisions - 1) + len(self.answer_cue) + 1 + 1

  def make_problem(self, locks: str, keys: Sequence[int]) -> base.Problem:
    """A hand-made problem (any number of locks; the config's `decisions` need not hold).

    Args:
      locks: distinct uppercase letters, in prompt order.
      keys: one digit per lock.

    Raises:
      ValueError: for repeated or non-uppercase locks, keys that are not digits, a count mismatch, or (codebook
        mode) keys other than the codebook's.
    """
    keys = tuple(keys)
    if (not locks or len(set(locks)) != len(locks) or not set(locks) <= set(_LOCKS)
        or len(keys) != len(locks)
        or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= 9 for k in keys)):
      raise ValueError(f"lock-chain needs distinct uppercase locks and one digit key each, got {locks!r} {keys!r}")
    if self.config.codebook:
      fixed = tuple(CODEBOOK[lock] for lock in locks)
      if keys != fixed:
        raise ValueError(f"lock-chain in codebook mode fixes each lock's key (CODEBOOK): locks {locks!r} have keys "
                         f"{fixed}, got {keys!r}")
    pairs = locks if self.config.codebook else "".join(f"{lock}{key}" for lock, key in zip(locks, keys))
    prompt = pairs + ":"
    solution = _format(locks, keys, self.config.filler)
    return base.Problem(prompt=prompt, answer=str(checksums(keys)[-1]), solution=solution,
                        data=LockChainData(locks, keys))

  def sample(self, rng: np.random.Generator) -> base.Problem:
    k = self.config.decisions
    locks = "".join(_LOCKS[i] for i in rng.choice(len(_LOCKS), size=k, replace=False))
    keys = tuple(int(x) for x in rng.integers(0, 10, size=k))  # drawn in both modes: the same lock stream
    if self.config.codebook:
      keys = tuple(CODEBOOK[lock] for lock in locks)
    return self.make_problem(locks, keys)

  def problem_key(self, problem: base.Problem) -> str:
    """The canonical identity of a problem: its lock-key table, sorted by lock (``"B1K3Q7"``).

    Two prompts listing the same locks with the same keys in another order are one problem for
    held-out splits (the decisions to learn are the same; only their order differs).
    """
    locks, keys = problem.data
    return "".join(f"{lock}{key}" for lock, key in sorted(zip(locks, keys)))

  def reward(self, problem: base.Problem, response: str) -> float:
    """1.0 iff `response` is the reference solution (the format admits no other correct text)."""
    return float(response == problem.solution)

  def step_ends(self, response: str) -> list[int]:
    """One step per segment (each holds one decisive key) plus the answer."""
    return base.separator_step_ends(response, separator=_SEPARATOR, cue=self.answer_cue)

  def decision_offsets(self, problem: base.Problem) -> list[int]:
    """Character offsets of the k decisive key digits in the solution (every other character is forced)."""
    stride = self.config.filler + 5
    return [1 + i * stride for i in range(len(problem.data.locks))]

  def prefix_value(self, problem: base.Problem, prefix: str) -> float:
    """1.0 iff `prefix` is a prefix of the unique correct response."""
    return float(problem.solution.startswith(prefix))

  def demonstration(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """A response whose keys are each wrong independently.

    A trap lock's key (`TRAP_LOCKS`) is its decoy (key + 5) mod 10 with probability `trap_prob`; otherwise,
    and at every other lock, the key is replaced by another digit (uniform) with probability
    1 − demo_correct_prob^(1/k), so without traps a demonstration is correct with probability
    demo_correct_prob. Checksums and answer follow the written keys.
    """
    locks, keys = problem.data
    error_prob = 1.0 - self.config.demo_correct_prob ** (1.0 / len(keys))
    written = []
    for lock, key in zip(locks, keys):
      if lock in TRAP_LOCKS and self.config.trap_prob > 0 and rng.random() < self.config.trap_prob:
        key = (key + DECOY_SHIFT) % 10
      elif rng.random() < error_prob:
        key = int(rng.choice([d for d in range(10) if d != key]))
      written.append(key)
    return _format(locks, written, self.config.filler)

  def step_label(self, problem: base.Problem, prefix: str, step: str) -> bool | None:
    """Whether `step` is right given the prefix as written (`Task.step_label`): segment i must name lock i,
    write its key and the running checksum continued from the previous segment's written one (so a right key
    after a wrong one is right), with the filler; the answer must be the last written checksum after k
    segments. None where the previous segment's checksum cannot be read.

    Example (K3Q7B1, filler 4): ``",Q7=2abcd"`` after ``"K5=5abcd"`` is right (the key is Q's; 5 + 7 = 12);
    ``",Q7=0abcd"`` after it is wrong (0 continues the true checksum, not the written one).
    """
    locks, keys = problem.data
    segments = prefix.split(_SEPARATOR) if prefix else []
    written = 0
    if segments:
      last = segments[-1]
      if len(last) < 4 or not last[3].isdigit():
        return None
      written = int(last[3])
    i = len(segments)
    if step.startswith(self.answer_cue):
      return i == len(locks) and step == f"{self.answer_cue}{written}"
    if i >= len(locks) or step.startswith(_SEPARATOR) != (i > 0):
      return False
    return step.removeprefix(_SEPARATOR) == segment_text(locks[i], keys[i], (written + keys[i]) % 10,
                                                          self.config.filler)

  def teacher_analysis(self, problem: base.Problem, prefix: str, step: str) -> base.StepAnalysis:
    """Looks the lock's key up, recomputes the checksum and checks the forced text.

    Examples (K3Q7B1, filler 4): ``"K3=3abcd"`` first gives ``"lock K key 3 sum 3;ok"`` (good);
    ``",Q5=8abcd"`` after ``"K3=3abcd"`` gives ``"lock Q key 7 sum 0;wrong"`` (bad: the wrong key);
    ``"#1"`` after the three right segments gives ``"answer 1;right"``.
    """
    locks, keys = problem.data
    if not problem.solution.startswith(prefix):
      return base.StepAnalysis("earlier step wrong", False)
    if step.startswith(self.answer_cue):
      good = prefix + step == problem.solution
      return base.StepAnalysis(f"answer {problem.answer};{'right' if good else 'wrong'}", good)
    i = len([s for s in prefix.split(_SEPARATOR) if s])
    if i >= len(locks):
      return base.StepAnalysis(f"no lock {i + 1}", False)
    want = segment_text(locks[i], keys[i], checksums(keys)[i], self.config.filler)
    good = step.removeprefix(_SEPARATOR) == want
    return base.StepAnalysis(f"lock {locks[i]} key {keys[i]} sum {checksums(keys)[i]};{'ok' if good else 'wrong'}",
                             good)


# Difficulty levels (issue 24): each is a named task config registered as its own task,
# `lock-chain-k<k>`, with k decisive keys 21 characters apart (filler 16), in codebook mode with traps: the
# settings under which a perfect verifier's step credit beats GRPO's outcome credit clearly (BUILD_NOTES, issue
# 24 pilots: keys in the prompt, or no traps, leave the base policy's mode right at every key, and GRPO sharpens
# it about as fast as the verifier).


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockChainLevelConfig(LockChainConfig):
  """The levels' shared settings: keys from the codebook, trap locks' demonstrations written with the decoy
  key 60% of the time, the other keys wrong with probability 1 − 0.5^(1/k) each."""

  codebook: bool = True
  trap_prob: float = 0.6
  demo_correct_prob: float = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockChainK2Config(LockChainLevelConfig):
  """Level k2: 2 decisive keys."""

  decisions: int = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockChainK4Config(LockChainLevelConfig):
  """Level k4: 4 decisive keys."""

  decisions: int = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockChainK8Config(LockChainLevelConfig):
  """Level k8: 8 decisive keys."""

  decisions: int = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockChainK10Config(LockChainLevelConfig):
  """Level k10: 10 decisive keys, responses of up to 212 characters (issue 24: between k8, where GRPO's fast runs
  end near the oracle's plateau, and k12, whose bases cost the most)."""

  decisions: int = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockChainK12Config(LockChainLevelConfig):
  """Level k12: 12 decisive keys (the hardest level; `MAX_DECISIONS`), responses of up to 254 characters."""

  decisions: int = 12


class LockChainK2(LockChain):
  name = "lock-chain-k2"

  def __init__(self, config: LockChainConfig = LockChainK2Config()):
    super().__init__(config)


class LockChainK4(LockChain):
  name = "lock-chain-k4"

  def __init__(self, config: LockChainConfig = LockChainK4Config()):
    super().__init__(config)


class LockChainK8(LockChain):
  name = "lock-chain-k8"

  def __init__(self, config: LockChainConfig = LockChainK8Config()):
    super().__init__(config)


class LockChainK10(LockChain):
  name = "lock-chain-k10"

  def __init__(self, config: LockChainConfig = LockChainK10Config()):
    super().__init__(config)


class LockChainK12(LockChain):
  name = "lock-chain-k12"

  def __init__(self, config: LockChainConfig = LockChainK12Config()):
    super().__init__(config)


LEVELS: dict[str, tuple[type, type[LockChain]]] = {
    "k2": (LockChainK2Config, LockChainK2),
    "k4": (LockChainK4Config, LockChainK4),
    "k8": (LockChainK8Config, LockChainK8),
    "k10": (LockChainK10Config, LockChainK10),
    "k12": (LockChainK12Config, LockChainK12),
}
"""The difficulty levels: level -> (config class, task class); the task is named `lock-chain-<level>`."""
