"""The policy's forward pass over given responses: log-probs and entropy of each response token.

One implementation shared by the train step (`tcred.training.step`), the credit extras
(`tcred.credit.extras`) and the identifiability study (`tcred.evaluation.identify`).

Shapes: B prompts, G rollouts per prompt, P prompt tokens (left-padded), T response tokens, D width.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
from flax import nnx

from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder, KVCache, positions_from_mask
from tcred.models.logprobs import token_distribution_change, token_grad_norms, token_logprobs_and_entropy


def pack_groups(prompt, prompt_valid, response, mask):
  """`[B, P]` prompts and `[B, G, T]` responses -> full sequences and validity `[B·G, P + T]`."""
  b, g, t = response.shape
  p = prompt.shape[1]
  seq = jnp.concatenate([jnp.repeat(prompt[:, None], g, axis=1), response], axis=-1)
  valid = jnp.concatenate([jnp.repeat(prompt_valid[:, None], g, axis=1), mask], axis=-1)
  return seq.reshape(b * g, p + t), valid.reshape(b * g, p + t)


def _response_states(graphdef: nnx.GraphDef, params: nnx.State, prompt, prompt_valid, response, mask):
  """The final hidden states predicting each response token `[BG, T, D]`, the unembedding `[D, V]` and
  the targets `[BG, T]`.

  When `prompt_shared` (G > 1 and enough work saved) the prompt is run once per group, not once per rollout
  (`shared_prompt_states`); otherwise one pass over the packed prompt + response rows (`pack_groups`). Same
  values either way (up to float rounding: the matmuls have other shapes).
  """
  chex.assert_rank([prompt, prompt_valid, response, mask], [2, 2, 3, 3])
  chex.assert_equal_shape([prompt, prompt_valid])
  chex.assert_equal_shape([response, mask])
  chex.assert_equal_shape_prefix([prompt, response], 1)
  model = nnx.merge(graphdef, params)
  b, g, t = response.shape
  if prompt_shared(model.config, b, g, prompt.shape[1]):
    hidden = shared_prompt_states(model, prompt, prompt_valid, response, mask)
    return hidden, model.unembedding(), response.reshape(b * g, t)
  p = prompt.shape[1]
  seq, valid = pack_groups(prompt, prompt_valid, response, mask)
  inputs, in_valid = seq[:, :-1], valid[:, :-1]
  hidden, _ = model(inputs, positions_from_mask(in_valid), in_valid)  # [BG, P+T-1, D]
  return hidden[:, p - 1:], model.unembedding(), seq[:, p:]


SHARED_PROMPT_MIN_FLOP = 1e9


def prompt_shared(config: ModelConfig, b: int, g: int, p: int) -> bool:
  """Whether the log-prob forward runs each prompt once per group (`shared_prompt_states`) rather than once
  per rollout: G > 1 and the prompt copies it removes, `6 · non-embedding params · B·P·(G − 1)` FLOPs
  (forward + backward), reach `SHARED_PROMPT_MIN_FLOP` (1 GFLOP, ~10 ms on one CPU core) per call.

  Below that (tiny models, e.g. in the tests) the second decoder pass it compiles costs more time than the
  steps of a short run save. peer_grpo's update (29M, 4 x 4, P = 72): 130 GFLOP; bench-27m 1 x 16, P = 32:
  54 GFLOP; char-small 8 x 4, P = 20: 1.9 GFLOP; the tests' tiny policy: < 0.1 GFLOP.
  """
  return g > 1 and 6 * config.num_params(embeddings=False) * b * p * (g - 1) >= SHARED_PROMPT_MIN_FLOP


def shared_prompt_states(model: Decoder, prompt, prompt_valid, response, mask):
  """`[BG, T, D]` final hidden states predicting each response token, the prompt run once per group.

  The B prompts go through the decoder alone (`[B, P]`), leaving their keys and values in a KV cache;
  the cache is repeated for the G rollouts and the responses' first T − 1 tokens run after it
  (`[BG, T − 1]`, attending the prompt's slots and the earlier response tokens, exactly the causal mask
  of the packed rows). The prompt's last hidden state predicts the first response token. Decoder tokens:
  `B·P + B·G·(T − 1)` instead of `B·G·(P + T − 1)`; gradients reach the prompt's activations through the
  repeat (summed over the group).
  """
  b, g, t = response.shape
  p = prompt.shape[1]
  cache = KVCache.empty(model.config, b, p, model.embed_tokens.embedding[...].dtype)
  h_prompt, cache = model(prompt, positions_from_mask(prompt_valid), prompt_valid, cache=cache, index=0)
  cache = cache.grow(t - 1).repeat(g)  # [BG, ..., P + T − 1 slots]
  tokens, valid = response.reshape(b * g, t)[:, :-1], mask.reshape(b * g, t)[:, :-1]
  full_valid = jnp.concatenate([jnp.repeat(prompt_valid, g, axis=0), valid], axis=1)
  h_resp, _ = model(tokens, positions_from_mask(full_valid)[:, p:], valid, cache=cache, index=p,
                    block_queries=True)
  first = jnp.repeat(h_prompt[:, -1:], g, axis=0)  # [BG, 1, D]
  return jnp.concatenate([first, h_resp], axis=1)


def response_logprobs(graphdef: nnx.GraphDef, params: nnx.State, prompt, prompt_valid, response, mask,
                      *, temperature: float, chunk_size: int):
  """Log-probs and entropy `[B, G, T]` of `response` given `prompt`, one forward pass.

  The prompt is repeated for each of the G rollouts; logits are formed only for
  the T response positions, chunk by chunk.
  """
  b, g, t = response.shape
  hidden, unembed, targets = _response_states(graphdef, params, prompt, prompt_valid, response, mask)
  logp, ent = token_logprobs_and_entropy(hidden, unembed, targets, temperature=temperature, chunk_size=chunk_size)
  return logp.reshape(b, g, t), ent.reshape(b, g, t)


def response_grad_norms(graphdef: nnx.GraphDef, params: nnx.State, prompt, prompt_valid, response, mask,
                        *, temperature: float, chunk_size: int):
  """GMTS gradient norms `[B, G, T]` x 2 of `response` given `prompt` (`token_grad_norms`: with respect
  to the last hidden state and to the unembedding), one forward pass, chunked over the vocabulary."""
  b, g, t = response.shape
  hidden, unembed, targets = _response_states(graphdef, params, prompt, prompt_valid, response, mask)
  h_norm, u_norm = token_grad_norms(hidden, unembed, targets, temperature=temperature, chunk_size=chunk_size)
  return h_norm.reshape(b, g, t), u_norm.reshape(b, g, t)


def response_change(graphdef_p: nnx.GraphDef, params_p: nnx.State, graphdef_q: nnx.GraphDef, params_q: nnx.State,
                    prompt, prompt_valid, response, mask, *, temperature: float, chunk_size: int = 256):
  """`(logp, logq, kl, argmax_changed)` `[B, G, T]` of policy p (e.g. the SFT base) and policy q (a trained run)
  on the same responses (`token_distribution_change`): one forward pass of each policy."""
  b, g, t = response.shape
  hp, up, targets = _response_states(graphdef_p, params_p, prompt, prompt_valid, response, mask)
  hq, uq, _ = _response_states(graphdef_q, params_q, prompt, prompt_valid, response, mask)
  outs = token_distribution_change(hp, up, hq, uq, targets, temperature=temperature, chunk_size=chunk_size)
  return tuple(o.reshape(b, g, t) for o in outs)
