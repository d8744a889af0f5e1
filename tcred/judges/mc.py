"""The Monte-Carlo judge: step values from continuations of the current policy (DESIGN §4.6).

For a response cut into K steps (token ends e_1 < … < e_K), the value after
step k is estimated from C continuations sampled by the policy from the prefix
that ends at e_k (VinePPO, arXiv 2410.01679):

  Q_k = (1/C) Σ_c r(prefix_k + continuation_c),   k = 0 … K − 1,
  Q_K = r(response)                                 (the rollout's own reward),

Q_0 the value of the prompt alone (e_0 = 0). A continuation earns its reward
only when it ends with EOS within the response budget T (like the sampler's
rollouts). The judge's scores are s_k = Q_k.

Nothing is recomputed: every response is prefilled ONCE with its prompt
(`tcred.sampling.tree.start_from_responses`), and the C continuations of each
step end are forked from that row's KV cache, truncated at the step end, by
the tree sampler's `fork_round`. Identical prefixes of one problem (every
response's Q_0, responses sharing steps) are continued once.

`token_values` estimates the value of every token prefix the same way (each distinct prefix continued C
times, forked from the cache): the estimator of the identifiability study's ground truth
(`tcred.evaluation.identify.truth.monte_carlo_values` computes the same quantity by re-prefilling each
prefix, so its committed draws stay as they were). From the values, the token's Monte-Carlo advantage
A_t = V̂(o_≤t) − V̂(o_<t) (`token_advantages`) and its decisive label |A_t| ≥ δ (`decisive_tokens`): one
implementation for `tcred identify` and the credit explorer's records.

`replica_agreement` measures the noise floor of Monte-Carlo labels (`label_agreement` on arrays): the labels
of each rule computed twice from independent continuations.

Shapes: B problems, G responses each, K steps (padded), C continuations.
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from tcred.judges.base import Judge, JudgeContext, JudgeScores, register_judge
from tcred.judges.labels import LABEL_RULES, LabelRule, first_error, mc_labels
from tcred.sampling.rollout import encode_prompts
from tcred.sampling.sampler import finish
from tcred.sampling.tree import fork_round, start_from_responses
from tcred.tasks.base import Problem, Task


class StepValues(NamedTuple):
  """Monte-Carlo step values of B×G responses.

  Attributes:
    q: `[B, G, K + 1]` float64, Q_0 (the prompt alone) … Q_K (the reward); NaN where a response has fewer
      steps (or no response: ragged groups). A response without steps (empty) has only Q_0.
    valid: `[B, G, K + 1]` bool, False on the NaN padding.
    tokens: token positions run through the policy: the prompts and responses prefilled once, then every
      continuation token (padding rows of the last fork batch included: they were computed).
    seconds: wall time.
  """

  q: np.ndarray
  valid: np.ndarray
  tokens: int
  seconds: float


class _Response(NamedTuple):
  problem: int  # b
  ids: np.ndarray  # [L] response ids, EOS included when the response ended
  forks: list[int]  # positions to continue from: e_0 = 0, e_1 … e_{K−1} (≥ L: nothing left, Q = reward)
  steps: int  # K
  reward: float


def _responses(task: Task, problems: Sequence[Problem], responses: Sequence[Sequence[str]],
               rewards: np.ndarray | None, response_ids) -> list[list[_Response]]:
  """Each response's ids (given, or re-encoded with EOS when it fits the budget T) and step ends in tokens."""
  tk = task.tokenizer
  t_max = task.max_response_len
  out = []
  for b, (problem, group) in enumerate(zip(problems, responses)):
    row = []
    for g, text in enumerate(group):
      if response_ids is None:
        ids = np.asarray(tk.encode(text), np.int32)
        ended = len(ids) < t_max  # a response that filled the budget never emitted EOS
        if ended:
          ids = np.concatenate([ids, np.array([tk.eos_id], np.int32)])
      else:
        ids = np.asarray(response_ids[b][g], np.int32).reshape(-1)
        ended = bool(len(ids)) and bool(np.isin(ids[-1], tk.eos_ids))
      ids = ids[:t_max]
      body = ids[:-1] if ended else ids
      token_ends = [int(e) for e in tk.step_token_ends(body, task.step_ends(text))]
      if rewards is not None:
        reward = float(rewards[b][g])
      else:
        reward = float(task.reward(problem, text)) if ended else 0.0
      row.append(_Response(b, ids, [0] + token_ends[:-1], len(token_ends), reward))
    out.append(row)
  return out


def step_values(graphdef, params, task: Task, problems: Sequence[Problem], responses: Sequence[Sequence[str]], *,
                continuations: int, key: jax.Array, temperature: float, top_p: float = 1.0, progress: bool = False,
                rewards: np.ndarray | None = None, response_ids: Sequence[Sequence[np.ndarray]] | None = None,
                fork_rows: int = 256) -> StepValues:
  """Monte-Carlo Q_0 … Q_K of every response (see the module docstring).

  Args:
    graphdef, params: the policy whose continuations estimate the values.
    task: verifies continuations (`reward`) and cuts responses into steps (`step_ends`).
    problems: B problems; responses: per problem, its G response texts (without EOS).
    continuations: C ≥ 1 continuations per distinct prefix.
    key: PRNG key (the same key gives the same values).
    temperature, top_p: the continuations' sampling rule (the policy's).
    progress: show a progress bar over fork batches.
    rewards: optional `[B, G]` rewards of the responses (Q_K); default: `task.reward` of a response that
      ended within the budget, else 0 (the sampler's rule, `tcred.sampling.rollout.score`).
    response_ids: optional per problem, per response, its own token ids (EOS included when it ended;
      padding removed); default: `task.tokenizer.encode` of the text, plus EOS when it fits the budget.
    fork_rows: continuation rows per `fork_round` call (one compiled shape; the last batch is padded).

  Returns:
    `StepValues`.
  """
  start = time.perf_counter()
  if isinstance(continuations, bool) or not isinstance(continuations, int) or continuations < 1:
    raise ValueError(f"continuations must be an integer >= 1, got {continuations!r}")
  if len(responses) != len(problems):
    raise ValueError(f"need one list of responses per problem, got {len(responses)} for {len(problems)}")
  tk = task.tokenizer
  t_max = task.max_response_len
  rows = _responses(task, problems, responses, rewards, response_ids)
  flat = [r for row in rows for r in row]
  b = len(problems)
  g = max((len(row) for row in rows), default=0)
  width = max((r.steps + 1 for r in flat), default=1)
  q = np.full((b, g, width), np.nan)
  if not flat:
    return StepValues(q, ~np.isnan(q), 0, time.perf_counter() - start)
  # Distinct prefixes (problem, prefix ids), each continued once from the first response row holding it.
  pairs: dict[tuple[int, bytes], int] = {}
  src_at: list[tuple[int, int]] = []
  refs: list[list[int]] = []  # per flat response, per fork: its prefix's index, or −1 (nothing left: Q = reward)
  for n, r in enumerate(flat):
    row = []
    for at in r.forks:
      if at >= len(r.ids):
        row.append(-1)
        continue
      key_ = (r.problem, r.ids[:at].tobytes())
      if key_ not in pairs:
        pairs[key_] = len(src_at)
        src_at.append((n, at))
      row.append(pairs[key_])
    refs.append(row)
  src_at = np.array(src_at, np.int64).reshape(-1, 2)  # [U, 2] (response row, position)
  rep = np.array([r.problem for r in flat])
  response = np.full((len(flat), t_max), tk.pad_id, np.int32)
  length = np.zeros(len(flat), np.int32)
  for n, r in enumerate(flat):
    response[n, :len(r.ids)] = r.ids
    length[n] = len(r.ids)
  means, fed = continuation_means(graphdef, params, task, problems, rep, response, length, src_at,
                                  continuations=continuations, key=key, temperature=temperature, top_p=top_p,
                                  fork_rows=fork_rows, progress=progress)
  n = 0
  for i, row in enumerate(rows):
    for j, r in enumerate(row):
      vals = [r.reward if u < 0 else means[u] for u in refs[n]]
      vals += [r.reward] if r.steps else []  # Q_K; a response without steps has Q_0 only
      q[i, j, :len(vals)] = vals
      n += 1
  return StepValues(q, ~np.isnan(q), fed, time.perf_counter() - start)


def continuation_means(graphdef, params, task: Task, problems: Sequence[Problem], problem_of: np.ndarray,
                       response: np.ndarray, length: np.ndarray, src_at: np.ndarray, *, continuations: int,
                       key: jax.Array, temperature: float, top_p: float = 1.0, fork_rows: int = 256,
                       progress: bool = False, desc: str = "mc continuations") -> tuple[np.ndarray, int]:
  """Mean reward of C continuations of U prefixes of R given responses, forked from their cached prefill.

  The R responses are prefilled once with their prompts (`start_from_responses`); prefix u is row
  `src_at[u, 0]` cut at position `src_at[u, 1]` (`0 ≤ at < length`), and `fork_round` samples its C
  continuations from the cache (the token at `at` is re-sampled: the prefix is the `at` tokens before
  it). A continuation earns `task.reward` of the whole row only when it ends with a stop token within
  the budget T. Batches of `fork_rows // C` prefixes share one compiled shape (the last is padded); batch
  `ci` samples with `fold_in(key, ci)`.

  Args:
    problem_of: `[R]` problem of each response; response: `[R, T]` int32 (PAD after `length`);
      length: `[R]` int32; src_at: `[U, 2]` (response row, position).

  Returns:
    (`[U]` float64 means, tokens run through the policy: the prefill and every continuation token).
  """
  tk = task.tokenizer
  c = continuations
  src_at = np.asarray(src_at, np.int64).reshape(-1, 2)
  per_call = max(1, fork_rows // c)  # prefixes per fork_round call
  spare = per_call * c
  prompt, prompt_valid = encode_prompts(task, problems)
  rep = np.asarray(problem_of)
  n0 = len(rep)
  pool = start_from_responses(graphdef, params, jnp.asarray(prompt[rep]), jnp.asarray(prompt_valid[rep]),
                              jnp.asarray(response), jnp.asarray(length), spare_rows=spare, pad_id=tk.pad_id)
  dest = jnp.arange(n0, n0 + spare, dtype=jnp.int32)
  means = np.zeros(len(src_at))
  memo: dict[tuple[int, str], float] = {}
  chunks = [np.arange(s, min(s + per_call, len(src_at))) for s in range(0, len(src_at), per_call)]
  for ci, chunk in enumerate(tqdm(chunks, desc=desc, disable=not progress, leave=False)):
    padded = np.concatenate([chunk, np.full(per_call - len(chunk), chunk[0])])
    src = np.repeat(src_at[padded, 0], c).astype(np.int32)
    at = np.repeat(src_at[padded, 1], c).astype(np.int32)
    pool = fork_round(graphdef, params, pool, dest, jnp.asarray(src), jnp.asarray(at), jax.random.fold_in(key, ci),
                      round_index=1, prompt_slots=prompt.shape[1], temperature=temperature, top_p=top_p,
                      eos_id=tk.stop_ids, pad_id=tk.pad_id)
    part = jax.tree.map(lambda x: x[n0:], pool.rows._replace(hidden=None))
    _, finished = finish(part, tk.stop_ids)
    tokens, finished = np.asarray(part.tokens), np.asarray(finished)
    for j, u in enumerate(chunk):
      problem = int(rep[src_at[u, 0]])
      wins = 0.0
      for s in range(j * c, (j + 1) * c):
        if not finished[s]:
          continue  # cut off at the budget: reward 0
        text = tk.decode(tokens[s])
        if (problem, text) not in memo:
          memo[(problem, text)] = float(task.reward(problems[problem], text))
        wins += memo[(problem, text)]
      means[u] = wins / c
  return means, int(pool.fed)


class TokenValues(NamedTuple):
  """Monte-Carlo values of every token prefix of B×G responses (the identifiability study's ground truth).

  Attributes:
    values: `[B, G, T + 1]` float64, V̂ of the prefix of k tokens (k = 0 … L − 1: the mean reward of C
      continuations; k = L: the reward); NaN beyond L.
    prefixes: distinct (problem, prefix) pairs continued (C times each; lost prefixes are not continued).
    tokens: token positions run through the policy (prefill + every continuation token, `continuation_means`).
    seconds: wall time.
  """

  values: np.ndarray
  prefixes: int
  tokens: int
  seconds: float


def token_values(graphdef, params, task: Task, problems: Sequence[Problem], tokens: np.ndarray, mask: np.ndarray,
                 rewards: np.ndarray, *, continuations: int, key: jax.Array, temperature: float, top_p: float = 1.0,
                 lost: np.ndarray | None = None, fork_rows: int = 256, progress: bool = False) -> TokenValues:
  """V̂ of every token prefix of each response: the mean reward of C continuations forked after k tokens
  (`continuation_means`, the mc judge's sampler), the reward at k = L.

  Args:
    problems: B problems; tokens: `[B, G, T]` int32 response ids; mask: `[B, G, T]` bool (EOS included);
      rewards: `[B, G]` the responses' rewards (V̂_L).
    continuations: C ≥ 1 per distinct prefix; key, temperature, top_p: the continuations' sampling.
    lost: optional `[B, G, T]` bool, prefixes of k tokens known to have value 0 (the task oracle): V̂ = 0,
      not continued.
    fork_rows: continuation rows per sampler call.

  Returns:
    `TokenValues`; `token_advantages(values, mask)` gives A_t, `decisive_tokens` the study's labels.
  """
  start = time.perf_counter()
  if isinstance(continuations, bool) or not isinstance(continuations, int) or continuations < 1:
    raise ValueError(f"continuations must be an integer >= 1, got {continuations!r}")
  tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
  b, g, t = tokens.shape
  t_max = task.max_response_len
  if t > t_max:
    raise ValueError(f"responses of {t} tokens exceed the task's budget of {t_max}")
  lengths = mask.sum(-1)
  values = np.full((b, g, t + 1), np.nan)
  response = np.full((b * g, t_max), task.tokenizer.pad_id, np.int32)
  response[:, :t] = np.where(mask, tokens, task.tokenizer.pad_id).reshape(b * g, t)
  index = np.full((b, g, t), -1, np.int64)  # the distinct prefix continued for each (response, k)
  seen: dict[tuple[int, bytes], int] = {}
  src_at = []
  for i in range(b):
    for j in range(g):
      for k in range(int(lengths[i, j])):
        if lost is not None and lost[i, j, k]:
          values[i, j, k] = 0.0
          continue
        key_ = (i, tokens[i, j, :k].tobytes())
        if key_ not in seen:
          seen[key_] = len(src_at)
          src_at.append((i * g + j, k))
        index[i, j, k] = seen[key_]
      values[i, j, lengths[i, j]] = rewards[i, j]
  fed = 0
  if src_at:
    means, fed = continuation_means(graphdef, params, task, problems, np.repeat(np.arange(b), g), response,
                                    lengths.reshape(-1).astype(np.int32), np.array(src_at), continuations=continuations,
                                    key=key, temperature=temperature, top_p=top_p, fork_rows=fork_rows,
                                    progress=progress, desc="token values")
    hit = index >= 0
    values[..., :t][hit] = means[index[hit]]
  return TokenValues(values, len(src_at), fed, time.perf_counter() - start)


def token_advantages(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`[..., T]` A_t = V̂_{t+1} − V̂_t, the Monte-Carlo advantage of each response token (0 on padding), from
  the prefix values `[..., T + 1]` (`token_values`; NaN beyond L)."""
  return np.where(mask, np.nan_to_num(values[..., 1:] - values[..., :-1]), 0.0)


def decisive_tokens(values: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
  """`[..., T]` bool: the decisive tokens of the identifiability study (DESIGN §5), |A_t| ≥ δ
  (`token_advantages`), from the prefix values `[..., T + 1]` and the response mask `[..., T]`."""
  return np.asarray(mask, bool) & (np.abs(token_advantages(values, mask)) >= delta)


@register_judge
@dataclasses.dataclass(frozen=True, kw_only=True)
class MCJudge(Judge):
  """s_k = Q_k, the Monte-Carlo value after step k from `continuations` samples of the current policy.

  Attributes:
    continuations: C ≥ 1 continuations per distinct prefix (cost: about C·K·T/2 tokens per response).
    fork_rows: continuation rows per sampler call (memory vs. calls; not a statistical setting).
  """

  name = "mc"
  description = "Monte-Carlo step values: mean reward of the policy's continuations after each step (VinePPO)"
  continuations: int = 4
  fork_rows: int = 256

  def __post_init__(self):
    super().__post_init__()
    for field in ("continuations", "fork_rows"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"judge 'mc' setting {field} must be an integer >= 1, got {value!r}")

  def score(self, task: Task, problem: Problem, response: str, ends: Sequence[int]) -> np.ndarray:
    raise TypeError("the mc judge samples from the policy: call score_groups with a JudgeContext")

  def prior(self, task: Task, problem: Problem) -> float:
    raise TypeError("the mc judge samples from the policy: call score_groups with a JudgeContext")

  def score_groups(self, task: Task, problems: Sequence[Problem], responses: Sequence[Sequence[str]],
                   ctx: JudgeContext) -> JudgeScores:
    """s = Q (`step_values` with the context's policy, key, sampling rule, rewards and ids)."""
    v = step_values(ctx.graphdef, ctx.params, task, problems, responses, continuations=self.continuations,
                    key=ctx.key, temperature=ctx.temperature, top_p=ctx.top_p, progress=ctx.progress,
                    rewards=ctx.rewards, response_ids=ctx.response_ids, fork_rows=self.fork_rows)
    return JudgeScores(np.nan_to_num(v.q).astype(np.float32), v.valid, v.tokens, v.seconds)


class ReplicaAgreement(NamedTuple):
  """How often two independent Monte-Carlo replicas give the same labels (one label rule).

  Attributes:
    labels: fraction of steps whose labels agree (over every step of every response).
    first_error: fraction of responses whose first bad step (`first_error`, −1: none) agrees.
    steps, responses: how many steps and responses were compared.
  """

  labels: float
  first_error: float
  steps: int
  responses: int


def label_agreement(q_a: np.ndarray, q_b: np.ndarray, valid: np.ndarray, rule: LabelRule) -> ReplicaAgreement:
  """Agreement of the labels of two replicas' values `[..., K + 1]` (`valid` the same for both)."""
  q_a, q_b, valid = (np.asarray(x).reshape(-1, np.shape(x)[-1]) for x in (q_a, q_b, valid))
  same = steps = first = responses = 0
  for a, b, v in zip(q_a, q_b, valid):
    k1 = int(v.sum())
    if k1 < 2:
      continue  # no step
    la, lb = mc_labels(a[:k1], rule), mc_labels(b[:k1], rule)
    same += int(np.sum(la == lb))
    steps += k1 - 1
    first += int(first_error(la) == first_error(lb))
    responses += 1
  return ReplicaAgreement(same / max(steps, 1), first / max(responses, 1), steps, responses)


def replica_agreement(graphdef, params, task: Task, problems: Sequence[Problem], responses: Sequence[Sequence[str]],
                      *, continuations: int, key: jax.Array, temperature: float, top_p: float = 1.0,
                      rules: Sequence[LabelRule] | None = None, **kwargs) -> dict[str, ReplicaAgreement]:
  """The noise floor of Monte-Carlo labels: each rule's labels from two `step_values` replicas with
  independent continuations (keys `fold_in(key, 0)` and `fold_in(key, 1)`), compared step by step and
  by first error (ProcessBench's target). Single-sample Monte-Carlo credit is known to be noisy
  (arXiv 2606.15621); a judge trained on these labels cannot agree with them more than they agree
  with themselves.

  Args:
    continuations: C per prefix in each replica; rules: the label rules (default: each of
      `LABEL_RULES` at its default settings); kwargs: passed to `step_values` (rewards, response_ids,
      progress, fork_rows).

  Returns:
    `{rule name: ReplicaAgreement}`.
  """
  rules = [LabelRule(rule=r) for r in LABEL_RULES] if rules is None else list(rules)
  a, b = (step_values(graphdef, params, task, problems, responses, continuations=continuations,
                      key=jax.random.fold_in(key, i), temperature=temperature, top_p=top_p, **kwargs)
          for i in (0, 1))
  valid = a.valid & b.valid
  return {r.rule: label_agreement(np.nan_to_num(a.q), np.nan_to_num(b.q), valid, r) for r in rules}
