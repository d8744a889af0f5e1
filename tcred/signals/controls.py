"""Control and diagnostic rows of the token-signal registry (issue 23 item 5, DESIGN §5 "Controls").

- `random`: the chance row, uniform scores from a PRNG key (`random_scores`): any signal's
  identifiability figure is read beside it, and its agreement with anything is chance.
- `entropy-bound`: the entropy bound check of arXiv 2604.11056 (a token's conditional mutual
  information with the outcome is at most its entropy): the excess of a token's MI estimate over its
  entropy (`entropy_bound_excess`); its share of non-zero tokens (`bound_violation_share`) is the share
  of tokens whose estimate breaks the bound.

Shapes: B prompts, G rollouts, T response tokens.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from tcred.signals.registry import TokenSignal, register_signal

# Seed of the training keys (`batch_group_keys`): the random control's key namespace.
_TRAIN_KEY_SEED = 0x5C0E


def random_scores(key, mask):
  """The chance row of one group: `key [2] uint32, mask [G, T] -> [G, T]` float32.

    s_t ~ Uniform[0, 1), independent over tokens, drawn from `key` (raw `jax.random.key_data` of a
    threefry key; `jax.random.uniform`), 0 on padding.

  A control, not a signal (DESIGN §5: every identifiability figure is reported beside a random row;
  no arXiv paper): its AUROC is 0.5 and its top-20% precision the decisive rate, up to sampling noise.
  """
  chex.assert_rank(mask, 2)
  chex.assert_shape(key, (2,))
  u = jax.random.uniform(jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32)), mask.shape, jnp.float32)
  return jnp.where(mask, u, 0.0)


def batch_group_keys(old_logp, mask):
  """`[B, G, T], [B, G, T] -> [B, 2]` uint32: one key per group, a pure function of the batch.

  The train step has no key of its own; the batch's sampled-token log-probs (under the sampling
  policy: fresh every step, drawn from the run's seeded sampler) are hashed to one uint32 (their float
  bits, position-weighted, summed modulo 2^32) and folded into a fixed key, then folded with the group
  index. Deterministic for a given batch; the random control's scores do not depend on the rewards.
  """
  chex.assert_rank([old_logp, mask], 3)
  bits = jax.lax.bitcast_convert_type(jnp.where(mask, jnp.asarray(old_logp, jnp.float32), 0.0), jnp.uint32)
  weight = jnp.arange(bits.size, dtype=jnp.uint32).reshape(bits.shape) * jnp.uint32(2654435761) + jnp.uint32(1)
  digest = jnp.sum(bits * weight, dtype=jnp.uint32)
  base = jax.random.fold_in(jax.random.key(_TRAIN_KEY_SEED), digest)
  keys = jax.vmap(lambda b: jax.random.fold_in(base, b))(jnp.arange(mask.shape[0], dtype=jnp.uint32))
  return jax.random.key_data(keys)


def entropy_bound_excess(info_gain, entropy, mask):
  """The entropy bound check of one group (arXiv 2604.11056): `[G, T] x 2 -> [G, T]` float32.

    e_t = max(|IG_t| − H_t, 0),   IG_t = log p(y*|x, o≤t) − log p(y*|x, o<t)

  The paper proves I(o_t; R | x, o<t) ≤ H(o_t | x, o<t): the credit a token can carry is bounded by
  its entropy. tcred's exact-likelihood MI estimate is the answer information gain (DESIGN §4.3(b)), a
  pointwise MI between the sampled token and the reference answer (in nats, like H_t); its expectation
  over o_t obeys the bound, a single token's value need not. e_t > 0 marks a token whose estimate
  exceeds its entropy; `bound_violation_share` is the share of such tokens (the check's figure).
  (HSIC MI is a normalised kernel statistic, not in nats, so it is not checked against H_t.)
  """
  chex.assert_rank([info_gain, entropy, mask], 2)
  chex.assert_equal_shape([info_gain, entropy, mask])
  excess = jnp.abs(jnp.asarray(info_gain, jnp.float32)) - jnp.asarray(entropy, jnp.float32)
  return jnp.where(mask, jnp.maximum(excess, 0.0), 0.0)


def bound_violation_share(excess, mask):
  """`[..., T]` -> scalar: the share of valid tokens with a positive excess (0 with no valid token)."""
  mask = jnp.asarray(mask, bool)
  return jnp.sum(mask & (excess > 0)) / jnp.maximum(jnp.sum(mask), 1)


register_signal(TokenSignal(name="random", description="control: uniform random scores (the chance row)",
                            fn=random_scores, inputs=("key", "mask"), role="control"))
register_signal(TokenSignal(name="entropy-bound", description="diagnostic: max(|IG_t| − H_t, 0), IG above its "
                                                              "entropy bound (share of tokens > 0)",
                            fn=entropy_bound_excess, inputs=("info_gain", "entropy", "mask"), role="diagnostic"))
