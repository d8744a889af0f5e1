"""Credit from a step judge: process advantages added to the outcome advantage (DESIGN §4.6).

For rollout i of a group with step scores s_{i,0} … s_{i,K_i} (s_0: the prompt
alone), the process advantage of step k is the score change

  d_{i,k} = s_{i,k} − s_{i,k−1},

normalised over all valid steps of the group's rollouts with the group
normaliser (`group_advantages`: GRPO's (d − mean) / (std + eps)), and spread
over the tokens of step k. A token's advantage is then

  A_{i,t} = A_i + λ · d̂_{i, k(t)},

A_i the outcome advantage. With λ = 0 it is GRPO exactly. The score-change form
is the "progress" reward of process verifiers (arXiv 2410.08146): a step is
credited for what it changed, not for the value it inherited.

Shapes: G rollouts of one group, K steps (padded to the longest), T tokens.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from tcred.signals.group import group_advantages
from tcred.validation import Choice


def token_steps(ends: Sequence[int], length: int, width: int) -> np.ndarray:
  """[width] int32 step of each token: k in 1..K for the tokens of step k, 0 on padding.

  Args:
    ends: exclusive token offsets where the K steps end (ascending).
    length: the number of real tokens of the response (EOS included); tokens at
      or after the last end (EOS) belong to the last step.
    width: T, the padded width.
  """
  out = np.zeros(width, np.int32)
  if length > width:
    raise ValueError(f"response length {length} exceeds the width {width}")
  if not ends:
    return out
  positions = np.arange(length)
  out[:length] = np.minimum(np.searchsorted(np.asarray(ends), positions, side="right") + 1, len(ends))
  return out


class ProcessNorm(Choice):
  """How `process_advantages` scales the score changes d_{i,k} of a group.

  GROUP: (d − mean) / (std + eps) over the group's valid steps (the judge credit's default, §4.6): a step
    is credited relative to the group's average change, so a step that changed nothing gets
    −mean/std, positive when the group's mean change is negative (also after a fatal step).
  NONE: d itself (the policy-value control: A^π = V(after) − V(before), VinePPO's advantage): a step that
    changed nothing gets exactly 0.
  """

  GROUP = "group"
  NONE = "none"


def steps_to_tokens(per_step, steps, mask):
  """[G, T] float32: each valid token's value of its step, `per_step[g, steps[g, t]]`, 0 off the steps.

  Args:
    per_step: [G, K + 1] a value per step (column 0, "no step", is never read).
    steps: [G, T] int, `token_steps` per rollout (0: no step, padding).
    mask: [G, T] bool response mask.
  """
  per_step = jnp.asarray(per_step, jnp.float32)
  steps = jnp.asarray(steps, jnp.int32)
  on_step = jnp.asarray(mask, bool) & (steps > 0)
  gathered = jnp.take_along_axis(per_step, jnp.clip(steps, 0, per_step.shape[1] - 1), axis=1)
  return jnp.where(on_step, gathered, 0.0)


def process_advantages(scores, score_valid, steps, mask, *, eps: float = 1e-6, ddof: int = 0, norm: str = "group"):
  """[G, T] float32: the (by default group-normalised) score change of each token's step, 0 off the steps.

  Args:
    scores: [G, K + 1] judge scores s_0 … s_K per rollout.
    score_valid: [G, K + 1] bool, True where the rollout has that step (s_0 is
      valid for every real rollout).
    steps: [G, T] int, `token_steps` per rollout (0: no step, padding).
    mask: [G, T] bool response mask.
    eps, ddof: the group normaliser's conventions (`group_advantages`).
    norm: a `ProcessNorm` (static): "group" (default) normalises the changes over the group's valid
      steps, "none" keeps them as they are.
  """
  norm = ProcessNorm.parse(norm, field="norm")
  scores = jnp.asarray(scores, jnp.float32)
  score_valid = jnp.asarray(score_valid, bool)
  steps = jnp.asarray(steps, jnp.int32)
  mask = jnp.asarray(mask, bool)
  g, k1 = scores.shape
  if score_valid.shape != (g, k1) or steps.shape != mask.shape or steps.shape[0] != g:
    raise ValueError(f"need scores/score_valid [G, K+1] and steps/mask [G, T], got {scores.shape}, "
                     f"{score_valid.shape}, {steps.shape}, {mask.shape}")
  delta = scores[:, 1:] - scores[:, :-1]  # [G, K]
  valid = score_valid[:, 1:] & score_valid[:, :-1]  # [G, K]
  if norm is ProcessNorm.GROUP:
    change = group_advantages(delta.reshape(-1), mask=valid.reshape(-1), eps=eps, ddof=ddof).reshape(g, k1 - 1)
  else:
    change = jnp.where(valid, delta, 0.0)
  per_step = jnp.concatenate([jnp.zeros((g, 1), jnp.float32), change], axis=1)  # [G, K+1]
  return steps_to_tokens(per_step, steps, mask)


def judge_token_advantages(outcome, process, *, lam: float):
  """[G, T]: A_i + λ · d̂ (`process_advantages`), outcome `[G]`, process `[G, T]`."""
  outcome = jnp.asarray(outcome, jnp.float32)
  process = jnp.asarray(process, jnp.float32)
  return outcome[:, None] + lam * process


def step_change_per_token(scores: np.ndarray, score_valid: np.ndarray, steps: np.ndarray) -> np.ndarray:
  """`[..., T]` float64 |s_k − s_{k−1}| of each token's step k (`token_steps`), 0 on padding (host side).

  The judge rows of the identifiability study: a judge's step score change spread over the step's
  tokens (absolute, as the study ranks decisive tokens of either sign).

  Args:
    scores, score_valid: `[..., K + 1]` judge scores s_0 … s_K and their validity.
    steps: `[..., T]` int step of each token (0: padding).
  """
  scores = np.asarray(scores, np.float64)
  score_valid = np.asarray(score_valid, bool)
  change = np.where(score_valid[..., 1:] & score_valid[..., :-1], np.abs(scores[..., 1:] - scores[..., :-1]), 0.0)
  per_step = np.concatenate([np.zeros(change.shape[:-1] + (1,)), change], axis=-1)  # [..., K + 1], step 0: none
  steps = np.asarray(steps)
  return np.where(steps > 0, np.take_along_axis(per_step, np.clip(steps, 0, per_step.shape[-1] - 1), axis=-1), 0.0)
