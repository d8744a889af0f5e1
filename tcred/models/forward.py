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
from tcred.models.logprobs import token_logprobs_and_entropy


def pack_groups(prompt, prompt_valid, response, mask):
  """`[B, P]` prompts and `[B, G, T]` responses -> full sequences and validity `[B·G, P + T]`."""
  b, g, t = response.shape
  p = prompt.shape[1]
  seq = jnp.concatenate([jnp.repeat(prompt[:, None], g, axis=1), response], axis=-1)
  valid = jnp.concatenate([jnp.repeat(prompt_valid[:, None], g, axis=1), mask], axis=-1)
  return seq.reshape(b * g, p + t), valid.reshape(b * g, p + t)


def response_logprobs(graphdef: nnx.GraphDef, params: nnx.State, prompt, prompt_valid, response, mask,
                      *, temperature: float, chunk_size: int):
  """Log-probs and entropy `[B, G, T]` of `response` given `prompt`, one forward pass.

  The prompt is repeated for each of the G rollouts; logits are formed only for
  the T response positions, chunk by chunk.
  """
  chex.assert_rank([prompt, prompt_valid, response, mask], [2, 2, 3, 3])
  chex.assert_equal_shape([prompt, prompt_valid])
  chex.assert_equal_shape([response, mask])
  chex.assert_equal_shape_prefix([prompt, response], 1)
  model = nnx.merge(graphdef, params)
  b, g, t = response.shape
  p = prompt.shape[1]
  seq, valid = pack_groups(prompt, prompt_valid, response, mask)
  inputs, in_valid = seq[:, :-1], valid[:, :-1]
  hidden, _ = model(inputs, positions_from_mask(in_valid), in_valid)  # [BG, P+T-1, D]
  logp, ent = token_logprobs_and_entropy(hidden[:, p - 1:], model.unembedding(), seq[:, p:],
                                         temperature=temperature, chunk_size=chunk_size)
  return logp.reshape(b, g, t), ent.reshape(b, g, t)
