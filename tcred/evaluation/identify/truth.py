"""The study's two ground truths per response token: Monte-Carlo token advantages from K continuations
of every distinct prefix, and the task oracle's fatal errors (the package docstring gives the formulas).

Shapes: N prompts, G rollouts per prompt, T the response budget, K continuations.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from tcred.evaluation import identify_metrics as im
from tcred.evaluation.identify.config import _NS_CONTINUATIONS, IdentifyConfig
from tcred.evaluation.identify.rollouts import Rollout
from tcred.judges.mc import decisive_tokens, token_advantages
from tcred.judges.oracle import fatal_tokens, prefix_values
from tcred.sampling.sampler import sample_groups
from tcred.tasks.base import Problem, Task


class GroundTruth(NamedTuple):
  """Monte-Carlo values and oracle values of every prefix.

  Attributes:
    values: `[N, G, T + 1]` V̂ of the prefix of length k (k = 0..L, V̂_L = reward); NaN beyond L.
    value_se: `[N, G, T + 1]` sqrt(V̂(1 − V̂)/K), 0 for k = L; NaN beyond L.
    advantages: `[N, G, T]` A_t = V̂_{t+1} − V̂_t on valid tokens (advantage_estimator "difference"; with
      "rao-blackwell", `rao_blackwell_advantages`), 0 elsewhere.
    advantage_se: `[N, G, T]` the plug-in standard error of A_t, 0 on padding.
    advantage_se_smoothed: `[N, G, T]` the same with V̂ smoothed to (wins + 1)/(K + 2) (never 0 for
      an estimated value), and 0 where the value is known exactly: the final value (the reward)
      and prefixes the oracle calls lost (V = 0).
    oracle: `[N, G, T + 1]` prefix_value of each prefix (k = L: the reward); NaN beyond L.
    fatal: `[N, G, T]` bool, the oracle goes 1 → 0 across token t.
    unique_prefixes: how many distinct (prompt, prefix) pairs were continued (K times each).
    continuations: K, the continuations per prefix behind `values` (chosen by `auto_continuations`, or
      `config.continuations`).
    continuation_steps: `((K, bound-violating share), ...)` of every K `auto_continuations` tried, in order
      (empty when K was given).
  """

  values: np.ndarray
  value_se: np.ndarray
  advantages: np.ndarray
  advantage_se: np.ndarray
  advantage_se_smoothed: np.ndarray
  oracle: np.ndarray
  fatal: np.ndarray
  unique_prefixes: int
  continuations: int = 0
  continuation_steps: tuple = ()


class PrefixValues(NamedTuple):
  """`monte_carlo_values`: V̂ of every prefix and, per token, the continuations of the prefix before it that drew
  the same first token (the Rao-Blackwell estimator's inputs, `rao_blackwell_advantages`).

  Attributes:
    values, value_se, value_se_smoothed: `[N, G, T + 1]` (see `GroundTruth`).
    unique_prefixes: distinct (prompt, prefix) pairs continued.
    same_wins: `[N, G, T]` the summed rewards of the continuations of o<t whose first token is o_t.
    same_draws: `[N, G, T]` how many continuations of o<t drew o_t first.
    draws: `[N, G, T]` the continuations of o<t (K; 0 for a lost prefix that was not continued).
  """

  values: np.ndarray
  value_se: np.ndarray
  value_se_smoothed: np.ndarray
  unique_prefixes: int
  same_wins: np.ndarray
  same_draws: np.ndarray
  draws: np.ndarray


def _prefix_table(rollout: Rollout):
  """Distinct (prompt, prefix) pairs: `index [N, G, T]` (−1 beyond L − 1), and per pair (n, k, ids)."""
  n, g, t = rollout.tokens.shape
  lengths = rollout.mask.sum(-1)
  index = np.full((n, g, t), -1, np.int64)
  seen: dict[tuple[int, bytes], int] = {}
  pairs: list[tuple[int, int, np.ndarray]] = []
  for i in range(n):
    for j in range(g):
      row = rollout.tokens[i, j]
      for k in range(int(lengths[i, j])):
        key = (i, row[:k].tobytes())
        if key not in seen:
          seen[key] = len(pairs)
          pairs.append((i, k, row[:k]))
        index[i, j, k] = seen[key]
  return index, pairs


def monte_carlo_values(graphdef, params, task: Task, problems: Sequence[Problem], rollout: Rollout,
                       config: IdentifyConfig, *, lost: np.ndarray | None = None, progress: bool = False,
                       namespace: int = _NS_CONTINUATIONS) -> PrefixValues:
  """V̂ of every prefix: `[N, G, T + 1]` values, their K-sample standard errors (plug-in and
  smoothed, see `GroundTruth`), the number of distinct prefixes continued, and per token the
  continuations that drew the token first (`PrefixValues`).

  `lost` (`[N, G, T]` bool, optional): prefixes of length k known to have value 0 (the oracle);
  they get V̂ = 0 without being continued. `namespace`: seed namespace of the continuations.

  Each distinct prefix (of length k) is continued K times with `sample_groups` from the
  left-padded row `prompt + prefix` (RoPE positions count real tokens only, so this is exactly
  the policy's conditional); a continuation is correct when it ends with EOS within the
  remaining budget T − k and the verifier accepts prefix + continuation. Prefixes are sorted by
  length and continued `prefix_batch` at a time, all padded to one shape (one compilation).
  """
  n, g, t = rollout.tokens.shape
  k_cont = config.continuations
  tk = task.tokenizer
  index, pairs = _prefix_table(rollout)
  p = rollout.prompt.shape[1]
  width = p + t - 1  # the longest prefix is T - 1 tokens (a full-budget response minus its last token)
  skip = np.zeros(len(pairs), bool)
  if lost is not None:
    skip[index[(index >= 0) & lost]] = True
  order = sorted((u for u in range(len(pairs)) if not skip[u]), key=lambda u: pairs[u][1])
  mean = np.zeros(len(pairs), np.float64)
  first: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # pair -> (first tokens [K], rewards [K])
  base_key = jax.random.fold_in(jax.random.key(config.seed), namespace)
  cache: dict[tuple[int, str], float] = {}
  c = config.prefix_batch
  chunks = [order[s:s + c] for s in range(0, len(order), c)]
  for ci, chunk in enumerate(tqdm(chunks, desc="continuations", disable=not progress, leave=False)):
    ids = np.full((c, width), tk.pad_id, np.int32)
    valid = np.zeros((c, width), bool)
    for r, u in enumerate(chunk + [chunk[0]] * (c - len(chunk))):  # pad the last chunk
      i, k, prefix = pairs[u]
      row = np.concatenate([rollout.prompt[i], prefix])
      row_valid = np.concatenate([rollout.prompt_valid[i], np.ones(k, bool)])
      ids[r, width - len(row):] = row
      valid[r, width - len(row):] = row_valid
    out = sample_groups(graphdef, params, jnp.asarray(ids), jnp.asarray(valid), jax.random.fold_in(base_key, ci),
                        group_size=k_cont, max_new_tokens=t, temperature=config.temperature,
                        eos_id=tk.stop_ids, pad_id=tk.pad_id)
    cont = np.asarray(out.tokens)  # [C, K, T]
    for r, u in enumerate(chunk):
      i, k, prefix = pairs[u]
      head = tk.decode(prefix)
      rewards = np.zeros(k_cont)
      for s in range(k_cont):
        if not np.isin(cont[r, s, :t - k], tk.eos_ids).any():
          continue  # no EOS within the remaining budget: reward 0
        text = head + tk.decode(cont[r, s])
        key = (i, text)
        if key not in cache:
          cache[key] = float(task.reward(problems[i], text))
        rewards[s] = cache[key]
      mean[u] = rewards.sum() / k_cont
      first[u] = (cont[r, :, 0].copy(), rewards)
  values = np.full((n, g, t + 1), np.nan)
  se = np.full((n, g, t + 1), np.nan)
  se_smooth = np.full((n, g, t + 1), np.nan)
  same_wins, same_draws, draws = np.zeros((n, g, t)), np.zeros((n, g, t)), np.zeros((n, g, t))
  lengths = rollout.mask.sum(-1)
  for i in range(n):
    for j in range(g):
      length = int(lengths[i, j])
      for k in range(length):
        if index[i, j, k] in first:
          tokens, rewards = first[index[i, j, k]]
          same = tokens == rollout.tokens[i, j, k]
          same_wins[i, j, k], same_draws[i, j, k], draws[i, j, k] = rewards[same].sum(), same.sum(), k_cont
      v = mean[index[i, j, :length]]
      values[i, j, :length] = v
      se[i, j, :length] = np.sqrt(v * (1.0 - v) / k_cont)
      smooth = (v * k_cont + 1.0) / (k_cont + 2.0)
      se_smooth[i, j, :length] = np.sqrt(smooth * (1.0 - smooth) / k_cont)
      values[i, j, length] = rollout.rewards[i, j]
      se[i, j, length] = se_smooth[i, j, length] = 0.0
  return PrefixValues(values, se, se_smooth, len(order), same_wins, same_draws, draws)


def oracle_values(task: Task, problems: Sequence[Problem], rollout: Rollout) -> np.ndarray:
  """`[N, G, T + 1]` exact prefix values (k = L: the reward); NaN beyond L (`tcred.judges.oracle.prefix_values`)."""
  return prefix_values(task, problems, rollout.tokens, rollout.mask, rollout.rewards)


def _value_se(values: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Plug-in and smoothed standard errors `[N, G, T + 1]` of V̂ from K continuations (0 at k = L, NaN beyond)."""
  se = np.sqrt(values * (1.0 - values) / k)
  smooth = (values * k + 1.0) / (k + 2.0)
  se_smooth = np.sqrt(smooth * (1.0 - smooth) / k)
  final = np.arange(values.shape[-1]) == lengths[..., None]
  return np.where(final, 0.0, se), np.where(final, 0.0, se_smooth)


def rao_blackwell_advantages(values: np.ndarray, mask: np.ndarray, p: np.ndarray, same_wins: np.ndarray,
                             same_draws: np.ndarray, draws: np.ndarray,
                             lost: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Token advantages Rao-Blackwellised over the sampled token's known probability, with their standard errors.

  Under the policy π, V(o<t) = p_t·Q + (1 − p_t)·V₋ₐ with Q = V(o≤t) and V₋ₐ the value of o<t given that its
  next token is not o_t, so A_t = Q − V(o<t) = (1 − p_t)(Q − V₋ₐ) exactly. p_t is known (the sampler's
  probability of o_t), so only Q and V₋ₐ are estimated: Q̂ pools the K continuations of o≤t with those of o<t
  that drew o_t first (both sample Q), V̂₋ₐ is the mean of the continuations of o<t that drew another token
  (V̂(o<t) where none did). |Â_t| ≤ 1 − p_t always, and its variance carries the factor (1 − p_t)².
  Q is exact after the last token (the reward) and after a prefix that was not continued (a lost prefix: 0).

  Args:
    values: `[N, G, T + 1]` V̂ of every prefix (NaN beyond L); mask: `[N, G, T]`; p: `[N, G, T]` π(o_t | o<t).
    same_wins, same_draws, draws: `PrefixValues`' fields (`[N, G, T]`).
    lost: optional `[N, G, T + 1]` bool, prefixes the oracle calls lost (V = 0 exactly: no standard error).

  Returns:
    `[N, G, T]` Â_t, its plug-in standard error and the smoothed one ((wins + 1)/(n + 2) in each term), all 0
    on padding.
  """
  mask = np.asarray(mask, bool)
  length = mask.sum(-1, keepdims=True)
  pos = np.arange(mask.shape[-1])
  v = np.nan_to_num(values)
  v_here, v_next = v[..., :-1], v[..., 1:]
  draws_next = np.concatenate([draws[..., 1:], np.zeros_like(draws[..., :1])], -1)
  next_exact = (pos == length - 1) | (draws_next == 0)  # the reward, or a lost prefix's 0
  q_draws = draws_next + same_draws
  q = np.where(next_exact, v_next, (v_next * draws_next + same_wins) / np.maximum(q_draws, 1))
  alt_draws = draws - same_draws
  alt = np.where(alt_draws > 0, (v_here * draws - same_wins) / np.maximum(alt_draws, 1), v_here)
  weight = 1.0 - np.clip(p, 0.0, 1.0)
  adv = np.where(mask, weight * (q - alt), 0.0)

  def se(smooth: bool) -> np.ndarray:
    def term(mean, n):
      m = (mean * n + 1.0) / (n + 2.0) if smooth else mean
      return np.where(n > 0, m * (1.0 - m) / np.maximum(n, 1), 0.0)
    here_n = np.where(alt_draws > 0, alt_draws, draws)
    var = np.where(next_exact, 0.0, term(q, q_draws)) + term(alt, here_n)
    if lost is not None:
      var = np.where(np.asarray(lost)[..., :-1], 0.0, var)  # o<t lost: Q and V₋ₐ are 0 exactly
    return np.where(mask, weight * np.sqrt(var), 0.0)

  return adv, se(False), se(True)


def violating_share(values: np.ndarray, mask: np.ndarray, can_decide: np.ndarray, delta: float) -> float:
  """Share of the decisive labels (|V̂_{t+1} − V̂_t| ≥ δ) on tokens that cannot be decisive (`~can_decide`:
  p > 1 − δ); NaN without a decisive label."""
  return im.violating_share(decisive_tokens(values, mask, delta)[mask], np.asarray(can_decide)[mask])


def ground_truth(graphdef, params, task: Task, problems: Sequence[Problem], rollout: Rollout,
                 config: IdentifyConfig, *, progress: bool = False, namespace: int = _NS_CONTINUATIONS,
                 can_decide: np.ndarray | None = None) -> GroundTruth:
  """The Monte-Carlo values (K = `config.continuations`) and the oracle of every prefix of `rollout`.

  With `config.auto_continuations` (and `can_decide`, `[N, G, T]` bool: p ≤ 1 − δ), K is chosen: while the
  bound-violating share (`violating_share`) exceeds `config.noise_target` and 2K ≤ `max_continuations`,
  every prefix gets K more continuations (seed namespace `namespace + 0x1000·round`, fresh draws) and the
  two means are averaged (the mean of 2K). Round 0 is the fixed-K run, so K given or chosen share draws.
  """
  oracle = oracle_values(task, problems, rollout)
  lost = (oracle[..., :-1] == 0.0) if config.skip_lost else None
  mc = monte_carlo_values(graphdef, params, task, problems, rollout, config, lost=lost, progress=progress,
                          namespace=namespace)
  values, unique = mc.values, mc.unique_prefixes
  mask = rollout.mask
  k = config.continuations
  steps = []
  if config.auto_continuations:
    if can_decide is None:
      raise ValueError("auto_continuations needs can_decide (the tokens with p <= 1 - delta)")
    rounds = 0
    while True:
      share = violating_share(values, mask, can_decide, config.delta)
      steps.append((k, share))
      if not share > config.noise_target or 2 * k > config.max_continuations:
        break
      rounds += 1
      more = monte_carlo_values(graphdef, params, task, problems, rollout,
                                dataclasses.replace(config, continuations=k), lost=lost, progress=progress,
                                namespace=namespace + 0x1000 * rounds).values
      values = (values + more) / 2.0  # both means of K draws: the mean of 2K (NaN beyond L stays NaN)
      k *= 2
  value_se, value_se_smooth = _value_se(values, mask.sum(-1), k)
  adv = token_advantages(values, mask)
  pair_se = lambda se: np.where(mask, np.sqrt(np.nan_to_num(se[..., 1:]) ** 2 + np.nan_to_num(se[..., :-1]) ** 2),
                                 0.0)
  # Where the oracle says a prefix is lost, V = 0 exactly (every continuation fails): no MC error.
  value_se_smooth = np.where(oracle == 0.0, 0.0, value_se_smooth)
  fatal = fatal_tokens(oracle, mask)
  if config.advantage_estimator == "rao-blackwell":  # fixed K (IdentifyConfig): `mc` holds every draw
    adv, adv_se, adv_se_smooth = rao_blackwell_advantages(values, mask, np.exp(rollout.logp), mc.same_wins,
                                                          mc.same_draws, mc.draws, lost=oracle == 0.0)
    return GroundTruth(values, value_se, adv, adv_se, adv_se_smooth, oracle, fatal, unique, k, tuple(steps))
  return GroundTruth(values, value_se, adv, pair_se(value_se), pair_se(value_se_smooth), oracle, fatal, unique, k,
                     tuple(steps))
