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

from tcred.credit.advantages import AdvantageMode, GroupNorm, group_advantages
from tcred.credit.base import Credit, CreditInputs, CreditMethod, register_credit
from tcred.credit.outcome import outcome_advantages, per_token, valid_tokens
from tcred.signals.entropy import FORKING_KEEP, FORKING_POOLS, FORKING_TIES, pooled_forking_mask
from tcred.signals.information import PEAK_RULES, MIInputs, mi_peaks
from tcred.signals.variance import (dense_reference_reward, query_keep, query_score, reference_token_std,
                                    reference_token_weights)


# What a token mask's loss divides by: the "kept" tokens (tcred, the 80/20 code) or every "valid" token (TRL).
MASK_NORMALISERS = ("kept", "valid")


def _check_mode(mode: str):
  AdvantageMode.parse(mode, field="credit.mode")


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class EntropyMask(GroupNorm, CreditMethod):
  """Train only on forking tokens: the top-ρ entropy fraction of the batch's valid tokens
  (arXiv 2506.01939); `keep="bottom"` trains on the rest (the bottom-(1−ρ) ablation).

  The entropy is the current policy's, from the train step's own forward pass.

  Conventions (benchmarks/results/conformance.md), defaults first:
    ties: "all" tokens tied at the threshold are kept, or "exact": exactly ceil(ρn)
      (a top-k, as the 80/20 code).
    pool: the threshold over the whole "batch" (here one batch is one micro-batch),
      per "micro-batch" of `micro_batch` consecutive sequences (the 80/20 code pools
      per micro-batch of verl's actor update), or per "sequence".
    normaliser: the loss divides by the "kept" tokens (the 80/20 code), or by all
      "valid" tokens (TRL's masked loss; the step on kept tokens is then about ρ
      times smaller).
  """

  name = "entropy-mask"
  description = "policy gradient only on the top-ρ entropy (forking) tokens of the batch"
  rho: float = 0.2
  keep: str = "top"
  mode: str = "grpo"
  ties: str = "all"
  pool: str = "batch"
  micro_batch: int = 16
  normaliser: str = "kept"

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 < self.rho <= 1.0:
      raise ValueError(f"credit.rho must be in (0, 1], got {self.rho}")
    if self.keep not in FORKING_KEEP:
      raise ValueError(f"credit.keep={self.keep!r} is not one of {FORKING_KEEP}")
    if self.ties not in FORKING_TIES:
      raise ValueError(f"credit.ties={self.ties!r} is not one of {list(FORKING_TIES)}")
    if self.pool not in FORKING_POOLS:
      raise ValueError(f"credit.pool={self.pool!r} is not one of {list(FORKING_POOLS)}")
    if isinstance(self.micro_batch, bool) or not isinstance(self.micro_batch, int) or self.micro_batch < 1:
      raise ValueError(f"credit.micro_batch must be an integer >= 1 (sequences per pool), got {self.micro_batch!r}")
    if self.normaliser not in MASK_NORMALISERS:
      raise ValueError(f"credit.normaliser={self.normaliser!r} is not one of {list(MASK_NORMALISERS)}")
    _check_mode(self.mode)

  def __call__(self, inputs: CreditInputs) -> Credit:
    valid = valid_tokens(inputs)
    kept = pooled_forking_mask(inputs.entropy, valid, rho=self.rho, keep=self.keep, ties=self.ties,
                               pool=self.pool, micro_batch=self.micro_batch)
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())
    n_kept = jnp.maximum(jnp.sum(kept), 1)
    return Credit(advantages=per_token(adv, inputs.mask), weights=kept.astype(jnp.float32),
                  metrics={"kept_entropy": jnp.sum(jnp.where(kept, inputs.entropy, 0.0)) / n_kept},
                  normaliser=valid.astype(jnp.float32) if self.normaliser == "valid" else None)


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class MIPeaks(GroupNorm, CreditMethod):
  """Train only on HSIC mutual-information peak tokens (arXiv 2506.02867): tokens whose MI
  with the reference solution's final hidden state exceeds Q3 + τ·IQR within their rollout
  (the 80/20 recipe with MI instead of entropy). MI comes from the sampling policy.

  Conventions (benchmarks/results/conformance.md), defaults first:
    peak_rule: "outlier" (Q3 + τ·IQR, the paper's text) or "top-k" (the `peak_k` = 20
      highest-MI tokens per trajectory, the released MI-Peaks code).
    mi_layer, mi_norm, mi_sigma: the hidden states and bandwidth of HSIC MI (`MIInputs`):
      the last layer (−1) "post" the final norm with σ scaled by "width" (default), or, as
      the MI-Peaks code, the layer's output "pre" the final norm with a "fixed" σ = 50.
  """

  name = "mi-peaks"
  description = "policy gradient only on HSIC mutual-information peak tokens"
  needs_extras = ("mi",)
  tau: float = 1.5
  mode: str = "grpo"
  peak_rule: str = "outlier"
  peak_k: int = 20
  mi_layer: int = -1
  mi_norm: str = "post"
  mi_sigma: str = "width"

  def __post_init__(self):
    super().__post_init__()
    if self.tau < 0:
      raise ValueError(f"credit.tau must be >= 0, got {self.tau}")
    if self.peak_rule not in PEAK_RULES:
      raise ValueError(f"credit.peak_rule={self.peak_rule!r} is not one of {list(PEAK_RULES)}")
    if isinstance(self.peak_k, bool) or not isinstance(self.peak_k, int) or self.peak_k < 1:
      raise ValueError(f"credit.peak_k must be an integer >= 1, got {self.peak_k!r}")
    try:
      self.mi_inputs()
    except ValueError as e:
      raise ValueError(f"credit.mi_layer / mi_norm / mi_sigma: {e}") from None
    _check_mode(self.mode)

  def mi_inputs(self) -> MIInputs:
    return MIInputs(layer=self.mi_layer, norm=self.mi_norm, sigma=self.mi_sigma)

  def __call__(self, inputs: CreditInputs) -> Credit:
    valid = valid_tokens(inputs)
    peaks = jax.vmap(jax.vmap(lambda m, v: mi_peaks(m, v, tau=self.tau, rule=self.peak_rule, k=self.peak_k)))(
        inputs.extras["mi"], valid)
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())
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
class MIWeight(GroupNorm, CreditMethod):
  """Scale each token's advantage by its normalised answer information gain:
  `A_{i,t} = A_i · |IG_t| / mean_t |IG_t|` (mean 1 over the sequence; DESIGN §4.3(b)).
  `mix` interpolates with plain GRPO: `w = (1 − mix) + mix · w_IG`."""

  name = "mi-weight"
  description = "advantage scaled per token by normalised answer information gain"
  needs_extras = ("info_gain",)
  mix: float = 1.0
  mode: str = "grpo"

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= self.mix <= 1.0:
      raise ValueError(f"credit.mix must be in [0, 1], got {self.mix}")
    _check_mode(self.mode)

  def __call__(self, inputs: CreditInputs) -> Credit:
    valid = valid_tokens(inputs)
    w = (1.0 - self.mix) + self.mix * information_weights(inputs.extras["info_gain"], valid)
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())
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
