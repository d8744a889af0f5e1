"""Credit methods of the variance family (DESIGN §4.4): DRO's reward and query filter.

The token-signal masks and weights (`entropy-mask`, `mi-peaks`, `mi-weight`, `surprisal-*`, and the
generic `signal-mask` / `signal-peaks` / `signal-weight`) are in `tcred.credit.signal_methods`.
Shapes: B prompts, G rollouts, T tokens, J reference-answer tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.advantages import AdvantageMode, GroupNorm, group_advantages
from tcred.credit.base import Credit, CreditInputs, CreditMethod, register_credit
from tcred.credit.outcome import outcome_advantages, per_token, valid_tokens
from tcred.signals.variance import (dense_reference_reward, query_keep, query_score, reference_token_std,
                                    reference_token_weights)


def _check_mode(mode: str):
  AdvantageMode.parse(mode, field="credit.mode")


def dro_rewards(ref_logp, answer_valid, rewards, *, coef: float):
  """DRO's mixed reward of one group: `R_i + coef · R3_i`, `R3_i = Σ_j w_j ℓ_ij / J`,
  `w_j = σ_j / mean σ` (arXiv 2506.13351). ref_logp `[G, J]`, answer_valid `[J]`, rewards `[G]`."""
  sigma = reference_token_std(ref_logp, answer_valid)
  r3 = dense_reference_reward(ref_logp, reference_token_weights(sigma, answer_valid), answer_valid)
  return rewards + coef * r3, r3


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class DroR3(GroupNorm, CreditMethod):
  """DRO (arXiv 2506.13351): the reference answer's σ-weighted likelihood after each rollout's
  reasoning, mixed with the outcome reward, then group advantages on every token."""

  name = "dro-r3"
  description = "outcome + σ-weighted reference-answer likelihood (DRO R3), group-normalised"
  needs_extras = ("ref_logp",)
  coef: float = 0.5
  mode: str = "grpo"

  def __post_init__(self):
    super().__post_init__()
    if self.coef < 0:
      raise ValueError(f"credit.coef must be >= 0, got {self.coef}")
    _check_mode(self.mode)

  def __call__(self, inputs: CreditInputs) -> Credit:
    mixed, r3 = jax.vmap(lambda l, v, r: dro_rewards(l, v, r, coef=self.coef))(
        inputs.extras["ref_logp"], inputs.extras["answer_valid"], inputs.rewards)
    adv = jax.vmap(lambda r: group_advantages(r, mode=self.mode, **self.group_norm()))(mixed)
    adv = jnp.where(inputs.group_valid[:, None], adv, 0.0)
    weights = valid_tokens(inputs).astype(jnp.float32)
    return Credit(advantages=per_token(adv, inputs.mask), weights=weights, metrics={"r3_mean": jnp.mean(r3)})


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class VarianceFilter(GroupNorm, CreditMethod):
  """DRO's query filter: drop prompts whose `max_j σ_j` is in the lowest `quantile` of the
  batch, and groups whose rewards are all equal, then refill (arXiv 2506.13351).
  Training on the kept groups is plain outcome credit."""

  name = "variance-filter"
  description = "outcome credit on prompts kept by the cross-rollout σ filter (refilled)"
  needs_extras = ("ref_std",)
  quantile: float = 0.25
  mode: str = "grpo"

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= self.quantile < 1.0:
      raise ValueError(f"credit.quantile must be in [0, 1), got {self.quantile}")
    _check_mode(self.mode)

  def group_filter(self, rewards: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
    scores = jax.vmap(query_score)(extras["ref_std"], extras["answer_valid"])
    return np.asarray(query_keep(scores, rewards, quantile=self.quantile))

  def __call__(self, inputs: CreditInputs) -> Credit:
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())
    return Credit(advantages=per_token(adv, inputs.mask),
                  weights=valid_tokens(inputs).astype(jnp.float32), metrics={})
