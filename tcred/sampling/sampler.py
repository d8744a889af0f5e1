"""Jitted group sampler: one batched prompt prefill, then a `lax.while_loop`
decode over a KV cache shared by the G rollouts of each prompt.

Prompts are left-padded to a common length P so that every row writes the same
cache slot at each decode step; RoPE positions count real tokens only.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tcred.models.decoder import Decoder, KVCache, positions_from_mask


class Rollouts(NamedTuple):
  """G sampled responses for each of B prompts.

  Attributes:
    tokens: `[B, G, T]` int32 response tokens; padding after EOS.
    logp: `[B, G, T]` float32 log-probability of each token under the sampling
      policy's tempered distribution `softmax(z / temperature)` (before top-p
      truncation); 0 on padding.
    mask: `[B, G, T]` bool, True for real response tokens (EOS included).
    finished: `[B, G]` bool, whether the response ended with EOS within T tokens.
  """

  tokens: jax.Array
  logp: jax.Array
  mask: jax.Array
  finished: jax.Array


class _DecodeState(NamedTuple):
  t: jax.Array  # scalar int32, tokens generated so far
  cache: KVCache
  logits: jax.Array  # [N, V] float32 logits for the next token
  done: jax.Array  # [N] bool
  tokens: jax.Array  # [N, T]
  logp: jax.Array  # [N, T]
  key: jax.Array


def _choose(logits: jax.Array, key: jax.Array, *, temperature: float, top_p: float, greedy: bool):
  """Samples one token per row from `logits [N, V]`; returns (token [N], logp [N])."""
  logprobs = jax.nn.log_softmax(logits / (1.0 if greedy else temperature), axis=-1)
  if greedy:
    token = jnp.argmax(logits, axis=-1)
  else:
    filtered = logprobs
    if top_p < 1.0:
      sorted_lp = jnp.sort(logprobs, axis=-1)[:, ::-1]
      cum = jnp.cumsum(jnp.exp(sorted_lp), axis=-1)
      # Keep the smallest prefix whose mass reaches top_p (the top token is always kept).
      cutoff_idx = jnp.sum(cum - jnp.exp(sorted_lp) < top_p, axis=-1) - 1
      cutoff = jnp.take_along_axis(sorted_lp, cutoff_idx[:, None], axis=-1)
      filtered = jnp.where(logprobs >= cutoff, logprobs, -jnp.inf)
    token = jax.random.categorical(key, filtered, axis=-1)
  return token.astype(jnp.int32), jnp.take_along_axis(logprobs, token[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "group_size", "max_new_tokens", "temperature", "top_p", "greedy", "eos_id", "pad_id"))
def sample_groups(graphdef: nnx.GraphDef, params: nnx.State, prompt: jax.Array, prompt_valid: jax.Array,
                  key: jax.Array, *, group_size: int, max_new_tokens: int, temperature: float,
                  top_p: float = 1.0, greedy: bool = False, eos_id: int, pad_id: int) -> Rollouts:
  """Samples `group_size` responses per prompt.

  Args:
    graphdef, params: the policy, split with `nnx.split` (graphdef is static).
    prompt: `[B, P]` int32 left-padded prompts (BOS included).
    prompt_valid: `[B, P]` bool, False on left padding; the last column is valid.
    key: PRNG key.
    group_size: G, rollouts per prompt.
    max_new_tokens: T, the generation budget (EOS included).
    temperature, top_p, greedy: the sampling rule; greedy ignores both.
    eos_id, pad_id: special token ids.

  Returns:
    `Rollouts` with `[B, G, T]` arrays. Decoding stops early once every row is done.
  """
  model = nnx.merge(graphdef, params)
  b, p = prompt.shape
  n = b * group_size
  cache = KVCache.empty(model.config, b, p + max_new_tokens)
  positions = positions_from_mask(prompt_valid)
  hidden, cache = model(prompt, positions, prompt_valid, cache, 0)  # [B, P, D]
  unembed = model.unembedding()
  logits = jnp.dot(hidden[:, -1], unembed, preferred_element_type=jnp.float32)  # [B, V]
  cache = cache.repeat(group_size)
  logits = jnp.repeat(logits, group_size, axis=0)  # [N, V]
  next_pos = jnp.repeat(jnp.sum(prompt_valid, axis=-1).astype(jnp.int32), group_size)  # [N]

  def cond(s: _DecodeState):
    return (s.t < max_new_tokens) & ~jnp.all(s.done)

  def body(s: _DecodeState) -> _DecodeState:
    key, sub = jax.random.split(s.key)
    token, lp = _choose(s.logits, sub, temperature=temperature, top_p=top_p, greedy=greedy)
    token = jnp.where(s.done, pad_id, token)
    lp = jnp.where(s.done, 0.0, lp)
    tokens = jax.lax.dynamic_update_slice_in_dim(s.tokens, token[:, None], s.t, axis=1)
    logp = jax.lax.dynamic_update_slice_in_dim(s.logp, lp[:, None], s.t, axis=1)
    valid = ~s.done
    hidden, cache = model(token[:, None], (next_pos + s.t)[:, None], valid[:, None], s.cache, p + s.t)
    logits = jnp.dot(hidden[:, 0], unembed, preferred_element_type=jnp.float32)
    done = s.done | (token == eos_id)
    return _DecodeState(s.t + 1, cache, logits, done, tokens, logp, key)

  init = _DecodeState(
      t=jnp.int32(0), cache=cache, logits=logits, done=jnp.zeros((n,), bool),
      tokens=jnp.full((n, max_new_tokens), pad_id, jnp.int32),
      logp=jnp.zeros((n, max_new_tokens), jnp.float32), key=key)
  final = jax.lax.while_loop(cond, body, init)
  tokens = final.tokens
  # Real tokens: everything up to and including the first EOS.
  is_eos = tokens == eos_id
  after_eos = (jnp.cumsum(is_eos, axis=-1) - is_eos) > 0
  mask = ~after_eos & (jnp.arange(max_new_tokens)[None, :] < final.t)
  shape = (b, group_size, max_new_tokens)
  return Rollouts(tokens=tokens.reshape(shape), logp=final.logp.reshape(shape),
                  mask=mask.reshape(shape), finished=jnp.any(is_eos, axis=-1).reshape(b, group_size))
