"""Signals that need extra forward passes, computed under the sampling policy
before the train step (DESIGN §4.3(b), §4.4), in one jitted function per batch.

The names a credit method can ask for (`CreditMethod.needs_extras`, or a token signal's inputs,
`tcred.signals.registry`) are the registered `Extra`s below (`extra_names()`); `validate_extras`
is the one check, and the forward passes they need (`ExtrasPlan`) decide both what `compute_extras`
runs and what `extras_token_count` counts. "answer_valid" `[B, J]` bool, the padding mask of y*, is
always provided with them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.models.decoder import positions_from_mask
from tcred.models.forward import pack_groups, response_grad_norms, response_logprobs
from tcred.signals.information import MIInputs, answer_information_gain, answer_logprobs_after_prefixes, hsic_mi
from tcred.signals.variance import reference_token_std


@dataclasses.dataclass(frozen=True, kw_only=True)
class Extra:
  """A signal computed by an extra forward pass before the train step.

  Attributes:
    name: the key in `CreditInputs.extras`.
    shape: its shape (B prompts, G rollouts, T response tokens, J answer tokens).
    description: one line.
    answer_scoring: computed from the reference answer's log-probs after every prefix of every
      rollout (one packed pass: P + T + T·(J − 1) tokens per rollout).
    hidden_states: computed from the response hidden states and the reference solution's final
      hidden state (a plain forward of P + T per rollout, unless answer scoring gives the states,
      plus S per prompt for the solution).
    policy_forward: computed from the sampling policy's own output head on the responses (a plain
      forward of P + T per rollout, then a streaming pass over the vocabulary: the GMTS norms).
    reference_forward: computed by the reference policy (`compute_extras(ref_params=...)`; training:
      the run's base) on the responses (a plain forward of P + T per rollout).
  """

  name: str
  shape: str
  description: str
  answer_scoring: bool = False
  hidden_states: bool = False
  policy_forward: bool = False
  reference_forward: bool = False


_EXTRAS: dict[str, Extra] = {}


def register_extra(extra: Extra) -> Extra:
  if extra.name in _EXTRAS:
    raise ValueError(f"extra {extra.name!r} is already registered")
  if extra.answer_scoring + extra.hidden_states + extra.policy_forward + extra.reference_forward != 1:
    raise ValueError(f"extra {extra.name!r} must come from exactly one of answer scoring, hidden states, the "
                     f"policy forward or the reference forward")
  _EXTRAS[extra.name] = extra
  return extra


def extra_names() -> list[str]:
  return list(_EXTRAS)


register_extra(Extra(name="info_gain", shape="[B, G, T]", answer_scoring=True,
                     description="answer information gain per token (`answer_information_gain`)"))
register_extra(Extra(name="ref_logp", shape="[B, G, J]", answer_scoring=True,
                     description="DRO's log π(y*_j | x, c_i, y*_<j), c_i = rollout i's response before its own "
                                 "answer cue"))
register_extra(Extra(name="ref_std", shape="[B, J]", answer_scoring=True,
                     description="σ_j, the cross-rollout std of ref_logp (`reference_token_std`)"))
register_extra(Extra(name="mi", shape="[B, G, T]", hidden_states=True,
                     description="HSIC MI between each token's hidden state and the reference solution's final "
                                 "hidden state (`hsic_mi`)"))
register_extra(Extra(name="grad_norm_hidden", shape="[B, G, T]", policy_forward=True,
                     description="‖∂ log p(o_t) / ∂h_t‖ at the last hidden state (GMTS, `token_grad_norms`)"))
register_extra(Extra(name="grad_norm_unembed", shape="[B, G, T]", policy_forward=True,
                     description="‖∂ log p(o_t) / ∂U‖ at the unembedding (GMTS, `token_grad_norms`)"))
register_extra(Extra(name="ref_policy_logp", shape="[B, G, T]", reference_forward=True,
                     description="log π_ref(o_t | x, o<t) of each sampled token under the reference policy"))


# Tokens per block of the extras' vocabulary passes (as the train step's default `chunk_size`).
_EXTRAS_CHUNK = 1024


def validate_extras(names) -> tuple[str, ...]:
  """The sorted, de-duplicated extras `names`; ValueError naming the unknown ones and the allowed values."""
  unknown = [n for n in names if n not in _EXTRAS]
  if unknown:
    raise ValueError(f"unknown extra signal(s) {unknown}; allowed: {extra_names()}")
  return tuple(sorted(set(names)))


class ExtrasPlan(NamedTuple):
  """The forward passes `compute_extras` runs for a set of extras (and `extras_token_count` counts).

  Attributes:
    answer_scoring: the packed answer-scoring pass (P + T + T·(J − 1) tokens per rollout).
    response_forward: a plain forward of the responses (P + T per rollout) for their hidden states;
      skipped when answer scoring already gives the default hidden states.
    solution_forward: a forward of each prompt's reference solution (S per prompt).
    policy_forward: a plain forward of the responses for the GMTS gradient norms (P + T per rollout).
    reference_forward: a plain forward of the responses under the reference policy (P + T per rollout).
  """

  answer_scoring: bool
  response_forward: bool
  solution_forward: bool
  policy_forward: bool = False
  reference_forward: bool = False


def extras_plan(names, mi: MIInputs | None = None) -> ExtrasPlan:
  """The passes for `names` (validated) with the hidden states `mi` names (None: the default)."""
  chosen = [_EXTRAS[n] for n in validate_extras(names)]
  scoring = any(e.answer_scoring for e in chosen)
  hidden = any(e.hidden_states for e in chosen)
  reuse = scoring and (mi or MIInputs()).is_default
  return ExtrasPlan(answer_scoring=scoring, response_forward=hidden and not reuse, solution_forward=hidden,
                    policy_forward=any(e.policy_forward for e in chosen),
                    reference_forward=any(e.reference_forward for e in chosen))


def response_hidden(model, prompt, prompt_valid, response, mask, *, hidden_layer: int = -1, final_norm: bool = True):
  """Hidden states `[B, G, T, D]` of the response tokens (one plain forward); by default the final
  ones, else layer `hidden_layer`'s output with or without the final norm (`Decoder.__call__`)."""
  b, g, t = response.shape
  p = prompt.shape[1]
  seq, valid = pack_groups(prompt, prompt_valid, response, mask)
  hidden, _ = model(seq, positions_from_mask(valid), valid, hidden_layer=hidden_layer, final_norm=final_norm)
  return hidden[:, p:].reshape(b, g, t, -1)


def extras_token_count(names, *, batch: int, group: int, prompt_len: int, response_len: int, answer_len: int,
                       solution_len: int, mi: MIInputs | None = None) -> int:
  """Token positions that `compute_extras` runs through the model for one batch (padded shapes).

  The passes of `extras_plan(names, mi)`: answer scoring packs P + T + T·(J − 1) tokens per rollout
  (prompt, response, T answer copies without the last token); a plain response forward P + T per
  rollout (each of: hidden states, the GMTS policy forward, the reference policy's forward); the
  reference solution S per prompt. Zero when no extra is asked for.

  Args:
    names: extra names (validated); mi: the hidden states of "mi" (None: the default).
    batch, group: B prompts, G rollouts; prompt_len P, response_len T,
      answer_len J, solution_len S: the padded lengths of the batch's arrays.
  """
  plan = extras_plan(names, mi)
  rollouts = batch * group
  tokens = 0
  if plan.answer_scoring:
    tokens += rollouts * (prompt_len + response_len + response_len * (answer_len - 1))
  if plan.response_forward:
    tokens += rollouts * (prompt_len + response_len)
  if plan.solution_forward:
    tokens += batch * solution_len
  tokens += (plan.policy_forward + plan.reference_forward) * rollouts * (prompt_len + response_len)
  return tokens


def cue_index(response, mask, cue_id: int):
  """`[..., T]` -> `[...]`: the first answer-cue position, else the last real token (EOS)."""
  is_cue = (response == cue_id) & mask
  lengths = jnp.sum(mask, axis=-1)
  return jnp.where(jnp.any(is_cue, axis=-1), jnp.argmax(is_cue, axis=-1), jnp.maximum(lengths - 1, 0))


def check_reference(names, ref_params) -> None:
  """ValueError when an extra of `names` needs the reference policy and none is given."""
  need = [n for n in validate_extras(names) if _EXTRAS[n].reference_forward]
  if need and ref_params is None:
    raise ValueError(f"extra(s) {need} need a reference policy (the run's base in training; the study needs a "
                     f"base policy beside the policy under study); none was given")


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "temperature", "cue_id", "mi_sigma", "mi"))
def compute_extras(graphdef: nnx.GraphDef, params: nnx.State, prompt, prompt_valid, response, mask, answer,
                   answer_valid, solution, solution_valid, *, names: tuple[str, ...], temperature: float,
                   cue_id: int, mi_sigma: float | None = None, mi: MIInputs | None = None,
                   ref_params: nnx.State | None = None) -> dict[str, jax.Array]:
  """Computes the requested extras for a batch.

  "mi" compares the hidden states `mi` names (`MIInputs`: layer, pre/post final
  norm, σ rule; default: the final hidden states, σ scaled with the width); an
  explicit `mi_sigma` overrides the σ rule.

  Args:
    prompt `[B, P]`, prompt_valid `[B, P]`; response, mask `[B, G, T]`;
    answer, answer_valid `[B, J]` (y* = cue + answer + EOS, right-padded);
    solution, solution_valid `[B, S]` (BOS + reference solution, left-padded: the
    last column is its final token).
    ref_params: the reference policy (same graphdef) for "ref_policy_logp"; None otherwise.
  """
  check_reference(names, ref_params)  # at trace time: ValueError without a reference policy
  mi = mi or MIInputs()
  plan = extras_plan(names, mi)
  out = {"answer_valid": answer_valid}
  hidden = None
  if plan.answer_scoring:
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
  if plan.solution_forward:  # "mi"
    model = nnx.merge(graphdef, params)
    states = dict(hidden_layer=mi.layer, final_norm=mi.norm == "post")
    if plan.response_forward:  # a plain forward gives the response hidden states
      hidden = response_hidden(model, prompt, prompt_valid, response, mask, **states)
    h_sol, _ = model(solution, positions_from_mask(solution_valid), solution_valid, **states)
    h_y = h_sol[:, -1]  # [B, D]
    sigma = mi_sigma or mi.bandwidth(h_y.shape[-1])
    mi = jax.vmap(lambda hg, hy: jax.vmap(lambda h: hsic_mi(h, hy, sigma=sigma, batch_size=h.shape[0]))(hg))(hidden, h_y)
    out["mi"] = jnp.where(mask, mi, 0.0)
  if plan.policy_forward:  # GMTS: one forward, then the streaming vocabulary pass (`token_grad_norms`)
    h_norm, u_norm = response_grad_norms(graphdef, params, prompt, prompt_valid, response, mask,
                                         temperature=temperature, chunk_size=_EXTRAS_CHUNK)
    out.update({"grad_norm_hidden": jnp.where(mask, h_norm, 0.0), "grad_norm_unembed": jnp.where(mask, u_norm, 0.0)})
  if plan.reference_forward:
    ref_logp, _ = response_logprobs(graphdef, ref_params, prompt, prompt_valid, response, mask,
                                    temperature=temperature, chunk_size=_EXTRAS_CHUNK)
    out["ref_policy_logp"] = jnp.where(mask, ref_logp, 0.0)
  return out


def tree_extras(trees) -> dict[str, np.ndarray]:
  """Host arrays for `CreditInputs.extras` from `tcred.sampling.rollout.Trees`.

  Returns tree_id `[B, G]`, tree_parent / tree_is_leaf / tree_valid /
  tree_leaf_row `[B, N]` and token_node `[B, G, T]` (−1 on padding).
  """
  stack = lambda name: np.stack([getattr(a, name) for a in trees.arrays])
  return {"tree_id": np.asarray(trees.tree_id, np.int32), "tree_parent": stack("parent"),
          "tree_is_leaf": stack("is_leaf"), "tree_valid": stack("valid"), "tree_leaf_row": stack("leaf_row"),
          "token_node": stack("token_node")}
