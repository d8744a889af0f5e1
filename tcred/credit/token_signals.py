"""Credit methods built on token signals (DESIGN §4.2–4.4).

All keep the outcome advantage of the rollout and change *which* tokens train
(loss weights) or *how much* (advantage scale), or the reward itself (DRO).
Shapes: B prompts, G rollouts, T tokens, J reference-answer tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.advantages import ADVANTAGE_MODES, group_advantages
from tcred.credit.base import Credit, CreditInputs, CreditMethod, register_credit
from tcred.credit.outcome import outcome_advantages, per_token, valid_tokens
from tcred.signals.entropy import FORKING_KEEP, forking_mask
from tcred.signals.information import mi_peaks
from tcred.signals.variance import (dense_reference_reward, query_keep, query_score, reference_token_std,
                                    reference_token_weights)


def _check_mode(mode: str):
  if mode not in ADVANTAGE_MODES:
    raise ValueError(f"credit.mode={mode!r} is not one of {ADVANTAGE_MODES}")


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class EntropyMask(CreditMethod):
  """Train only on forking tokens: the top-ρ entropy fraction of the batch's valid tokens
  (arXiv 2506.01939); `keep="bottom"` trains on the rest (the bottom-(1−ρ) ablation).

  The entropy is the current policy's, from the train step's own forward pass; the
  threshold pools every valid token of the batch (the paper pools per micro-batch;
  here one batch is one micro-batch). The loss normalises by the kept tokens.
  """

  name = "entropy-mask"
  description = "policy gradient only on the top-ρ entropy (forking) tokens of the batch"
  rho: float = 0.2
  keep: str = "top"
  mode: str = "grpo"

  def __post_init__(self):
    if not 0.0 < self.rho <= 1.0:
      raise ValueError(f"credit.rho must be in (0, 1], got {self.rho}")
    if self.keep not in FORKING_KEEP:
      raise ValueError(f"credit.keep={self.keep!r} is not one of {FORKING_KEEP}")
    _check_mode(self.mode)

  def __call__(self, inputs: CreditInputs) -> Credit:
    valid = valid_tokens(inputs)
    kept = forking_mask(inputs.entropy, valid, rho=self.rho, keep=self.keep)
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode)
    n_kept = jnp.maximum(jnp.sum(kept), 1)
    return Credit(advantages=per_token(adv, inputs.mask), weights=kept.astype(jnp.float32),
                  metrics={"kept_entropy": jnp.sum(jnp.where(kept, inputs.entropy, 0.0)) / n_kept})


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class MIPeaks(CreditMethod):
  """Train only on HSIC mutual-information peak tokens (arXiv 2506.02867): tokens whose MI
  with the reference solution's final hidden state exceeds Q3 + τ·IQR within their rollout
  (the 80/20 recipe with MI instead of entropy). MI comes from the sampling policy."""

  name = "mi-peaks"
  description = "policy gradient only on HSIC mutual-information peak tokens"
  needs_extras = ("mi",)
  tau: float = 1.5
  mode: str = "grpo"

  def __post_init__(self):
    if self.tau < 0:
      raise ValueError(f"credit.tau must be >= 0, got {self.tau}")
    _check_mode(self.mode)

  def __call__(self, inputs: CreditInputs) -> Credit:
    valid = valid_tokens(inputs)
    peaks = jax.vmap(jax.vmap(lambda m, v: mi_peaks(m, v, tau=self.tau)))(inputs.extras["mi"], valid)
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode)
    return Credit(advantages=per_token(adv, inputs.mask), weights=peaks.astype(jnp.float32), metrics={})


def information_weights(info_gain: jax.Array, mask: jax.Array) -> jax.Array:
  """`[..., T]` token weights `|IG_t| / mean_t |IG_t|` over each sequence's valid tokens
  (mean 1; all ones where every |IG| is 0; 0 on padding)."""
  mag = jnp.where(mask, jnp.abs(info_gain), 0.0)
  n = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1)
  mean = jnp.sum(mag, axis=-1, keepdims=True) / n
  return jnp.where(mask, jnp.where(mean > 0, mag / jnp.where(mean > 0, mean, 1.0), 1.0), 0.0)


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class MIWeight(CreditMethod):
  """Scale each token's advantage by its normalised answer information gain:
  `A_{i,t} = A_i · |IG_t| / mean_t |IG_t|` (mean 1 over the sequence; DESIGN §4.3(b)).
  `mix` interpolates with plain GRPO: `w = (1 − mix) + mix · w_IG`."""

  name = "mi-weight"
  description = "advantage scaled per token by normalised answer information gain"
  needs_extras = ("info_gain",)
  mix: float = 1.0
  mode: str = "grpo"

  def __post_init__(self):
    if not 0.0 <= self.mix <= 1.0:
      raise ValueError(f"credit.mix must be in [0, 1], got {self.mix}")
    _check_mode(self.mode)

  def __call__(self, inputs: CreditInputs) -> Credit:
    valid = valid_tokens(inputs)
    w = (1.0 - self.mix) + self.mix * information_weights(inputs.extras["info_gain"], valid)
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode)
    return Credit(advantages=per_token(adv, inputs.mask) * w, weights=valid.astype(jnp.float32),
                  metrics={"ig_weight_max": jnp.max(jnp.where(valid, w, 0.0))})


def dro_rewards(ref_logp, answer_valid, rewards, *, coef: float):
  """DRO's mixed reward of one group: `R_i + coef · R3_i`, `R3_i = Σ_j w_j ℓ_ij / J`,
  `w_j = σ_j / mean σ` (arXiv 2506.13351). ref_logp `[G, J]`, answer_valid `[J]`, rewards `[G]`."""
  sigma = reference_token_std(ref_logp, answer_valid)
  r3 = dense_reference_reward(ref_logp, reference_token_weights(sigma, answer_valid), answer_valid)
  return rewards + coef * r3, r3


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class DroR3(CreditMethod):
  """DRO (arXiv 2506.13351): the reference answer's σ-weighted likelihood after each rollout's
  reasoning, mixed with the outcome reward, then group advantages on every token."""

  name = "dro-r3"
  description = "outcome + σ-weighted reference-answer likelihood (DRO R3), group-normalised"
  needs_extras = ("ref_logp",)
  coef: float = 0.5
  mode: str = "grpo"

  def __post_init__(self):
    if self.coef < 0:
      raise ValueError(f"credit.coef must be >= 0, got {self.coef}")
    _check_mode(self.mode)

  def __call__(self, inputs: CreditInputs) -> Credit:
    mixed, r3 = jax.vmap(lambda l, v, r: dro_rewards(l, v, r, coef=self.coef))(
        inputs.extras["ref_logp"], inputs.extras["answer_valid"], inputs.rewards)
    adv = jax.vmap(lambda r: group_advantages(r, mode=self.mode))(mixed)
    adv = jnp.where(inputs.group_valid[:, None], adv, 0.0)
    weights = valid_tokens(inputs).astype(jnp.float32)
    return Credit(advantages=per_token(adv, inputs.mask), weights=weights, metrics={"r3_mean": jnp.mean(r3)})


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class VarianceFilter(CreditMethod):
  """DRO's query filter: drop prompts whose `max_j σ_j` is in the lowest `quantile` of the
  batch, and groups whose rewards are all equal, then refill (arXiv 2506.13351).
  Training on the kept groups is plain outcome credit."""

  name = "variance-filter"
  description = "outcome credit on prompts kept by the cross-rollout σ filter (refilled)"
  needs_extras = ("ref_std",)
  quantile: float = 0.25
  mode: str = "grpo"

  def __post_init__(self):
    if not 0.0 <= self.quantile < 1.0:
      raise ValueError(f"credit.quantile must be in [0, 1), got {self.quantile}")
    _check_mode(self.mode)

  def group_filter(self, rewards: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
    scores = jax.vmap(query_score)(extras["ref_std"], extras["answer_valid"])
    return np.asarray(query_keep(scores, rewards, quantile=self.quantile))

  def __call__(self, inputs: CreditInputs) -> Credit:
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode)
    return Credit(advantages=per_token(adv, inputs.mask),
                  weights=valid_tokens(inputs).astype(jnp.float32), metrics={})
