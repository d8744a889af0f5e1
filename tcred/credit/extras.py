"""Signals that need extra forward passes, computed under the sampling policy
before the train step (DESIGN §4.3(b), §4.4), in one jitted function per batch.

Names a credit method can ask for (`CreditMethod.needs_extras`):
  "info_gain"  `[B, G, T]` answer information gain per token.
  "ref_logp"   `[B, G, J]` DRO's `log π(y*_j | x, c_i, y*_<j)`, c_i = rollout i's reasoning
               (its response before its own answer cue).
  "ref_std"    `[B, J]` σ_j, the cross-rollout std of ref_logp.
  "mi"         `[B, G, T]` HSIC MI between each token's hidden state and the reference
               solution's final hidden state.
  "answer_valid" `[B, J]` bool, the padding mask of y* (always provided with the above).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tcred.models.decoder import positions_from_mask
from tcred.models.forward import pack_groups
from tcred.signals.information import MIInputs, answer_information_gain, answer_logprobs_after_prefixes, hsic_mi
from tcred.signals.variance import reference_token_std

EXTRA_NAMES = ("info_gain", "ref_logp", "ref_std", "mi")


def response_hidden(model, prompt, prompt_valid, response, mask, *, hidden_layer: int = -1, final_norm: bool = True):
  """Hidden states `[B, G, T, D]` of the response tokens (one plain forward); by default the final
  ones, else layer `hidden_layer`'s output with or without the final norm (`Decoder.__call__`)."""
  b, g, t = response.shape
  p = prompt.shape[1]
  seq, valid = pack_groups(prompt, prompt_valid, response, mask)
  hidden, _ = model(seq, positions_from_mask(valid), valid, hidden_layer=hidden_layer, final_norm=final_norm)
  return hidden[:, p:].reshape(b, g, t, -1)


def validate_extras(names) -> tuple[str, ...]:
  unknown = [n for n in names if n not in EXTRA_NAMES]
  if unknown:
    raise ValueError(f"unknown extra signal(s) {unknown}; allowed: {list(EXTRA_NAMES)}")
  return tuple(sorted(set(names)))


def extras_token_count(names, *, batch: int, group: int, prompt_len: int, response_len: int, answer_len: int,
                       solution_len: int) -> int:
  """Token positions that `compute_extras` runs through the model for one batch (padded shapes).

  Answer scoring (info_gain / ref_logp / ref_std) packs P + T + T·(J − 1) tokens
  per rollout (prompt, response, T answer copies without the last token); "mi"
  alone needs a plain forward of P + T per rollout; "mi" adds the reference
  solution, S per prompt. Zero when no extra is asked for.

  Args:
    names: extras as validated by `validate_extras`.
    batch, group: B prompts, G rollouts; prompt_len P, response_len T,
      answer_len J, solution_len S: the padded lengths of the batch's arrays.
  """
  names = validate_extras(names)
  rollouts = batch * group
  tokens = 0
  if any(n in names for n in ("info_gain", "ref_logp", "ref_std")):
    tokens += rollouts * (prompt_len + response_len + response_len * (answer_len - 1))
  elif "mi" in names:
    tokens += rollouts * (prompt_len + response_len)
  if "mi" in names:
    tokens += batch * solution_len
  return tokens


def cue_index(response, mask, cue_id: int):
  """`[..., T]` -> `[...]`: the first answer-cue position, else the last real token (EOS)."""
  is_cue = (response == cue_id) & mask
  lengths = jnp.sum(mask, axis=-1)
  return jnp.where(jnp.any(is_cue, axis=-1), jnp.argmax(is_cue, axis=-1), jnp.maximum(lengths - 1, 0))


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "temperature", "cue_id", "mi_sigma", "mi"))
def compute_extras(graphdef: nnx.GraphDef, params: nnx.State, prompt, prompt_valid, response, mask, answer,
                   answer_valid, solution, solution_valid, *, names: tuple[str, ...], temperature: float,
                   cue_id: int, mi_sigma: float | None = None, mi: MIInputs | None = None) -> dict[str, jax.Array]:
  """Computes the requested extras for a batch.

  "mi" compares the hidden states `mi` names (`MIInputs`: layer, pre/post final
  norm, σ rule; default: the final hidden states, σ scaled with the width); an
  explicit `mi_sigma` overrides the σ rule.

  Args:
    prompt `[B, P]`, prompt_valid `[B, P]`; response, mask `[B, G, T]`;
    answer, answer_valid `[B, J]` (y* = cue + answer + EOS, right-padded);
    solution, solution_valid `[B, S]` (BOS + reference solution, left-padded: the
    last column is its final token).
  """
  out = {"answer_valid": answer_valid}
  hidden = None
  if any(n in names for n in ("info_gain", "ref_logp", "ref_std")):
    score = lambda pr, pv, r, m, a, av: answer_logprobs_after_prefixes(
        graphdef, params, pr, pv, r, m, a, av, temperature=temperature)
    logp, hidden = jax.vmap(score)(prompt, prompt_valid, response, mask, answer, answer_valid)  # [B,G,T,J]
    if "info_gain" in names:
      out["info_gain"] = jax.vmap(answer_information_gain)(logp, mask)
    if "ref_logp" in names or "ref_std" in names:
      cue = cue_index(response, mask, cue_id)  # [B, G]
      ref = jnp.take_along_axis(logp, cue[..., None, None], axis=2)[:, :, 0, :]  # [B, G, J]
      out["ref_logp"] = ref
      out["ref_std"] = jax.vmap(reference_token_std)(ref, answer_valid)
  if "mi" in names:
    model = nnx.merge(graphdef, params)
    mi = mi or MIInputs()
    states = dict(hidden_layer=mi.layer, final_norm=mi.norm == "post")
    if hidden is None or not mi.is_default:  # a plain forward gives the response hidden states
      hidden = response_hidden(model, prompt, prompt_valid, response, mask, **states)
    h_sol, _ = model(solution, positions_from_mask(solution_valid), solution_valid, **states)
    h_y = h_sol[:, -1]  # [B, D]
    sigma = mi_sigma or mi.bandwidth(h_y.shape[-1])
    mi = jax.vmap(lambda hg, hy: jax.vmap(lambda h: hsic_mi(h, hy, sigma=sigma, batch_size=h.shape[0]))(hg))(hidden, h_y)
    out["mi"] = jnp.where(mask, mi, 0.0)
  return out
