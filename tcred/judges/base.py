"""Step judges: (prompt, steps of a rollout) -> one score per step in [0, 1] (DESIGN §4.6).

A judge sees a problem and a response cut at the task's step boundaries
(`Task.step_ends`, exclusive character offsets) and returns s_1 … s_K, its
estimate after each step of the probability that the response can still end
correct, plus s_0 for the prompt alone (`prior`). Judges are registered by name
like credit methods and experiments; `make_judge` validates the name and the
settings.

Judge credit reads only score changes s_k − s_{k−1} (`tcred.judges.credit`), so
a judge needs to be calibrated across steps of one rollout, not across prompts.

Batches: `Judge.score_groups(task, problems, responses, ctx)` scores the B×G
responses of an RL step (or of an evaluation) at once and returns `JudgeScores`
`[B, G, K + 1]` padded to the batch's most steps, with the judge's cost. The
`JudgeContext` carries what a judge may need besides the text: the current
policy (the `mc` judge continues its prefixes), sampling settings, a PRNG key,
and the cache root under which trained judges keep their weights. `prepare`
is called once before the first batch (trained judges load or train there).

Shapes: B problems, G responses per problem, K steps (padded), K + 1 scores.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
import time
from typing import Any, Callable, ClassVar, NamedTuple, Sequence

import jax
import numpy as np

from tcred.tasks.base import Problem, Task
from tcred.validation import parse_settings, require_finite


class JudgeContext(NamedTuple):
  """What a judge may read besides the text (see the module docstring).

  Attributes:
    graphdef, params: the CURRENT policy (`nnx.split`); the `mc` judge samples continuations from it.
    key: a jax PRNG key for the judge's own sampling (a pure function of seed and step in RL).
    temperature, top_p: the policy's sampling rule (continuations use it).
    cache_dir: the TCRED cache root; trained judges live under `cache_dir / "judges"`.
    task_config: the task's config (trained judges key their cache entry by it).
    model_config: the policy's `ModelConfig` (a trained judge may copy its architecture).
    progress: whether the judge may show progress bars (training, long scoring).
    rewards: optional `[B, G]` rewards of the batch being scored, when the caller has them (RL); a judge
      that needs the final reward (`mc`: Q_K) reads them instead of re-verifying.
    response_ids: optional B lists of G int arrays, the responses' own token ids (EOS included when the
      response ended), when the caller has them (RL); a judge that runs the policy continues exactly
      these tokens instead of re-encoding the text (a text need not encode back to its tokens).
    base_params: optional parameters of the policy a trained judge is built from (its training rollouts
      and, for `prm`, its initial weights): the run's base policy, so that a resumed run finds the judge
      its first step trained instead of training one on the resumed policy; None: `params`.
    prepare_trained: how a trained judge (`tcred.judges.trained.TrainedJudge`) gets its weights:
      `prepare_trained(judge, task, ctx) -> Judge`, given by whoever builds the context (the training layer's
      `tcred.training.judges.prepare_trained`: load them from the cache, or train them there first). None: a
      trained judge's `prepare` refuses, naming it; judges without weights never read it.
  """

  graphdef: Any
  params: Any
  key: jax.Array
  temperature: float
  top_p: float = 1.0
  cache_dir: pathlib.Path | None = None
  task_config: Any = None
  model_config: Any = None
  progress: bool = False
  rewards: np.ndarray | None = None
  response_ids: Sequence[Sequence[np.ndarray]] | None = None
  base_params: Any = None
  prepare_trained: Callable[..., "Judge"] | None = None


class JudgeScores(NamedTuple):
  """A batch's step scores and what computing them cost.

  Attributes:
    scores: `[B, G, K + 1]` float32, s_0 (the prompt alone) then s_1 … s_K, 0 where not valid.
    valid: `[B, G, K + 1]` bool, True on the scores a response has (s_0 always).
    tokens: token positions the judge processed or generated (its compute, comparable with the
      policy's generated tokens).
    seconds: wall time of `score_groups`.
  """

  scores: np.ndarray
  valid: np.ndarray
  tokens: int
  seconds: float


def pad_scores(rows: Sequence[Sequence[np.ndarray]], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`([B, G, W] float32 scores, [B, G, W] valid)` from B lists of G `[K_ij + 1]` score vectors.

  W = `width`, or the longest vector; a vector longer than `width` raises ValueError.
  """
  longest = max((len(s) for row in rows for s in row), default=1)
  w = longest if width is None else width
  if longest > w:
    raise ValueError(f"a response has {longest - 1} steps but the score width allows {w - 1}")
  b, g = len(rows), max((len(row) for row in rows), default=0)
  scores = np.zeros((b, g, w), np.float32)
  valid = np.zeros((b, g, w), bool)
  for i, row in enumerate(rows):
    for j, s in enumerate(row):
      scores[i, j, :len(s)] = s
      valid[i, j, :len(s)] = True
  return scores, valid


@dataclasses.dataclass(frozen=True, kw_only=True)
class Judge(abc.ABC):
  """Base class; subclasses are frozen dataclasses whose fields are the judge's settings."""

  name: ClassVar[str]
  description: ClassVar[str]
  needs_oracle: ClassVar[bool] = False
  """Whether the judge reads the task's exact prefix values (refused on tasks without an oracle)."""

  def __post_init__(self):
    require_finite(self, "judge")  # judge.alpha=inf: every real-valued setting is finite

  @abc.abstractmethod
  def score(self, task: Task, problem: Problem, response: str, ends: Sequence[int]) -> np.ndarray:
    """[K] scores in [0, 1] after each step; `ends` are the steps' exclusive character offsets."""

  @abc.abstractmethod
  def prior(self, task: Task, problem: Problem) -> float:
    """s_0: the score of the prompt alone, before any step."""

  def check_task(self, task: Task) -> None:
    """Raises ValueError when the judge cannot serve `task`."""
    if self.needs_oracle and not task.has_oracle:
      raise ValueError(f"judge {self.name!r} needs a task with an exact oracle (prefix values); "
                       f"task {task.name!r} has none")

  def scores_with_prior(self, task: Task, problem: Problem, response: str) -> np.ndarray:
    """[K + 1]: s_0, then the score after each of the response's steps."""
    ends = task.step_ends(response)
    s = np.asarray(self.score(task, problem, response, ends), np.float64)
    if s.shape != (len(ends),) or not np.all((s >= 0) & (s <= 1)):
      raise ValueError(f"judge {self.name!r} must give {len(ends)} scores in [0, 1], got {s.tolist()}")
    return np.concatenate([[self.prior(task, problem)], s])

  def prepare(self, task: Task, ctx: JudgeContext) -> "Judge":
    """The judge ready to score `task` (called once before the first batch).

    Default: `self`, after `check_task`. Trained judges load their weights from
    `ctx.cache_dir / "judges"` here, or train them when the cache has none, so an
    experiment using a trained judge needs no separate step.
    """
    del ctx
    self.check_task(task)
    return self

  def score_groups(self, task: Task, problems: Sequence[Problem], responses: Sequence[Sequence[str]],
                   ctx: JudgeContext) -> JudgeScores:
    """Scores B×G responses: `responses[b][g]` answers `problems[b]`.

    Default: `scores_with_prior` per response, a host loop that runs no model
    (`tokens` = 0). Judges that run a model override it to batch their work.
    """
    del ctx
    if len(responses) != len(problems):
      raise ValueError(f"need one list of responses per problem, got {len(responses)} for {len(problems)}")
    start = time.perf_counter()
    rows = [[self.scores_with_prior(task, problem, r) for r in group] for problem, group in zip(problems, responses)]
    scores, valid = pad_scores(rows)
    return JudgeScores(scores, valid, tokens=0, seconds=time.perf_counter() - start)


_REGISTRY: dict[str, type[Judge]] = {}


def register_judge(cls: type[Judge]) -> type[Judge]:
  """Class decorator adding a judge to the registry under `cls.name`."""
  if cls.name in _REGISTRY:
    raise ValueError(f"judge {cls.name!r} is already registered")
  _REGISTRY[cls.name] = cls
  return cls


def judge_names() -> list[str]:
  return sorted(_REGISTRY)


def judge_class(name: str) -> type[Judge]:
  if name not in _REGISTRY:
    raise ValueError(f"unknown judge {name!r}; allowed: {judge_names()}")
  return _REGISTRY[name]


def make_judge(name: str, **settings: Any) -> Judge:
  """Builds a registered judge, validating the settings against its fields."""
  cls = judge_class(name)
  allowed = {f.name for f in dataclasses.fields(cls)}
  unknown = set(settings) - allowed
  if unknown:
    raise ValueError(f"judge {name!r} has no setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
  return cls(**settings)


def parse_judge_settings(name: str, text: str) -> dict[str, Any]:
  """Settings of judge `name` from ``"key=value,key=value"`` (a credit method's `judge_settings`), each
  value converted to its field's type (int, float, bool, str); ValueError naming the unknown key or
  the bad value and what is allowed (`tcred.validation.parse_settings`)."""
  return parse_settings(judge_class(name), text, kind="judge", name=name)
