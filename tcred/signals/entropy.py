"""Token entropy signals (DESIGN §4.2).

- `forking_mask`: the high-entropy "forking token" mask of the 80/20 recipe
  (arXiv 2506.01939) and its bottom-fraction ablation.
- `token_logprobs_and_entropy` (fused log-probs and entropy from hidden states,
  never materialising [..., T, V] logits) is implemented in
  `tcred.models.logprobs` and re-exported at the bottom of this module.

Shapes: B prompts, G group, N sequences, T tokens.
"""

from __future__ import annotations

import fractions
import numbers

import chex
import jax
import jax.numpy as jnp

from tcred.signals.registry import TokenSignal, register_signal

FORKING_KEEP = ("top", "bottom")
# Ties at the threshold: "all" valid tokens with H >= τ_ρ are kept (tcred's default), or "exact":
# exactly ceil(ρ n), as a top-k over the entropies (the 80/20 code), tied tokens taken in row-major order.
FORKING_TIES = ("all", "exact")
# Over which tokens the threshold is taken: the whole batch (tcred's default), consecutive micro-batches
# of sequences (the 80/20 code computes it inside each micro-batch of verl's actor update), or each sequence.
FORKING_POOLS = ("batch", "micro-batch", "sequence")

# `rho` is read as the nearest fraction p/q with q <= this bound, so that the
# number of kept tokens ceil(rho * n) is computed in exact int32 arithmetic.
_RHO_MAX_DENOMINATOR = 10_000


def _ceil_fraction_times(n, rho: float):
  """ceil(rho * n) for a traced int32 `n` and a static `rho` in [0, 1], exactly.

  With rho = p/q and n = a q + b (0 <= b < q): ceil(rho n) = a p + ceil(b p / q).
  Every intermediate stays below max(n, q²) so int32 does not overflow.
  """
  frac = fractions.Fraction(rho).limit_denominator(_RHO_MAX_DENOMINATOR)
  p, q = frac.numerator, frac.denominator
  return (n // q) * p + ((n % q) * p + q - 1) // q


def _order_key(x):
  """float32 [M] -> uint32 [M] with the same order (−inf < … < −0.0 < +0.0 < … < +inf).

  Negative floats have all bits flipped, non-negative ones only the sign bit.
  """
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))


def _from_order_key(key):
  """Inverse of `_order_key`."""
  bits = jnp.where((key >> 31) == 1, key & jnp.uint32(0x7FFFFFFF), ~key)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _kth_largest(x, k):
  """The k-th largest value of float32 x [M] (1 <= k <= M, traced), exactly.

  Radix select on the order-preserving uint32 keys: the answer is the largest
  key `a` with #{i: key_i >= a} >= k, built from the most significant bit down
  (set a bit whenever at least k keys stay >= the candidate): 32 passes of one
  compare-and-count over [M], instead of sorting [M] (XLA's CPU sort is
  comparator-based and ~10× slower here; `lax.top_k` with k = ceil(ρ M) was
  ~2× slower than this). The result is an element of x, so comparisons with it
  equal comparisons with the sorted order's k-th entry, ties included.
  """
  key = _order_key(x)  # [M]

  def set_bit(i, ans):
    cand = ans | (jnp.uint32(0x80000000) >> i.astype(jnp.uint32))
    return jnp.where(jnp.sum(key >= cand, dtype=jnp.int32) >= k, cand, ans)

  return _from_order_key(jax.lax.fori_loop(0, 32, set_bit, jnp.uint32(0)))


def forking_mask(entropy, mask, *, rho: float, keep: str = "top", ties: str = "all"):
  """Mask of the top-ρ fraction of valid tokens by entropy (or its complement).

  Forking tokens (Wang et al., "Beyond the 80/20 Rule", arXiv 2506.01939):
  with n the number of valid tokens and k = ceil(ρ n), the threshold τ_ρ is the
  k-th largest valid entropy (τ_ρ = +inf when k = 0), i.e. the (1 − ρ) quantile
  of H over the valid tokens in the "k-th largest" convention. Then

    keep="top":    m_t ∧ (H_t ≥ τ_ρ)   — the forking tokens; exactly k tokens
                                          when valid entropies have no ties
                                          (ties at τ_ρ are all kept);
    keep="bottom": m_t ∧ (H_t < τ_ρ)   — the complement within the valid
                                          tokens; the paper's "bottom 80%"
                                          ablation is keep="bottom", rho=0.2.

  `ties="exact"` keeps exactly k tokens: those with H_t > τ_ρ, then tokens
  with H_t = τ_ρ in row-major order until k are kept (a top-k, as the 80/20
  code's `torch.topk`); keep="bottom" is then its complement.

  Pooling: the quantile is taken over ALL valid tokens of the whole array
  passed in (every leading dimension pooled, e.g. the whole [B, G, T] batch of
  one train step). The paper pools per micro-batch; pass a micro-batch to get
  that behaviour.

  Special cases: rho = 1 with keep="top" keeps every valid token; rho = 0 keeps
  none (keep="bottom" then keeps every valid token). No valid token gives all
  False. Invalid positions of `entropy` may hold anything (even NaN).

  Args:
    entropy: [..., T] float token entropies (e.g. [B, G, T] or [N, T]).
    mask: [..., T] bool, True for valid response tokens.
    rho: static Python number in [0, 1], the kept fraction. It is read as the
      nearest fraction with denominator <= 10,000 (exact for any rho with at
      most four decimals), so k = ceil(ρ n) is computed exactly.
    keep: "top" or "bottom" (static).
    ties: one of `FORKING_TIES` (static).

  Returns:
    [..., T] bool mask, False wherever `mask` is False.
  """
  if keep not in FORKING_KEEP:
    raise ValueError(f"keep={keep!r} is not one of {FORKING_KEEP}")
  if ties not in FORKING_TIES:
    raise ValueError(f"ties={ties!r} is not one of {FORKING_TIES}")
  if not isinstance(rho, numbers.Real) or not 0.0 <= float(rho) <= 1.0:
    raise ValueError(f"rho must be a Python number in [0, 1], got {rho!r}")
  entropy = jnp.asarray(entropy, jnp.float32)
  mask = jnp.asarray(mask, bool)
  if entropy.ndim < 1 or entropy.shape != mask.shape:
    raise ValueError(
        f"entropy [..., T] and mask must have the same shape, got {entropy.shape} "
        f"and {mask.shape}")

  flat = jnp.where(mask, entropy, -jnp.inf).reshape(-1)  # [M], M = prod(shape)
  if flat.shape[0] == 0:
    return mask
  n = jnp.sum(mask, dtype=jnp.int32)
  k = _ceil_fraction_times(n, float(rho))  # number of tokens to keep, 0 <= k <= n
  threshold = jnp.where(k > 0, _kth_largest(flat, k), jnp.inf)
  if ties == "exact":
    above = mask & (entropy > threshold)
    tied = mask & (entropy == threshold)
    rank = jnp.cumsum(tied.reshape(-1), dtype=jnp.int32).reshape(tied.shape)  # 1-based among the ties
    top = above | (tied & (rank <= k - jnp.sum(above, dtype=jnp.int32)))
    return top if keep == "top" else mask & ~top
  if keep == "top":
    return mask & (entropy >= threshold)
  return mask & (entropy < threshold)


def pooled_forking_mask(entropy, mask, *, rho: float, keep: str = "top", ties: str = "all",
                        pool: str = "batch", micro_batch: int = 1):
  """`forking_mask` with the threshold taken per pool of sequences.

  pool="batch": one threshold over every valid token of `[..., T]` (tcred's
  default); "sequence": one per sequence (row of T); "micro-batch": one per
  `micro_batch` consecutive sequences of the flattened leading dimensions
  (e.g. [B, G] in row-major order; the last pool may be shorter).

  Args:
    entropy, mask: `[..., T]` as in `forking_mask`; rho, keep, ties: as there.
    pool: one of `FORKING_POOLS` (static); micro_batch: sequences per pool (static, ≥ 1).

  Returns:
    `[..., T]` bool.
  """
  if pool not in FORKING_POOLS:
    raise ValueError(f"pool={pool!r} is not one of {FORKING_POOLS}")
  fm = lambda e, m: forking_mask(e, m, rho=rho, keep=keep, ties=ties)
  if pool == "batch":
    return fm(entropy, mask)
  entropy = jnp.asarray(entropy, jnp.float32)
  mask = jnp.asarray(mask, bool)
  shape = mask.shape
  t = shape[-1]
  e2, m2 = entropy.reshape(-1, t), mask.reshape(-1, t)  # [N, T]
  size = 1 if pool == "sequence" else int(micro_batch)
  if size < 1:
    raise ValueError(f"micro_batch must be >= 1, got {micro_batch!r}")
  n = e2.shape[0]
  pad = -n % size
  e2 = jnp.pad(e2, ((0, pad), (0, 0)))
  m2 = jnp.pad(m2, ((0, pad), (0, 0)))  # padded sequences are invalid everywhere
  out = jax.vmap(fm)(e2.reshape(-1, size, t), m2.reshape(-1, size, t))  # [N/size, size, T]
  return out.reshape(-1, t)[:n].reshape(shape)

from tcred.models.logprobs import token_logprobs_and_entropy  # noqa: E402,F401  (public API)


# ------------------------------------------------------------------ registered token signals


def token_entropy(entropy, mask):
  """The forking-token signal of one group (arXiv 2506.01939): `[G, T], [G, T] -> [G, T]`.

    H_t = −Σ_v π(v | x, o_<t) log π(v | x, o_<t)   (nats, at the sampling temperature)

  High-entropy tokens are where the policy forks between continuations. 0 on padding.
  """
  chex.assert_rank([entropy, mask], 2)
  chex.assert_equal_shape([entropy, mask])
  return jnp.where(mask, jnp.asarray(entropy, jnp.float32), 0.0)


def surprisal(logp, mask):
  """Surprisal of the sampled token, one group: `[G, T], [G, T] -> [G, T]`.

    s_t = −log π(o_t | x, o_<t)

  EPTree / TreeRL forks at the tokens of highest −log p as a cheap entropy proxy (arXiv 2506.11902);
  the identifiability study finds it the best identifier of decisive tokens on countdown. 0 on padding.
  """
  chex.assert_rank([logp, mask], 2)
  chex.assert_equal_shape([logp, mask])
  return jnp.where(mask, -jnp.asarray(logp, jnp.float32), 0.0)


RSI_ENTROPY_FLOOR = 1e-8
"""The entropy floor of `relative_surprisal` (an exactly deterministic position has H = 0)."""


def relative_surprisal(logp, entropy, mask):
  """Relative Surprisal Index of one group (RSI, arXiv 2606.31575): `[G, T] x 3 -> [G, T]`.

    RSI_t = −log π(o_t | x, o_<t) / max(H_t, 1e-8)

  The sampled token's surprisal relative to its expected value, the entropy: about 1 for a typical draw, below 1
  for a token likelier than the distribution's typical one, far above 1 for a tail draw at a confident position.
  The paper's RSI-S keeps the tokens with RSI inside an interval (`rsi-s`). The formula is the one stated with the
  paper's reference in a public re-implementation (open-instruct's token selection); the paper's own code was not
  available to us. 0 on padding.
  """
  chex.assert_rank([logp, entropy, mask], 2)
  chex.assert_equal_shape([logp, entropy, mask])
  h = jnp.maximum(jnp.asarray(entropy, jnp.float32), RSI_ENTROPY_FLOOR)
  return jnp.where(mask, -jnp.asarray(logp, jnp.float32) / h, 0.0)


register_signal(TokenSignal(name="entropy", description="entropy H_t of the policy's next-token distribution (nats)",
                            fn=token_entropy, inputs=("entropy", "mask")))
register_signal(TokenSignal(name="surprisal", description="−log p of the sampled token (EPTree's entropy proxy)",
                            fn=surprisal, inputs=("logp", "mask")))
register_signal(TokenSignal(name="rsi", description="relative surprisal index −log p / H (RSI-S's score)",
                            fn=relative_surprisal, inputs=("logp", "entropy", "mask")))
