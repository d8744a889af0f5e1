"""Policy-gradient losses and their aggregation (DESIGN §4.1).

Per-token quantities are `[B, G, T]` arrays (or any `[..., T]`); `weights` are
non-negative loss weights that are zero on padding. A credit method chooses the
advantages and the weights; the aggregation divides by the weights it keeps, so
an entropy mask normalises by the number of *kept* tokens (arXiv 2506.01939).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tcred.validation import require_finite

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


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
  """

  clip_low: float = 0.2
  clip_high: float = 0.2
  aggregation: str = "token-mean"
  kl_coef: float = 0.0

  def __post_init__(self):
    require_finite(self, "loss")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"loss.aggregation={self.aggregation!r} is not one of {AGGREGATIONS}")
    for name in ("clip_low", "clip_high", "kl_coef"):
      if getattr(self, name) < 0:
        raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
    if self.clip_low >= 1:
      raise ValueError(f"loss.clip_low must be < 1, got {self.clip_low}")


def ppo_clip_surrogate(logp, old_logp, advantages, *, clip_low: float, clip_high: float):
  """Per-token clipped surrogate `min(ρ A, clip(ρ, 1−ε_lo, 1+ε_hi) A)`, `ρ = exp(logp − old_logp)`.

  Returns `(surrogate, clipped)` with `clipped` True where the clipped branch is active.
  """
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * advantages
  clipped_value = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
  return jnp.minimum(unclipped, clipped_value), clipped_value < unclipped


def kl_k3(logp, ref_logp):
  """Per-token k3 estimator of KL(π‖π_ref): `exp(r) − r − 1`, `r = ref_logp − logp` (Schulman 2020)."""
  r = ref_logp - logp
  return jnp.exp(r) - r - 1.0


def aggregate(per_token: jax.Array, weights: jax.Array, *, mode: str) -> jax.Array:
  """Reduces per-token values `[..., T]` with loss weights `[..., T]` to a scalar.

  See `LossConfig.aggregation`. Empty selections give 0, never NaN.
  """
  if per_token.shape != weights.shape:
    raise ValueError(f"per_token {per_token.shape} and weights {weights.shape} differ")
  weighted = per_token * weights
  if mode == "token-mean":
    return jnp.sum(weighted) / jnp.maximum(jnp.sum(weights), 1e-8)
  if mode == "seq-mean-token-mean":
    w_seq = jnp.sum(weights, axis=-1)
    seq = jnp.sum(weighted, axis=-1) / jnp.maximum(w_seq, 1e-8)
    has = w_seq > 0
    return jnp.sum(jnp.where(has, seq, 0.0)) / jnp.maximum(jnp.sum(has), 1)
  if mode == "seq-mean-token-sum-norm":
    num_seqs = weighted[..., 0].size
    return jnp.sum(weighted) / (num_seqs * per_token.shape[-1])
  raise ValueError(f"aggregation {mode!r} is not one of {AGGREGATIONS}")
