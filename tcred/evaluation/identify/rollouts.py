"""The study's rollouts (chains or tree leaves) and the policy's passes over them: the train step's
log-prob/entropy forward and the `compute_extras` signals, batched by prompts (one compiled shape).

Shapes: N prompts, G rollouts per prompt, T the response budget, J answer tokens.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.extras import compute_extras, validate_extras
from tcred.evaluation.identify.config import _NS_ROLLOUTS, _NS_TREE_ROLLOUTS, IdentifyConfig
from tcred.models.forward import response_logprobs
from tcred.sampling.rollout import Trees, encode_answers, encode_solutions, sample_and_score, sample_trees_and_score
from tcred.tasks.base import Problem, Task


class Rollout(NamedTuple):
  """The sampled study rollouts (host arrays).

  Attributes:
    prompt: `[N, P]` left-padded prompt ids; prompt_valid: `[N, P]`.
    tokens: `[N, G, T]` response ids; logp: `[N, G, T]` the sampler's behaviour log-probs;
    mask: `[N, G, T]` (EOS included).
    rewards: `[N, G]`; texts: N lists of G response strings.
  """

  prompt: np.ndarray
  prompt_valid: np.ndarray
  tokens: np.ndarray
  logp: np.ndarray
  mask: np.ndarray
  rewards: np.ndarray
  texts: list[list[str]]



def sample_rollouts(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig) -> Rollout:
  """G rollouts per prompt at the study temperature (one sampler call)."""
  key = jax.random.fold_in(jax.random.key(config.seed), _NS_ROLLOUTS)
  groups = sample_and_score(graphdef, params, task, problems, key, group_size=config.rollouts,
                            temperature=config.temperature)
  r = groups.rollouts
  return Rollout(groups.prompt, groups.prompt_valid, np.asarray(r.tokens), np.asarray(r.logp), np.asarray(r.mask),
                 np.asarray(groups.rewards), groups.texts)


def sample_tree_rollouts(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig
                         ) -> tuple[Rollout, Trees]:
  """G rollouts per prompt as the leaves of `config.tree` (one forest per prompt), at the study temperature."""
  key = jax.random.fold_in(jax.random.key(config.seed), _NS_TREE_ROLLOUTS)
  rng = np.random.default_rng([_NS_TREE_ROLLOUTS, config.seed])  # draws only for fork_at="step"
  groups = sample_trees_and_score(graphdef, params, task, problems, key, rng, tree=config.tree,
                                  temperature=config.temperature)
  r = groups.rollouts
  rollout = Rollout(groups.prompt, groups.prompt_valid, np.asarray(r.tokens), np.asarray(r.logp),
                    np.asarray(r.mask), np.asarray(groups.rewards), groups.texts)
  return rollout, groups.trees



_response_logprobs_jit = None


def policy_forward(graphdef, params, rollout: Rollout, config: IdentifyConfig) -> dict[str, np.ndarray]:
  """`{"logp", "entropy"}` `[N, G, T]` from the train step's forward (`response_logprobs`), batched by prompts."""
  global _response_logprobs_jit

  if _response_logprobs_jit is None:
    _response_logprobs_jit = jax.jit(response_logprobs, static_argnames=("graphdef", "temperature", "chunk_size"))
  outs = _batched(lambda pr, pv, r, m: _response_logprobs_jit(
      graphdef, params, pr, pv, r, m, temperature=config.temperature, chunk_size=1024),
      (rollout.prompt, rollout.prompt_valid, rollout.tokens, rollout.mask), config.extras_batch)
  mask = rollout.mask
  return {"logp": np.where(mask, outs[0], 0.0), "entropy": np.where(mask, outs[1], 0.0)}


def _batched(fn, arrays: tuple[np.ndarray, ...], size: int):
  """Applies `fn` to row-chunks of `size` (the last padded by repeating row 0), concatenates outputs."""
  n = arrays[0].shape[0]
  size = min(size, n)
  pieces = []
  for s in range(0, n, size):
    part = [a[s:s + size] for a in arrays]
    short = size - part[0].shape[0]
    if short:
      part = [np.concatenate([x, np.repeat(x[:1], short, axis=0)]) for x in part]
    out = jax.device_get(fn(*[jnp.asarray(x) for x in part]))
    pieces.append(jax.tree.map(lambda x: np.asarray(x)[:size - short], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *pieces)


def signal_extras(graphdef, params, task: Task, problems: Sequence[Problem], rollout: Rollout,
                  config: IdentifyConfig, names: tuple[str, ...], ref_params=None) -> dict[str, np.ndarray]:
  """The `compute_extras` outputs `names` (the training pipeline's jitted function), batched by prompts
  (`ref_params`: the reference policy, same graphdef, of "ref_policy_logp")."""
  names = validate_extras(names)
  if not names:
    return {}
  answer, answer_valid = encode_answers(task, problems)
  solution, solution_valid = encode_solutions(task, problems)
  cue_id = task.tokenizer.cue_id(task.answer_cue)
  return _batched(lambda *a: compute_extras(graphdef, params, *a, names=names, temperature=config.temperature,
                                            cue_id=cue_id, mi=config.mi_inputs, ref_params=ref_params),
                  (rollout.prompt, rollout.prompt_valid, rollout.tokens, rollout.mask, answer, answer_valid,
                   solution, solution_valid), config.extras_batch)

