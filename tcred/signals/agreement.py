"""Agreement between token signals, and the concentration of credit, on one batch (issue 25 item 5).

Logged by the train step every step (`rl_train_step(..., agreement=True)`, the default), for every pair
of the run's computed signals (`step_signal_names`: the registered signals of role "signal" whose inputs
the step has: entropy and surprisal always, plus those reading the extras the run's credit method
computes anyway, e.g. info-gain or hsic-mi):

  agreement/<a>__<b>/jaccard    |T_a ∩ T_b| / |T_a ∪ T_b|, T_s the top-ρ (20%) valid tokens by s, pooled
                                over the batch (`forking_mask`, ties at the threshold kept)
  agreement/<a>__<b>/spearman   Spearman rank correlation of a and b over the valid tokens (average ranks)
  agreement/credit_gini         Gini coefficient of the tokens' credit magnitudes c_t = w_t · |A_t|
  agreement/credit_effective_ratio  (Σ c_t)² / (n Σ c_t²): the effective share of the n valid tokens
                                that carry the credit (1: equal credit everywhere)

Undefined values (no valid token; a constant signal's rank correlation; no credit at all) are 0, so that
logs stay finite. All functions are jittable and pool every leading dimension.

Shapes: B prompts, G rollouts, T response tokens; `[...]` any leading dimensions.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp

from tcred.signals.entropy import forking_mask
from tcred.signals.registry import STEP_INPUTS, get_signal, signal_names

AGREEMENT_RHO = 0.2


def top_fraction_jaccard(a, b, mask, *, rho: float = AGREEMENT_RHO):
  """`[..., T] x 3 -> scalar`: Jaccard of the top-ρ valid tokens by `a` and by `b` (0 with no valid token)."""
  chex.assert_equal_shape([a, b, mask])
  return set_jaccard(forking_mask(a, mask, rho=rho), forking_mask(b, mask, rho=rho))


def set_jaccard(top_a, top_b):
  """`[...] bool x 2 -> scalar`: |A ∩ B| / |A ∪ B|, 0 when both are empty."""
  union = jnp.sum(top_a | top_b)
  return jnp.where(union > 0, jnp.sum(top_a & top_b) / jnp.maximum(union, 1), 0.0)


def average_ranks(x, mask):
  """`[...]` float, `[...]` bool -> `[...]` 1-based average ranks among the valid entries (ties share the mean
  of their ranks, as `scipy.stats.rankdata`), 0 on invalid entries.

  One sort: in sorted order, a tie run spans positions [start, end] (running max of run starts, reversed
  running min of run ends), and every member gets (start + end) / 2 + 1.
  """
  shape = jnp.shape(x)
  mask = jnp.asarray(mask, bool).reshape(-1)
  key = jnp.where(mask, jnp.asarray(x, jnp.float32).reshape(-1), jnp.inf)  # invalid entries sort last
  m = key.shape[0]
  if m == 0:
    return jnp.zeros(shape, jnp.float32)
  idx = jnp.arange(m)
  srt, order = jax.lax.sort((key, idx), num_keys=1)  # [M] sorted keys and where they came from
  differs = srt[1:] != srt[:-1]  # [M − 1]
  start = jax.lax.cummax(jnp.where(jnp.concatenate([jnp.array([True]), differs]), idx, 0))
  end = jax.lax.cummin(jnp.where(jnp.concatenate([differs, jnp.array([True])]), idx, m), reverse=True)
  ranks = jnp.zeros((m,), jnp.float32).at[order].set((start + end) / 2.0 + 1.0)
  return jnp.where(mask, ranks, 0.0).reshape(shape)


def spearman(a, b, mask):
  """`[..., T] x 3 -> scalar`: Spearman's ρ of `a` and `b` over the valid tokens (the Pearson correlation of
  their average ranks, as `scipy.stats.spearmanr`); 0 when either is constant or fewer than 2 are valid."""
  chex.assert_equal_shape([a, b, mask])
  return rank_correlation(average_ranks(a, mask), average_ranks(b, mask), mask)


def rank_correlation(ra, rb, mask):
  """`[...] x 3 -> scalar`: the Pearson correlation of two rank arrays over the valid entries (Spearman's ρ
  given `average_ranks`); 0 when either is constant."""
  m = jnp.asarray(mask, bool).reshape(-1)
  ra, rb = ra.reshape(-1), rb.reshape(-1)
  n = jnp.maximum(jnp.sum(m), 1)
  ca = jnp.where(m, ra - jnp.sum(ra) / n, 0.0)
  cb = jnp.where(m, rb - jnp.sum(rb) / n, 0.0)
  den = jnp.sqrt(jnp.sum(ca * ca) * jnp.sum(cb * cb))
  return jnp.where(den > 0, jnp.sum(ca * cb) / jnp.where(den > 0, den, 1.0), 0.0)


def gini(x, mask):
  """`[...] x 2 -> scalar`: Gini coefficient of the non-negative values `x` on the valid entries,
  `Σ_i (2i − n − 1) x_(i) / (n Σ x)` with `x_(i)` ascending; 0 when every value is 0 or none is valid."""
  chex.assert_equal_shape([x, mask])
  m = jnp.asarray(mask, bool).reshape(-1)
  n = jnp.sum(m)
  s = jax.lax.sort(jnp.where(m, jnp.asarray(x, jnp.float32).reshape(-1), jnp.inf))  # valid first, ascending
  i = jnp.arange(1, s.shape[0] + 1)
  s = jnp.where(i <= n, s, 0.0)
  total = jnp.sum(s)
  num = jnp.sum((2 * i - n - 1) * s)
  return jnp.where(total > 0, num / (jnp.maximum(n, 1) * jnp.where(total > 0, total, 1.0)), 0.0)


def effective_ratio(x, mask):
  """`[...] x 2 -> scalar`: `(Σ x)² / (n Σ x²)` over the n valid entries (Kish's effective sample size over
  n): 1 when every valid value is equal, 1/n when one value carries everything; 0 when every value is 0."""
  chex.assert_equal_shape([x, mask])
  m = jnp.asarray(mask, bool)
  v = jnp.where(m, jnp.asarray(x, jnp.float32), 0.0)
  sq = jnp.sum(v * v)
  return jnp.where(sq > 0, jnp.sum(v) ** 2 / (jnp.maximum(jnp.sum(m), 1) * jnp.where(sq > 0, sq, 1.0)), 0.0)


def step_signal_names(available: Sequence[str]) -> tuple[str, ...]:
  """The registered signals of role "signal" whose inputs are all in `available` (array names, beside
  `STEP_INPUTS`), in registration order: the signals a train step computes at no extra forward pass."""
  have = set(STEP_INPUTS) | set(available)
  return tuple(n for n in signal_names(roles=("signal",)) if set(get_signal(n).inputs) <= have)


def agreement_metrics(scores: Mapping[str, object], mask, credit, *, rho: float = AGREEMENT_RHO) -> dict:
  """The agreement scalars (module docstring) of one batch.

  Args:
    scores: `{signal name: [B, G, T] scores}` (two or more for any pair metric).
    mask: `[B, G, T]` bool valid tokens (filler groups excluded).
    credit: `[B, G, T]` non-negative credit magnitudes `w_t · |A_t|`.

  Returns:
    `{"agreement/<a>__<b>/jaccard": scalar, ".../spearman": scalar, ..., "agreement/credit_gini": scalar,
    "agreement/credit_effective_ratio": scalar}`, pairs in the order of `scores`.
  """
  out = {}
  top = {n: forking_mask(s, mask, rho=rho) for n, s in scores.items()}  # once per signal, not per pair
  ranks = {n: average_ranks(s, mask) for n, s in scores.items()}
  for a, b in itertools.combinations(scores, 2):
    out[f"agreement/{a}__{b}/jaccard"] = set_jaccard(top[a], top[b])
    out[f"agreement/{a}__{b}/spearman"] = rank_correlation(ranks[a], ranks[b], mask)
  out["agreement/credit_gini"] = gini(credit, mask)
  out["agreement/credit_effective_ratio"] = effective_ratio(credit, mask)
  return out
