"""The forking ground truth at positions (DESIGN §5's controls; issue 23 item 4).

The seeds' claim (forking tokens, arXiv 2506.01939) is about *positions* where the trajectory can branch,
not about the token that happened to be sampled there. At S sampled positions (i, j, t) of the study's
rollouts (`config.fork_positions` per rollout, uniformly without replacement among its valid positions),
the k = `config.alternatives` most probable next tokens under the policy (at the study temperature; the
sampled token may be one of them) are each appended to the prefix `o_<t`, and

  W(a) = V(o_<t · a),  the mean reward of K continuations of `o_<t · a` from the same policy,

with the two cases known exactly: a stop token ends the response (W = its reward), and a non-stop token in
the budget's last slot leaves no room for EOS (W = 0). The position is *decisive* when the alternatives'
values spread by at least δ: `max_a W(a) − min_a W(a) ≥ δ`. Unlike the token advantage, this spread is not
bounded by 1 − p(sampled token).

The continuations reuse the mc judge's sampler (`tcred.judges.mc.continuation_means`: every prefix + a row
prefilled once by `start_from_responses`, its K continuations forked from that cache by `fork_round`);
identical (prompt, prefix + a) rows are continued once. The policy's top-k comes from the same prefill of
the study's rollouts (the hidden state that predicts token t, times the unembedding).

`evaluate_forking` scores every row of the study (the bound row first) at the sampled positions with the
study's metrics and controls: AUROC for a decisive position, Spearman with the spread, precision of the top
fraction, and the p-conditioned and position-controlled versions, CIs by the same cluster bootstrap.

Shapes: N prompts, G rollouts per prompt, T the response budget, S sampled positions, k alternatives.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.evaluation import identify_metrics as im
from tcred.evaluation.identify.bootstrap import metric_cis, prompt_clusters
from tcred.evaluation.identify.config import _NS_FORK_POSITIONS, _NS_FORKING, IdentifyConfig
from tcred.evaluation.identify.rollouts import Rollout
from tcred.judges.mc import continuation_means
from tcred.sampling.tree import start_from_responses
from tcred.tasks.base import Problem, Task


ROW_BUCKET = 64  # prefilled alternative rows are padded to a multiple of this


class ForkingTruth(NamedTuple):
  """The forking ground truth at S sampled positions.

  Attributes:
    prompt, rollout, position: `[S]` int, where each position is (prompt row i, rollout j, token t).
    alternatives: `[S, k]` int, the k most probable tokens at the position (most probable first).
    probs: `[S, k]` their probabilities under the policy (at the study temperature).
    values: `[S, k]` W(a), the value of the prefix followed by each alternative.
    spread: `[S]` max − min of `values`.
    continuations: K per (prefix, alternative); continued: distinct rows continued K times each.
    tokens: tokens run through the policy (prefills and continuations).
  """

  prompt: np.ndarray
  rollout: np.ndarray
  position: np.ndarray
  alternatives: np.ndarray
  probs: np.ndarray
  values: np.ndarray
  spread: np.ndarray
  continuations: int
  continued: int
  tokens: int


def sample_positions(mask: np.ndarray, per_rollout: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(prompt, rollout, position)` `[S]`: up to `per_rollout` valid positions of each rollout of `mask
  [N, G, T]`, uniformly without replacement (all of them when the rollout is shorter), in row order."""
  out = []
  n, g, _ = mask.shape
  for i in range(n):
    for j in range(g):
      valid = np.flatnonzero(mask[i, j])
      pick = np.sort(rng.choice(valid, size=min(per_rollout, valid.size), replace=False)) if valid.size else valid
      out += [(i, j, int(t)) for t in pick]
  arr = np.array(out, np.int64).reshape(-1, 3)
  return arr[:, 0], arr[:, 1], arr[:, 2]


def top_alternatives(graphdef, params, rollout: Rollout, prompt: np.ndarray, rollout_idx: np.ndarray,
                     position: np.ndarray, *, k: int, temperature: float, pad_id: int, rows_per_call: int = 64
                     ) -> tuple[np.ndarray, np.ndarray, int]:
  """The policy's k most probable tokens and their probabilities `[S, k]` at the S positions, from one
  prefill of each rollout holding a position (`start_from_responses`: the state that predicts token t,
  times the unembedding, divided by the temperature); and the tokens prefilled."""
  unembed = nnx.merge(graphdef, params).unembedding()
  rows = sorted(set(zip(prompt.tolist(), rollout_idx.tolist())))
  where = {r: n for n, r in enumerate(rows)}
  lengths = rollout.mask.sum(-1)
  hidden = []
  fed = 0
  for s in range(0, len(rows), rows_per_call):
    part = rows[s:s + rows_per_call]
    part = part + [part[0]] * (rows_per_call - len(part))  # one shape for every call
    i, j = np.array([r[0] for r in part]), np.array([r[1] for r in part])
    pool = start_from_responses(graphdef, params, jnp.asarray(rollout.prompt[i]), jnp.asarray(rollout.prompt_valid[i]),
                                jnp.asarray(rollout.tokens[i, j]), jnp.asarray(lengths[i, j].astype(np.int32)),
                                spare_rows=0, pad_id=pad_id)
    hidden.append(np.asarray(pool.rows.hidden)[:min(rows_per_call, len(rows) - s)])
    fed += int(pool.fed)
  hidden = np.concatenate(hidden)  # [R, T, D]
  h = hidden[[where[(a, b)] for a, b in zip(prompt.tolist(), rollout_idx.tolist())], position]  # [S, D]
  logits = np.asarray(jnp.dot(jnp.asarray(h).astype(unembed.dtype), unembed,
                              preferred_element_type=jnp.float32), np.float64) / temperature
  logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  top = np.argsort(-logp, axis=-1, kind="stable")[:, :k]
  return top.astype(np.int64), np.exp(np.take_along_axis(logp, top, axis=-1)), fed


def forking_truth(graphdef, params, task: Task, problems: Sequence[Problem], rollout: Rollout,
                  config: IdentifyConfig, *, progress: bool = False) -> ForkingTruth:
  """The forking ground truth of the module docstring on `config.fork_positions` positions per rollout,
  `config.alternatives` alternatives each, K = `config.continuations` continuations per alternative."""
  tk = task.tokenizer
  n, g, t_max = rollout.tokens.shape
  rng = np.random.default_rng([_NS_FORK_POSITIONS, config.seed])
  prompt, rollout_idx, position = sample_positions(rollout.mask, config.fork_positions, rng)
  k = config.alternatives
  if not len(position):  # no valid token anywhere
    empty = np.zeros((0, k))
    return ForkingTruth(prompt, rollout_idx, position, empty.astype(np.int64), empty, empty, np.zeros(0),
                        config.continuations, 0, 0)
  alts, probs, fed = top_alternatives(graphdef, params, rollout, prompt, rollout_idx, position, k=k,
                                      temperature=config.temperature, pad_id=tk.pad_id)
  values = np.full(alts.shape, np.nan)
  stops = set(np.asarray(tk.stop_ids).reshape(-1).tolist())
  rows: dict[tuple[int, bytes], int] = {}  # (problem, prefix + a) -> row to continue
  row_ids: list[np.ndarray] = []
  row_problem: list[int] = []
  refs = np.full(alts.shape, -1, np.int64)
  for s in range(len(position)):
    i, j, t = int(prompt[s]), int(rollout_idx[s]), int(position[s])
    prefix = rollout.tokens[i, j, :t]
    for a in range(k):
      token = int(alts[s, a])
      if token in stops:  # the response ends here: its reward, exactly
        values[s, a] = float(task.reward(problems[i], tk.decode(prefix)))
      elif t + 1 >= t_max:  # the budget's last slot: no room for a stop token
        values[s, a] = 0.0
      else:
        ids = np.concatenate([prefix, [token]]).astype(np.int32)
        key = (i, ids.tobytes())
        if key not in rows:
          rows[key] = len(row_ids)
          row_ids.append(ids)
          row_problem.append(i)
        refs[s, a] = rows[key]
  if row_ids:
    # Each row holds prefix + a and one placeholder token; forking at len(prefix + a) re-samples the
    # placeholder from the state after a, so the continuation starts right after the alternative.
    # The prefilled rows are padded to a multiple of `ROW_BUCKET` (copies of row 0, never continued), so
    # that studies of similar size share the compiled shapes.
    padded = -(-len(row_ids) // ROW_BUCKET) * ROW_BUCKET
    response = np.full((padded, t_max), tk.pad_id, np.int32)
    length = np.zeros(padded, np.int32)
    for r in range(padded):
      ids = row_ids[r] if r < len(row_ids) else row_ids[0]
      response[r, :len(ids)] = ids
      length[r] = len(ids) + 1
    row_problem += [row_problem[0]] * (padded - len(row_ids))
    src_at = np.stack([np.arange(len(row_ids)), length[:len(row_ids)] - 1], axis=1)
    key = jax.random.fold_in(jax.random.key(config.seed), _NS_FORKING)
    means, cont_fed = continuation_means(graphdef, params, task, problems, np.asarray(row_problem), response, length,
                                         src_at, continuations=config.continuations, key=key,
                                         temperature=config.temperature, progress=progress,
                                         desc="forking continuations")
    fed += cont_fed
    values = np.where(refs >= 0, means[np.maximum(refs, 0)], values)
  spread = values.max(-1) - values.min(-1) if len(position) else np.zeros(0)
  return ForkingTruth(prompt, rollout_idx, position, alts, probs, values, spread, config.continuations, len(row_ids),
                      fed)


def pool_forking(parts: Sequence[ForkingTruth], prompts: Sequence[int]) -> ForkingTruth:
  """The forking truths of studies pooled over bases (`study.pool_studies`): prompt rows offset by the
  prompts of the studies before."""
  offsets = np.cumsum([0] + list(prompts[:-1]))
  cat = lambda f: np.concatenate([getattr(p, f) for p in parts])
  return ForkingTruth(np.concatenate([p.prompt + o for p, o in zip(parts, offsets)]), cat("rollout"), cat("position"),
                      cat("alternatives"), cat("probs"), cat("values"), cat("spread"), parts[0].continuations,
                      sum(p.continued for p in parts), sum(p.tokens for p in parts))
