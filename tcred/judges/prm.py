"""The discriminative step judge: a small decoder with a classification head (DESIGN §4.6).

`PRM` reads (prompt + response) tokens and returns one logit per step, taken
at the step's last token: p(step k is good) = sigmoid(w · h_{end_k} + b), h the
final hidden states of a `Decoder` trunk (the policy's architecture, its own
weights). It is trained by `train_prm` with binary cross-entropy on
Monte-Carlo step labels (`tcred.judges.labels`), optionally with the two
classes weighted equally (StepWiser balances its classes the same way).

The registered `prm` judge (`PRMJudge`) holds the settings (model size,
optimiser, the training data of `tcred.judges.trained.TrainedJudge`); its
`prepare` returns a `ReadyPRM` with the trained weights (trained and cached by
`tcred.training.judges`), which scores a batch of rollouts in one pass
(`score_groups`). Its s_0 is a prior, not a model output: the fraction of good
labels in its training data (the chance that a step is good before reading
any); judge credit reads only score changes, so s_0 only sets the first step's
change s_1 − s_0 on the same scale for every rollout.

Shapes: N examples, L tokens (BOS + prompt + response, right-padded), K steps.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tcred.judges.base import Judge, JudgeContext, JudgeScores, register_judge
from tcred.judges.trained import TrainedJudge
from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder, positions_from_mask
from tcred.tasks.base import Problem, Task
from tcred.validation import Choice


class StepExamples(NamedTuple):
  """Judge training data: labelled steps of rollouts.

  Attributes:
    tokens: [N, L] int, BOS + prompt + response, right-padded.
    valid: [N, L] bool, False on padding.
    step_pos: [N, K] int, the position in `tokens` of each step's last token.
    labels: [N, K] bool, True for a good step.
    label_valid: [N, K] bool, False where a rollout has fewer than K steps.
  """

  tokens: np.ndarray
  valid: np.ndarray
  step_pos: np.ndarray
  labels: np.ndarray
  label_valid: np.ndarray


class PRM(nnx.Module):
  """Decoder trunk + linear head read at the steps' last tokens."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.trunk = Decoder(dataclasses.replace(config, tie_word_embeddings=True), rngs=rngs)
    self.head = nnx.Linear(config.hidden_size, 1, rngs=rngs)

  def __call__(self, tokens: jax.Array, valid: jax.Array, step_pos: jax.Array) -> jax.Array:
    """[N, K] logits of "step k is good"."""
    hidden, _ = self.trunk(tokens, positions_from_mask(valid), valid)  # [N, L, D]
    picked = jnp.take_along_axis(hidden, step_pos[..., None], axis=1)  # [N, K, D]
    return self.head(picked)[..., 0]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PRMTrainConfig:
  """How `train_prm` trains.

  Attributes:
    steps: optimiser steps (> 0).
    batch_size: examples per step (> 0).
    learning_rate: AdamW learning rate (> 0).
    balance: weight the good and bad steps of each batch equally (StepWiser's class balance).
  """

  steps: int = 200
  batch_size: int = 32
  learning_rate: float = 3e-4
  balance: bool = True

  def __post_init__(self):
    for name in ("steps", "batch_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"judge.{name} must be a positive integer, got {value!r}")
    if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) \
        or not 0 < self.learning_rate < float("inf"):
      raise ValueError(f"judge.learning_rate must be a positive number, got {self.learning_rate!r}")


def prm_loss(model: PRM, batch: StepExamples, balance: bool) -> tuple[jax.Array, jax.Array]:
  """Masked binary cross-entropy of the step logits and the batch accuracy."""
  logits = model(batch.tokens, batch.valid, batch.step_pos)  # [N, K]
  labels = batch.labels.astype(jnp.float32)
  w = batch.label_valid.astype(jnp.float32)
  if balance:  # each class carries half the weight of the batch (a class absent: the other carries all)
    n_pos, n_neg = jnp.sum(w * labels), jnp.sum(w * (1 - labels))
    w = w * jnp.where(labels > 0, 0.5 / jnp.maximum(n_pos, 1), 0.5 / jnp.maximum(n_neg, 1))
    w = w / jnp.maximum(jnp.sum(w), 1e-12)
  else:
    w = w / jnp.maximum(jnp.sum(w), 1)
  loss = jnp.sum(w * optax.sigmoid_binary_cross_entropy(logits, labels))
  correct = ((logits > 0) == (labels > 0)) & batch.label_valid
  accuracy = jnp.sum(correct) / jnp.maximum(jnp.sum(batch.label_valid), 1)
  return loss, accuracy


@nnx.jit(static_argnames=("balance",))
def prm_train_step(model: PRM, optimizer: nnx.Optimizer, batch: StepExamples, balance: bool):
  """One AdamW step on `batch` (in place); returns (loss, accuracy)."""
  (loss, accuracy), grads = nnx.value_and_grad(prm_loss, has_aux=True)(model, batch, balance)
  optimizer.update(model, grads)
  return loss, accuracy


def prm_optimizer(model: PRM, config: PRMTrainConfig) -> nnx.Optimizer:
  return nnx.Optimizer(model, optax.adamw(config.learning_rate), wrt=nnx.Param)


def prm_batch(data: StepExamples, config: PRMTrainConfig, *, seed: int, step: int) -> StepExamples:
  """The batch of training step `step`: a pure function of (seed, step), so a resumed run repeats it."""
  n = data.tokens.shape[0]
  if n == 0:
    raise ValueError("no labelled steps to train the judge on")
  idx = np.random.default_rng([seed, step]).choice(n, size=min(config.batch_size, n), replace=False)
  return StepExamples(*(jnp.asarray(x[idx]) for x in data))


def train_prm(model: PRM, data: StepExamples, config: PRMTrainConfig, *, seed: int = 0):
  """Trains `model` in place on `data`; returns the per-step (loss, accuracy) history [steps, 2]."""
  optimizer = prm_optimizer(model, config)
  history = []
  for step in range(config.steps):
    loss, accuracy = prm_train_step(model, optimizer, prm_batch(data, config, seed=seed, step=step), config.balance)
    history.append((float(loss), float(accuracy)))
  return np.asarray(history)


def prm_probabilities(model: PRM, tokens, valid, step_pos) -> np.ndarray:
  """[N, K] p(step good) = sigmoid of the logits."""
  return np.asarray(jax.nn.sigmoid(_logits(model, jnp.asarray(tokens), jnp.asarray(valid), jnp.asarray(step_pos))))


@nnx.jit
def _logits(model: PRM, tokens, valid, step_pos):
  return model(tokens, valid, step_pos)


def encode_steps(task: Task, problems: Sequence[Problem], responses: Sequence[str],
                 response_ids: Sequence[np.ndarray] | None = None, *, width: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """PRM inputs of N rollouts: `(tokens [N, L], valid [N, L], step_pos [N, S], step_valid [N, S])`.

  A row is the prompt's ids (`tokenizer.prompt_ids`: BOS + prompt) + the response's ids (`response_ids`,
  the sampler's own ids with EOS when it ended, or `tokenizer.encode(response)`), right-padded to
  L = task.prompt_width + task.max_response_len. Step k is read at its last token, the one before its
  exclusive token end (`tokenizer.step_token_ends` of `task.step_ends(response)`). S = `width` or the
  most steps of a rollout.
  """
  tk = task.tokenizer
  length = task.prompt_width + task.max_response_len
  if response_ids is None:
    response_ids = [tk.encode(r) for r in responses]
  rows, positions = [], []
  for problem, response, ids in zip(problems, responses, response_ids, strict=True):
    prompt = tk.prompt_ids(problem.prompt)
    ids = np.asarray(ids, np.int32).reshape(-1)
    body = ids[:-1] if len(ids) and np.isin(ids[-1], tk.eos_ids) else ids
    token_ends = tk.step_token_ends(body, task.step_ends(response))
    rows.append(np.concatenate([prompt, ids]))
    positions.append(len(prompt) + np.maximum(np.asarray(token_ends, np.int64) - 1, 0))
  s = max([len(p) for p in positions] + [1]) if width is None else width
  tokens = np.full((len(rows), length), tk.pad_id, np.int32)
  valid = np.zeros((len(rows), length), bool)
  step_pos = np.zeros((len(rows), s), np.int32)
  step_valid = np.zeros((len(rows), s), bool)
  for i, (row, pos) in enumerate(zip(rows, positions)):
    if len(row) > length or len(pos) > s:
      raise ValueError(f"rollout {i} needs {len(row)} tokens and {len(pos)} steps; the budget is {length} and {s}")
    tokens[i, :len(row)] = row
    valid[i, :len(row)] = True
    step_pos[i, :len(pos)] = pos
    step_valid[i, :len(pos)] = True
  return tokens, valid, step_pos, step_valid


class PRMInit(Choice):
  """Where the PRM's decoder starts: the policy's weights (the usual PRM recipe: a process reward model is
  fine-tuned from a language model of the task) or random weights."""

  POLICY = "policy"
  SCRATCH = "scratch"


@register_judge
@dataclasses.dataclass(frozen=True, kw_only=True)
class PRMJudge(TrainedJudge):
  """The `prm` judge's settings: the model, its optimiser and its training data (`TrainedJudge`).

  Attributes:
    init: "policy" (default): the decoder is the policy's architecture and starts from the policy's
      weights (the trunk; the head is new); "scratch": a smaller decoder of `hidden_size` × `layers`
      from random weights.
    hidden_size, layers: the scratch decoder (the policy's architecture otherwise: intermediate size
      3 × hidden_size, the policy's attention heads); unused with init="policy".
    steps, batch_size, learning_rate, balance: `PRMTrainConfig`.
  """

  name = "prm"
  description = "a small decoder with a step-classification head, trained on Monte-Carlo step labels"

  init: str = "policy"
  hidden_size: int = 64
  layers: int = 2
  steps: int = 300
  batch_size: int = 32
  learning_rate: float = 1e-3
  balance: bool = True

  def __post_init__(self):
    super().__post_init__()
    PRMInit.parse(self.init, field="judge.init")
    for name in ("hidden_size", "layers"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"judge.{name} must be a positive integer, got {value!r}")
    self.train_config()

  def train_config(self) -> PRMTrainConfig:
    return PRMTrainConfig(steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                          balance=self.balance)

  def model_config(self, policy: ModelConfig) -> ModelConfig:
    """The judge's decoder: the policy's (init="policy"), or its architecture at `hidden_size` × `layers`."""
    if PRMInit.parse(self.init, field="judge.init") is PRMInit.POLICY:
      return policy
    heads = policy.num_attention_heads
    if self.hidden_size % heads:
      raise ValueError(f"judge.hidden_size ({self.hidden_size}) must be divisible by the policy's "
                       f"{heads} attention heads")
    return dataclasses.replace(policy, hidden_size=self.hidden_size, intermediate_size=3 * self.hidden_size,
                               num_hidden_layers=self.layers, head_dim=None)


SCORE_ROWS = 64  # rollouts per scoring call (the last chunk is padded: one compiled shape)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ReadyPRM(Judge):
  """A trained `prm` judge: s_k = p(step k is good) from the PRM, s_0 = `prior_score` (module docstring).

  Attributes:
    settings: the judge's settings. model: the trained PRM. prior_score: s_0.
  """

  name = "prm"
  description = PRMJudge.description

  settings: PRMJudge
  model: Any
  prior_score: float

  def prepare(self, task: Task, ctx: JudgeContext) -> Judge:
    del task, ctx
    return self

  def score(self, task: Task, problem: Problem, response: str, ends: Sequence[int]) -> np.ndarray:
    del ends  # the task's own step ends (`encode_steps`)
    tokens, valid, step_pos, step_valid = encode_steps(task, [problem], [response])
    p = prm_probabilities(self.model, tokens, valid, step_pos)
    return p[0][step_valid[0]].astype(np.float64)

  def prior(self, task: Task, problem: Problem) -> float:
    del task, problem
    return self.prior_score

  def score_groups(self, task: Task, problems: Sequence[Problem], responses: Sequence[Sequence[str]],
                   ctx: JudgeContext) -> JudgeScores:
    """All B×G rollouts through the PRM in chunks of `SCORE_ROWS`; [B, G, K + 1] scores (the responses' ids
    from `ctx.response_ids` when given, else encoded from the text)."""
    start = time.perf_counter()
    if len(responses) != len(problems):
      raise ValueError(f"need one list of responses per problem, got {len(responses)} for {len(problems)}")
    flat = [(p, r) for p, group in zip(problems, responses) for r in group]
    ids = None if ctx.response_ids is None else [x for group in ctx.response_ids for x in group]
    b, g = len(problems), max((len(group) for group in responses), default=0)
    tokens, valid, step_pos, step_valid = encode_steps(task, [p for p, _ in flat], [r for _, r in flat], ids)
    probs = []
    for i in range(0, len(flat), SCORE_ROWS):
      n = min(SCORE_ROWS, len(flat) - i)
      pad = lambda x: np.concatenate([x[i:i + n], np.repeat(x[:1], SCORE_ROWS - n, axis=0)])
      probs.append(prm_probabilities(self.model, pad(tokens), pad(valid), pad(step_pos))[:n])
    p = np.concatenate(probs) if probs else np.zeros((0, step_pos.shape[1]), np.float32)  # [B·G, S]
    s = step_pos.shape[1]
    scores = np.zeros((b, g, s + 1), np.float32)
    ok = np.zeros((b, g, s + 1), bool)
    for n, (i, j) in enumerate((i, j) for i, group in enumerate(responses) for j in range(len(group))):
      scores[i, j, 0], ok[i, j, 0] = self.prior_score, True
      scores[i, j, 1:] = np.where(step_valid[n], p[n], 0.0)
      ok[i, j, 1:] = step_valid[n]
    used = int(valid.sum())
    return JudgeScores(scores, ok, tokens=used, seconds=time.perf_counter() - start)
