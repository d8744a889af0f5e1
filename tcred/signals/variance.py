"""Cross-rollout variance of the reference answer's likelihood (DESIGN §4.4).

Direct Reasoning Optimization, DRO (Xu et al., arXiv 2506.13351). Rollout i of
a group supplies reasoning c_i; the policy scores each token j of the reference
answer y* after it:

  ℓ_ij = log π(y*_j | x, c_i, y*_<j)          ref_logp [G, J]

Answer tokens whose likelihood varies across rollouts (large σ_j = std_i ℓ_ij)
are the ones the reasoning decides. The same σ serves twice: as token weights
of a dense reward R3 and as a query filter.

Shapes: B prompts, G group, J reference-answer tokens. Functions except
`query_keep` work on one prompt's group; `query_keep` sees the whole batch.
"""

from __future__ import annotations

import math
import numbers

import chex
import jax.numpy as jnp

from tcred.signals.registry import TokenSignal, register_signal


def _check_group(ref_logp, mask):
  ref_logp = jnp.asarray(ref_logp, jnp.float32)
  mask = jnp.asarray(mask, bool)
  if ref_logp.ndim != 2 or mask.shape != ref_logp.shape[1:]:
    raise ValueError(
        f"need ref_logp [G, J] and mask [J], got {ref_logp.shape} and {mask.shape}")
  return ref_logp, mask


def _check_tokens(x, mask, name):
  x = jnp.asarray(x, jnp.float32)
  mask = jnp.asarray(mask, bool)
  if x.ndim != 1 or x.shape != mask.shape:
    raise ValueError(f"need {name} [J] and mask [J], got {x.shape} and {mask.shape}")
  return x, mask


def reference_token_std(ref_logp, mask):
  """σ_j = std_i ℓ_ij, the spread over the group of each answer token's log-prob.

  Population std (ddof = 0) over the G rollouts, computed relative to rollout
  0 so that identical rows give exactly 0 (and G = 1 gives 0).

  Args:
    ref_logp: [G, J] ℓ_ij, log-prob of reference-answer token j after rollout
      i's reasoning.
    mask: [J] bool, True for valid answer tokens (padding may hold anything).

  Returns:
    [J] float32 σ, 0 where mask is False.
  """
  ref_logp, mask = _check_group(ref_logp, mask)
  x = jnp.where(mask[None, :], ref_logp, 0.0)  # [G, J]
  d = x - x[:1]  # [G, J] shift by rollout 0
  c = d - jnp.mean(d, axis=0, keepdims=True)  # [G, J]
  sigma = jnp.sqrt(jnp.mean(c * c, axis=0))  # [J]
  return jnp.where(mask, sigma, 0.0)


def reference_token_weights(sigma, mask):
  """w_j = σ_j / mean_{valid j'} σ_j' (mean 1 over the valid tokens).

  DRO leaves the weighting function open; this normalisation is ours. When
  every valid σ is 0 (or no token is valid) the weights are 1 on valid
  tokens. Padding gets 0; never NaN.

  Args:
    sigma: [J] float σ from `reference_token_std`.
    mask: [J] bool valid answer tokens.

  Returns:
    [J] float32 weights.
  """
  sigma, mask = _check_tokens(sigma, mask, "sigma")
  sigma = jnp.where(mask, sigma, 0.0)
  n = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
  mean = jnp.sum(sigma) / n
  safe_mean = jnp.where(mean > 0, mean, 1.0)
  w = jnp.where(mean > 0, sigma / safe_mean, 1.0)
  return jnp.where(mask, w, 0.0)


def dense_reference_reward(ref_logp, weights, mask):
  """DRO's dense reward R3_i = Σ_j w_j ℓ_ij / J_valid for each rollout.

  Args:
    ref_logp: [G, J] ℓ_ij.
    weights: [J] w_j (e.g. `reference_token_weights`).
    mask: [J] bool valid answer tokens; J_valid = their number.

  Returns:
    [G] float32 rewards; 0 when no token is valid.
  """
  ref_logp, mask = _check_group(ref_logp, mask)
  weights, _ = _check_tokens(weights, mask, "weights")
  n = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
  terms = jnp.where(mask[None, :], weights[None, :] * ref_logp, 0.0)  # [G, J]
  return jnp.sum(terms, axis=1) / n


def query_score(sigma, mask):
  """Query informativeness max_j σ_j over the valid answer tokens.

  Args:
    sigma: [J] float σ (non-negative).
    mask: [J] bool valid answer tokens.

  Returns:
    [] float32 score; 0 (the lowest possible) when no token is valid.
  """
  sigma, mask = _check_tokens(sigma, mask, "sigma")
  return jnp.max(jnp.where(mask, sigma, 0.0), initial=0.0)


def query_keep(scores, rewards, *, quantile: float):
  """DRO query filter over a batch: which prompts to keep.

  A prompt is dropped when
    - its score is in the lowest `quantile` fraction of the batch: with
      s_(0) <= ... <= s_(B−1) the sorted scores and m = floor(quantile · B),
      prompts with score strictly below s_(m) are dropped (exactly m when
      scores have no ties; ties at the threshold are kept; quantile = 0 keeps
      all, quantile = 1 drops all), or
    - its rewards are all equal (no group-relative signal; includes G = 1), as
      in DAPO's dynamic sampling.
  The caller refills the batch.

  Args:
    scores: [B] float per-prompt scores (e.g. `query_score`, vmapped).
    rewards: [B, G] outcome rewards of each prompt's group.
    quantile: static Python number in [0, 1].

  Returns:
    [B] bool keep mask.
  """
  if not isinstance(quantile, numbers.Real) or not 0.0 <= float(quantile) <= 1.0:
    raise ValueError(f"quantile must be a Python number in [0, 1], got {quantile!r}")
  scores = jnp.asarray(scores, jnp.float32)
  rewards = jnp.asarray(rewards, jnp.float32)
  if scores.ndim != 1 or rewards.ndim != 2 or rewards.shape[0] != scores.shape[0]:
    raise ValueError(
        f"need scores [B] and rewards [B, G], got {scores.shape} and {rewards.shape}")
  b = scores.shape[0]
  m = math.floor(float(quantile) * b + 1e-9)  # static number of prompts to drop
  if m >= b:
    by_score = jnp.zeros((b,), bool)
  else:
    threshold = jnp.sort(scores)[m]
    by_score = scores >= threshold
  varied = jnp.any(rewards != rewards[:, :1], axis=1)  # [B]
  return by_score & varied


# ------------------------------------------------------------------ registered token signals


def position_answer_sigma(info_gain, mask):
  """Cross-rollout σ at each position of one group: `[G, T], [G, T] -> [T]`.

  `c_{g,t} = Σ_{u≤t} IG_{g,u} = log p(y*|x, o^g_≤t) − log p(y*|x)` is rollout g's running
  answer log-likelihood (the last term is the same for the whole group, so it cancels in the
  std). `σ_t = std_g c_{g,t}` over the G rollouts (DRO's `reference_token_std`, arXiv 2506.13351,
  population std), a rollout that has ended keeping its final value (its IG is 0 from its last token
  on). σ_t is a property of position t shared by the group: how far the group's reasoning has
  diverged, in terms of the reference answer's likelihood, after t tokens. 0 where no rollout is valid.
  """
  info_gain = jnp.asarray(info_gain, jnp.float32)
  mask = jnp.asarray(mask, bool)
  chex.assert_rank([info_gain, mask], 2)
  chex.assert_equal_shape([info_gain, mask])
  c = jnp.cumsum(jnp.where(mask, info_gain, 0.0), axis=-1)  # [G, T]
  return reference_token_std(c, jnp.any(mask, axis=0))  # [T]


def running_answer_sigma(info_gain, mask):
  """`position_answer_sigma` on every valid token of the group, 0 elsewhere: `[G, T], [G, T] -> [G, T]`.

    σ_t = std_g Σ_{u≤t} IG_{g,u}   (DRO's cross-rollout σ, arXiv 2506.13351, over the running answer likelihood)
  """
  sigma = position_answer_sigma(info_gain, mask)
  return jnp.where(jnp.asarray(mask, bool), sigma[None, :], 0.0)


def running_answer_sigma_delta(info_gain, mask):
  """`|σ_t − σ_{t−1}|` on every valid token (σ_{−1} = 0: before any token all prefixes agree), `[G, T]`.

  Where the group's answer likelihoods split: the increment of `position_answer_sigma` (DRO's σ,
  arXiv 2506.13351, over the running answer likelihood).
  """
  sigma = position_answer_sigma(info_gain, mask)  # [T]
  prev = jnp.concatenate([jnp.zeros_like(sigma[:1]), sigma[:-1]])
  return jnp.where(jnp.asarray(mask, bool), jnp.abs(sigma - prev)[None, :], 0.0)


register_signal(TokenSignal(
    name="xroll-sigma", description="σ_t over the group of log p(y*|x,o≤t) at position t (shared by the group)",
    fn=running_answer_sigma, inputs=("info_gain", "mask")))
register_signal(TokenSignal(
    name="xroll-sigma-delta", description="|σ_t − σ_{t−1}|: where the group's answer likelihoods split",
    fn=running_answer_sigma_delta, inputs=("info_gain", "mask")))
