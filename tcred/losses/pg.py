"""Policy-gradient losses and their aggregation (DESIGN §4.1).

Per-token quantities are `[B, G, T]` arrays (or any `[..., T]`); `weights` are
non-negative loss weights that are zero on padding. A credit method chooses the
advantages and the weights; the aggregation divides by the weights it keeps, so
an entropy mask normalises by the number of *kept* tokens (arXiv 2506.01939).
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from tcred.validation import Choice, require_finite


class Aggregation(Choice):
  """How per-token losses `[..., T]` reduce to a scalar (`aggregate`, `LossConfig.aggregation`)."""

  TOKEN_MEAN = "token-mean"
  SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
  SEQ_MEAN_TOKEN_SUM_NORM = "seq-mean-token-sum-norm"


class SumNormDivisor(Choice):
  """The constant divisor of "seq-mean-token-sum-norm": "sequences-x-T" (tcred's default: the number of
  sequences times the response budget T, a mean over sequences of the per-sequence sum / T), or "T"
  (verl's `agg_loss`: the batch's token sum / T, so the loss grows with the number of sequences)."""

  SEQUENCES_X_T = "sequences-x-T"
  T = "T"


AGGREGATIONS = Aggregation.values()
SUM_NORM_DIVISORS = SumNormDivisor.values()


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
  """PPO-clip surrogate settings.

  Attributes:
    clip_low: ε_lo, the ratio is clipped below at 1 − ε_lo.
    clip_high: ε_hi, clipped above at 1 + ε_hi (DAPO clip-higher uses 0.28).
    aggregation: one of AGGREGATIONS: "token-mean" (Σ w·l / Σ w over the batch),
      "seq-mean-token-mean" (per-sequence weighted mean, then mean over
      sequences), "seq-mean-token-sum-norm" (Dr. GRPO: Σ w·l / (sequences × T)).
    kl_coef: β of the k3 KL penalty to the reference policy (0 disables it and
      skips the reference forward pass).
    dual_clip: c of dual-clip PPO for negative advantages (arXiv 1912.09729; the
      80/20 code uses c = 3): the surrogate is max(surrogate, c·A) where A < 0, so a
      token's loss never exceeds c·|A|. 0 (default) turns it off; else c > 1.
    sum_norm_divisor: the divisor of "seq-mean-token-sum-norm", one of
      SUM_NORM_DIVISORS: "sequences-x-T" (default) or "T" (verl).
  """

  clip_low: float = 0.2
  clip_high: float = 0.2
  aggregation: str = "token-mean"
  kl_coef: float = 0.0
  dual_clip: float = 0.0
  sum_norm_divisor: str = "sequences-x-T"

  def __post_init__(self):
    require_finite(self, "loss")
    Aggregation.parse(self.aggregation, field="loss.aggregation")
    SumNormDivisor.parse(self.sum_norm_divisor, field="loss.sum_norm_divisor")
    if not (self.dual_clip == 0 or self.dual_clip > 1):
      raise ValueError(f"loss.dual_clip must be 0 (off) or > 1 (the 80/20 code: 3), got {self.dual_clip}")
    for name in ("clip_low", "clip_high", "kl_coef"):
      if getattr(self, name) < 0:
        raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
    if self.clip_low >= 1:
      raise ValueError(f"loss.clip_low must be < 1, got {self.clip_low}")


def ppo_clip_surrogate(logp, old_logp, advantages, *, clip_low: float, clip_high: float,
                       dual_clip: float = 0.0):
  """Per-token clipped surrogate `min(ρ A, clip(ρ, 1−ε_lo, 1+ε_hi) A)`, `ρ = exp(logp − old_logp)`.

  With `dual_clip = c > 0` (static), tokens with A < 0 take `max(that, c·A)`
  (dual-clip PPO: the loss −surrogate is capped at c·|A| however large ρ gets).

  Returns `(surrogate, clipped)` with `clipped` True where the clipped branch is active.
  """
  chex.assert_equal_shape([logp, old_logp, advantages])
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * advantages
  clipped_value = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
  surrogate = jnp.minimum(unclipped, clipped_value)
  if dual_clip > 0:
    surrogate = jnp.where(advantages < 0, jnp.maximum(surrogate, dual_clip * advantages), surrogate)
  return surrogate, clipped_value < unclipped


def kl_k3(logp, ref_logp):
  """Per-token k3 estimator of KL(π‖π_ref): `exp(r) − r − 1`, `r = ref_logp − logp` (Schulman 2020)."""
  chex.assert_equal_shape([logp, ref_logp])
  r = ref_logp - logp
  return jnp.exp(r) - r - 1.0


def aggregate(per_token: jax.Array, weights: jax.Array, *, mode: str, normaliser: jax.Array | None = None,
              sum_norm_divisor: str = "sequences-x-T") -> jax.Array:
  """Reduces per-token values `[..., T]` with loss weights `[..., T]` to a scalar.

  See `LossConfig.aggregation`. `normaliser` (`[..., T]`, default: `weights`) is
  what the means divide by: Σ w·l / Σ normaliser (token-mean), per sequence
  likewise (seq-mean-token-mean). "seq-mean-token-sum-norm" divides by a
  constant, `sum_norm_divisor` (`SUM_NORM_DIVISORS`). Empty selections give 0,
  never NaN.
  """
  mode = Aggregation.parse(mode, field="aggregation")
  norm = weights if normaliser is None else normaliser
  chex.assert_equal_shape([per_token, weights, norm])
  weighted = per_token * weights
  if mode is Aggregation.TOKEN_MEAN:
    return jnp.sum(weighted) / jnp.maximum(jnp.sum(norm), 1e-8)
  if mode is Aggregation.SEQ_MEAN_TOKEN_MEAN:
    w_seq = jnp.sum(norm, axis=-1)
    seq = jnp.sum(weighted, axis=-1) / jnp.maximum(w_seq, 1e-8)
    has = w_seq > 0
    return jnp.sum(jnp.where(has, seq, 0.0)) / jnp.maximum(jnp.sum(has), 1)
  divisor = SumNormDivisor.parse(sum_norm_divisor, field="sum_norm_divisor")  # SEQ_MEAN_TOKEN_SUM_NORM
  num_seqs = weighted[..., 0].size if divisor is SumNormDivisor.SEQUENCES_X_T else 1
  return jnp.sum(weighted) / (num_seqs * per_token.shape[-1])
