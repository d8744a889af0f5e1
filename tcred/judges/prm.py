"""The discriminative step judge: a small decoder with a classification head (DESIGN §4.6).

`PRM` reads (prompt + response) tokens and returns one logit per step, taken
at the step's last token: p(step k is good) = sigmoid(w · h_{end_k} + b), h the
final hidden states of a `Decoder` trunk (the policy's architecture, its own
weights). It is trained by `train_prm` with binary cross-entropy on
Monte-Carlo step labels (`tcred.judges.labels`), optionally with the two
classes weighted equally (StepWiser balances its classes the same way).

Shapes: N examples, L tokens (BOS + prompt + response, right-padded), K steps.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder, positions_from_mask


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
def _train_step(model: PRM, optimizer: nnx.Optimizer, batch: StepExamples, balance: bool):
  (loss, accuracy), grads = nnx.value_and_grad(prm_loss, has_aux=True)(model, batch, balance)
  optimizer.update(model, grads)
  return loss, accuracy


def train_prm(model: PRM, data: StepExamples, config: PRMTrainConfig, *, seed: int = 0):
  """Trains `model` in place on `data`; returns the per-step (loss, accuracy) history [steps, 2]."""
  n = data.tokens.shape[0]
  if n == 0:
    raise ValueError("no labelled steps to train the judge on")
  optimizer = nnx.Optimizer(model, optax.adamw(config.learning_rate), wrt=nnx.Param)
  rng = np.random.default_rng(seed)
  history = []
  for _ in range(config.steps):
    idx = rng.choice(n, size=min(config.batch_size, n), replace=False)
    batch = StepExamples(*(jnp.asarray(x[idx]) for x in data))
    loss, accuracy = _train_step(model, optimizer, batch, config.balance)
    history.append((float(loss), float(accuracy)))
  return np.asarray(history)


def prm_probabilities(model: PRM, tokens, valid, step_pos) -> np.ndarray:
  """[N, K] p(step good) = sigmoid of the logits."""
  return np.asarray(jax.nn.sigmoid(_logits(model, jnp.asarray(tokens), jnp.asarray(valid), jnp.asarray(step_pos))))


@nnx.jit
def _logits(model: PRM, tokens, valid, step_pos):
  return model(tokens, valid, step_pos)
