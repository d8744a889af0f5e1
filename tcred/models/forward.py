"""The policy's forward pass over given responses: log-probs and entropy of each response token.

One implementation shared by the train step (`tcred.training.step`), the credit extras
(`tcred.credit.extras`) and the identifiability study (`tcred.evaluation.identify`).

Shapes: B prompts, G rollouts per prompt, P prompt tokens (left-padded), T response tokens, D width.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
from flax import nnx

from tcred.models.decoder import positions_from_mask
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
  the targets `[BG, T]` (one forward pass of the packed prompt + response rows)."""
  chex.assert_rank([prompt, prompt_valid, response, mask], [2, 2, 3, 3])
  chex.assert_equal_shape([prompt, prompt_valid])
  chex.assert_equal_shape([response, mask])
  chex.assert_equal_shape_prefix([prompt, response], 1)
  model = nnx.merge(graphdef, params)
  p = prompt.shape[1]
  seq, valid = pack_groups(prompt, prompt_valid, response, mask)
  inputs, in_valid = seq[:, :-1], valid[:, :-1]
  hidden, _ = model(inputs, positions_from_mask(in_valid), in_valid)  # [BG, P+T-1, D]
  return hidden[:, p - 1:], model.unembedding(), seq[:, p:]


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
