"""Judges trained on Monte-Carlo step labels: their shared settings and data (DESIGN §4.6).

A trained judge (`prm`, `generative`) learns from labelled steps of rollouts of
a policy: rollouts of training prompts (never a held-out evaluation problem, in
any order or spelling: held out by `Task.problem_key`),
Monte-Carlo values Q_0 … Q_K after each step (`tcred.judges.mc.step_values`)
and one label per step (`tcred.judges.labels.mc_labels`). The data is counted
in step labels (`TrainedJudge.labels`), so judges are compared at equal numbers
of training labels.

Training reuses the training layer (SFT/GRPO loops, checkpoints, TensorBoard),
which sits above this package, so a trained judge gets its weights from the
function its `JudgeContext` carries, never through an upward import:
`ctx.prepare_trained(judge, task, ctx)`. Whoever builds the context passes the
training layer's `tcred.training.judges.prepare_trained`, which builds or reuses
the labelled data, trains the kind with its `JudgeTrainer` (the table
`tcred.training.judges.TRAINERS`: each trained kind's `train` and `load`),
caches the weights under `ctx.cache_dir/"judges"/<kind>-<hash of config>` and
loads them.

Adding a trained kind: its settings here (a `TrainedJudge` subclass, registered
with `register_judge`), its `train` and `load` functions at the training layer,
and one entry in `tcred.training.judges.TRAINERS` (a kind defined outside tcred:
`tcred.training.judges.register_judge_trainer`):

    @register_judge
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class GenerativeJudge(TrainedJudge):   # inherits labels, rule, continuations, ... (equal-label comparisons)
      name = "generative"
      description = "..."
      sft_steps: int = 100                 # the kind's own settings

    def train(job: TrainJob) -> dict[str, float]:
      # job.data: LabelledRollouts (job.judge.labels step labels); job.ctx: the policy the rollouts came from;
      # write weights and resumable checkpoints under job.directory (e.g. Checkpointer(job.directory / "ckpt"))
      # every job.judge.checkpoint_every steps; resume from them when present; job.log(step, {"judge/loss": ...})
      # writes TensorBoard scalars; job.progress: show a tqdm bar. Return the training cost {"tokens": ...}.

    def load(judge: GenerativeJudge, task, directory, ctx) -> Judge:
      # a judge ready to score (its weights restored from `directory`)

    TRAINERS = {..., "generative": JudgeTrainer(train=train, load=load)}   # tcred/training/judges.py

Shapes: N labelled rollouts, S steps (padded to the longest).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from tcred.judges.base import Judge
from tcred.judges.labels import LabelRule
from tcred.tasks.base import Problem, Task
from tcred.validation import require_seed


def _check_int(name: str, value: Any, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"judge.{name} must be an integer >= {low}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainedJudge(Judge):
  """Base of the judges trained on Monte-Carlo step labels; its fields define the training data.

  Attributes:
    labels: step labels to train on (the unit of equal-data comparisons).
    rule, gamma, alpha, n: the label rule (`tcred.judges.labels.LabelRule`; abs-q by default).
    continuations: K continuations per step for the Monte-Carlo values Q_k.
    rollouts_per_prompt: rollouts sampled for each training prompt.
    data_seed: seeds the training prompts, rollouts and continuations.
    exclude_prompts: the first held-out evaluation problems (`tcred.training.data.eval_problems`), whose
      problem keys the training data never holds: every run evaluating on at most this many is safe (256:
      the RL default).
    seed: the judge's initialisation and batch order.
    checkpoint_every: training steps between resumable checkpoints.
  """

  labels: int = 2048
  rule: str = "abs-q"
  gamma: float = 0.75
  alpha: float = 1.0
  n: int = 8
  continuations: int = 8
  rollouts_per_prompt: int = 4
  data_seed: int = 0
  exclude_prompts: int = 256
  seed: int = 0
  checkpoint_every: int = 50

  def __post_init__(self):
    super().__post_init__()
    _check_int("labels", self.labels, 1)
    _check_int("continuations", self.continuations, 1)
    _check_int("rollouts_per_prompt", self.rollouts_per_prompt, 1)
    require_seed(self.data_seed, "judge.data_seed")
    _check_int("exclude_prompts", self.exclude_prompts, 0)
    require_seed(self.seed, "judge.seed")
    _check_int("checkpoint_every", self.checkpoint_every, 1)
    self.label_rule()  # its messages name the rule's fields and allowed values

  def label_rule(self) -> LabelRule:
    return LabelRule(rule=self.rule, gamma=self.gamma, alpha=self.alpha, n=self.n)

  def data_settings(self) -> dict[str, Any]:
    """The settings that define the labelled data (equal for judges that share their training data)."""
    return {f: getattr(self, f) for f in _DATA_FIELDS}

  def settings(self) -> dict[str, Any]:
    """Every setting (the judge's cache key, with the policy and task)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def prepare(self, task: Task, ctx) -> Judge:
    """The judge with its weights, from `ctx.prepare_trained` (the module docstring)."""
    if ctx.prepare_trained is None:
      raise RuntimeError(f"judge {self.name!r} is trained: build its JudgeContext with "
                         "prepare_trained=tcred.training.judges.prepare_trained (loads its weights from the cache, "
                         "or trains them there first)")
    return ctx.prepare_trained(self, task, ctx)

  def score(self, task: Task, problem: Problem, response: str, ends: Sequence[int]) -> np.ndarray:
    raise RuntimeError(f"judge {self.name!r} has no weights yet: call prepare(task, ctx) and score with its result")

  def prior(self, task: Task, problem: Problem) -> float:
    raise RuntimeError(f"judge {self.name!r} has no weights yet: call prepare(task, ctx) and score with its result")


_DATA_FIELDS = ("labels", "rule", "gamma", "alpha", "n", "continuations", "rollouts_per_prompt", "data_seed",
                "exclude_prompts")


class LabelledRollouts(NamedTuple):
  """A trained judge's data: rollouts with Monte-Carlo step values and labels (host arrays).

  Attributes:
    problems: [N] the rollouts' problems (training prompts).
    responses: [N] response texts (without EOS); steps are `task.step_ends(response)`.
    response_ids: [N] the sampler's ids of each response (EOS included when it ended; `rollout_ids`).
    q: [N, S + 1] float64 Monte-Carlo values Q_0 … Q_S, NaN past a rollout's steps.
    labels: [N, S] bool, `mc_labels(q, rule)` per rollout (False on padding).
    label_valid: [N, S] bool, the labels to train on: a rollout's steps, cut after exactly
      `TrainedJudge.labels` in all (the last rollout may keep only its first steps).
    tokens: tokens generated to build the data (rollouts and continuations).
    seconds: wall seconds to build it.
  """

  problems: list[Problem]
  responses: list[str]
  response_ids: list[np.ndarray]
  q: np.ndarray
  labels: np.ndarray
  label_valid: np.ndarray
  tokens: int
  seconds: float


def rollout_ids(tokens: np.ndarray, mask: np.ndarray) -> list[list[np.ndarray]]:
  """B lists of G response id arrays (EOS included when it ended) from sampler rows `[B, G, T]` and their mask."""
  tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
  return [[tokens[i, j][mask[i, j]] for j in range(tokens.shape[1])] for i in range(tokens.shape[0])]


class TrainJob(NamedTuple):
  """What a kind's `train` function gets.

  Attributes:
    judge: the judge's settings.
    task: the task.
    ctx: the `JudgeContext` of the policy whose rollouts make the data (graphdef, params, model config, ...).
    data: the labelled rollouts (`judge.labels` step labels).
    directory: where the kind writes its weights and resumable checkpoints (the cache entry).
    log: `log(step, {name: scalar})` writes metrics.jsonl and TensorBoard scalars (names like "judge/loss").
    progress: show a progress bar.
  """

  judge: TrainedJudge
  task: Task
  ctx: Any
  data: LabelledRollouts
  directory: pathlib.Path
  log: Callable[[int, dict[str, float]], None]
  progress: bool


class JudgeTrainer(NamedTuple):
  """A trained kind's functions.

  Attributes:
    train: `train(job: TrainJob) -> {"tokens": ...}` trains (resuming from its checkpoints under
      `job.directory` when present), writes the final weights there and returns its cost: tokens the
      judge processed or generated while training (seconds are measured by the caller).
    load: `load(judge, task, directory, ctx) -> Judge`, a judge ready to score from the weights `train`
      wrote under `directory`.
  """

  train: Callable[[TrainJob], dict[str, float]]
  load: Callable[[TrainedJudge, Task, pathlib.Path, Any], Judge]
