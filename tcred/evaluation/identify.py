"""The identifiability study (DESIGN §5): do the token signals find the tokens that decide the outcome?

On held-out prompts, G rollouts per prompt are sampled from a policy at its temperature. Two
ground truths per response token t (0-based; the EOS token is a token):

- the Monte-Carlo token advantage `A_t = V(o_≤t) − V(o_<t)`, where `V(prefix)` is the mean
  reward of K continuations sampled from the same policy after `prompt + prefix` (every prefix of
  every rollout; identical prefixes are continued once). The value after the whole response is
  its reward, exactly. Each estimate is a mean of K Bernoulli rewards, so
  `SE(A_t) = sqrt(V_{t+1}(1 − V_{t+1})/K + V_t(1 − V_t)/K) ≤ sqrt(1/(2K))`.
- the oracle's fatal errors: token t is fatal when the task's exact `prefix_value` goes
  1 → 0 across it (`prefix_value(o_<t) = 1`, and `prefix_value(o_≤t) = 0`, or the reward
  0 when t is the response's last token).

Every token signal is a function in a registry (`register_signal`), computed with the library
functions training uses: `response_logprobs` (the train step's fused log-prob/entropy forward),
`compute_extras` (answer information gain and HSIC MI, jitted once per batch shape),
`reference_token_std` (DRO's σ), the task oracle, and the tree advantages of TreeRL
(`treerl_segment_advantages`). A later signal (e.g. a judge of §4.6) registers one more
`TokenSignal`; nothing else changes.

Two sources of rollouts (`IdentifyConfig.rollouts_from`):

- `chains`: G independent rollouts per prompt (`sample_and_score`), the original study.
- `tree`: the G rollouts of a prompt are the leaves of an EPTree-style forest
  (`sample_trees_and_score` with `TreeConfig(enabled=True, trees=M, rounds=1, forks=G/M − 1,
  fork_at="entropy")`; M = 2, G = 8: 2 chains, 3 forks each at their top-entropy tokens, 8 leaves).
  The ground truth is computed by the same functions on those leaves (`ground_truth`: K
  continuations of every distinct prefix, shared prefixes continued once; the oracle), and so are
  all the chain signals, so the tree table compares like with like. Two signals exist only here:

  * `tree-sibling-gap` (DESIGN §5's "tree sibling gap"): the comparison a tree gives for free. With
    `V(s)` the mean reward of the leaves under segment s (`node_values`), a leaf token of
    segment s scores `|A(s)|`, `A(s) = [(V(s) − V(root)) + (V(s) − V(parent s))] / sqrt(|leaves(s)|)`
    (`treerl_segment_advantages`, the advantage TreeRL trains with), mapped to tokens with
    `TreeArrays.token_node` (a copied prefix token maps to the segment that generated it). A
    segment with the value of its parent and of its root (the trunk of a tree before its first
    fork, or a fork whose sibling subtrees score alike) scores 0. A segment whose value equals its
    parent's but not its root's keeps `|V(s) − V(root)| / sqrt(|leaves(s)|)` (the formula's root term).
  * `tree-fork-gap`: `|V(s) − V(parent s)|` on the first token of each segment only (the token at
    which the segment and its siblings diverge: the fork re-samples it), 0 on every other token
    and exactly 0 where the value equals the parent's. It localises the sibling comparison to the
    fork token instead of spreading it over the segment.

  Every valid token of every leaf counts (a prefix shared by k leaves counts k times, with the same
  signal and the same A_t, as identical prefixes of independent chains do).

The metrics (`tcred.evaluation.identify_metrics`, plain NumPy) pool every valid response token of
the study; confidence intervals resample whole prompts (cluster bootstrap).

Shapes: N prompts, G rollouts per prompt, T the response budget (tokens), K continuations.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from tcred.credit.extras import compute_extras, validate_extras
from tcred.evaluation import identify_metrics as im
from tcred.sampling.sampler import sample_groups
from tcred.sampling.tree import FORK_RULES
from tcred.signals.entropy import forking_mask
from tcred.signals.information import PEAK_RULES, MIInputs, mi_peaks
from tcred.signals.tree import node_values, treerl_segment_advantages
from tcred.signals.variance import reference_token_std
from tcred.tasks.base import Problem, Task
from tcred.training.config import TreeConfig
from tcred.training.rollout import (Trees, encode_answers, encode_prompts, encode_solutions, sample_and_score,
                                    sample_trees_and_score)

class UsageError(ValueError):
  """A bad task name, policy or setting given by the user (the CLI exits with status 2)."""


# Seed namespaces of the study's random draws (rollouts, continuations, bootstrap; tree rollouts and
# their continuations have their own, so the chain study's draws do not change when trees are added).
_NS_ROLLOUTS, _NS_CONTINUATIONS, _NS_BOOTSTRAP = 0x1D, 0x1D + 1, 0x1D + 2
_NS_TREE_ROLLOUTS, _NS_TREE_CONTINUATIONS = 0x1D + 4, 0x1D + 5

# Where the study's rollouts come from: independent chains, tree leaves, or both (two sections).
ROLLOUT_SOURCES = ("chains", "tree", "both")


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentifyConfig:
  """Settings of one identifiability study.

  Attributes:
    prompts: N held-out prompts.
    rollouts: G rollouts per prompt.
    continuations: K continuations per prefix for the Monte-Carlo values.
    delta: δ, a token is decisive when |A_t| ≥ δ.
    top_fraction: the fraction of tokens each signal selects (precision@top, overlap sets).
    mi_tau: Tukey fence multiplier of the MI-peak set (arXiv 2506.02867: 1.5).
    temperature: the sampling temperature of rollouts and continuations (the policy's).
    seed: seeds the rollouts, the continuations and the bootstrap.
    skip_lost: do not continue prefixes the task oracle calls lost (value exactly 0: no
      continuation can be correct, so their Monte-Carlo estimate is 0 for any K); saves the
      continuations after every fatal error. False continues them anyway (tests check the 0s).
    bootstrap: cluster-bootstrap replicates for the confidence intervals (0: none).
    prefix_batch: prefixes continued per sampler call (× K rows); one compiled shape.
    extras_batch: prompts per `compute_extras` / forward call; one compiled shape.
    rollouts_from: "chains" (G independent rollouts), "tree" (the G leaves of an EPTree forest per
      prompt, see `tree`) or "both" (two studies, one report with a tree section).
    tree_trees: M, the chains (trees) per prompt of the tree rollouts; G must be a multiple of M with
      G/M ≥ 2 (each tree forks G/M − 1 times in one round).
    tree_fork_at: where the trees fork (`TreeConfig.fork_at`: "entropy", "neg-logp" or "step").
    mi_peak_rule, mi_peak_k: the MI-peak set (`mi_peaks`): "outlier" (Q3 + mi_tau·IQR, default) or
      "top-k" (the mi_peak_k = 20 highest-MI tokens per rollout, the released MI-Peaks code).
    mi_layer, mi_norm, mi_sigma: the HSIC MI inputs (`MIInputs`): default the last layer after the
      final norm with σ scaled by width; the MI-Peaks code: the layer's output before the norm, σ = 50.
  """

  prompts: int = 32
  rollouts: int = 8
  continuations: int = 32
  delta: float = 0.25
  top_fraction: float = 0.2
  mi_tau: float = 1.5
  temperature: float = 1.0
  seed: int = 0
  skip_lost: bool = True
  bootstrap: int = 200
  prefix_batch: int = 32
  extras_batch: int = 8
  rollouts_from: str = "both"
  tree_trees: int = 2
  tree_fork_at: str = "entropy"
  mi_peak_rule: str = "outlier"
  mi_peak_k: int = 20
  mi_layer: int = -1
  mi_norm: str = "post"
  mi_sigma: str = "width"

  def __post_init__(self):
    if self.mi_peak_rule not in PEAK_RULES:
      raise ValueError(f"mi_peak_rule {self.mi_peak_rule!r}: allowed values are {', '.join(PEAK_RULES)}")
    if isinstance(self.mi_peak_k, bool) or not isinstance(self.mi_peak_k, int) or self.mi_peak_k < 1:
      raise ValueError(f"mi_peak_k must be an integer >= 1, got {self.mi_peak_k!r}")
    MIInputs(layer=self.mi_layer, norm=self.mi_norm, sigma=self.mi_sigma)  # validates the MI inputs
    for name, low in (("prompts", 2), ("rollouts", 1), ("continuations", 1), ("prefix_batch", 1),
                      ("extras_batch", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
      raise ValueError(f"bootstrap must be an integer >= 0, got {self.bootstrap!r}")
    if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
      raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
    if not 0.0 < self.delta <= 1.0:
      raise ValueError(f"delta must be in (0, 1] (a change in success probability), got {self.delta!r}")
    if not 0.0 < self.top_fraction <= 1.0:
      raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction!r}")
    if not self.mi_tau >= 0.0:
      raise ValueError(f"mi_tau must be >= 0, got {self.mi_tau!r}")
    if not self.temperature > 0.0:
      raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
    if self.rollouts_from not in ROLLOUT_SOURCES:
      raise ValueError(f"rollouts_from {self.rollouts_from!r}: allowed values are {', '.join(ROLLOUT_SOURCES)}")
    if self.tree_fork_at not in FORK_RULES:  # checked even for chains, so a typo never passes silently
      raise ValueError(f"tree_fork_at {self.tree_fork_at!r}: allowed values are {', '.join(FORK_RULES)}")
    if self.uses_trees:
      m = self.tree_trees
      if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"tree_trees must be an integer >= 1, got {m!r}")
      if self.rollouts % m or self.rollouts // m < 2:
        raise ValueError(f"tree rollouts need rollouts G a multiple of tree_trees M = {m} with G/M >= 2 "
                         f"(M chains, G/M − 1 forks each), got G = {self.rollouts}")

  @property
  def mi_inputs(self) -> MIInputs:
    return MIInputs(layer=self.mi_layer, norm=self.mi_norm, sigma=self.mi_sigma)

  @property
  def uses_trees(self) -> bool:
    return self.rollouts_from in ("tree", "both")

  @property
  def uses_chains(self) -> bool:
    return self.rollouts_from in ("chains", "both")

  @property
  def tree(self) -> TreeConfig:
    """The forest of the tree rollouts: M chains, one round of G/M − 1 forks per tree, G leaves."""
    return TreeConfig(enabled=True, trees=self.tree_trees, rounds=1, forks=self.rollouts // self.tree_trees - 1,
                      branch=1, fork_at=self.tree_fork_at)

  @property
  def advantage_se_bound(self) -> float:
    """Worst-case Monte-Carlo standard error of A_t: sqrt(2 · ¼ / K)."""
    return math.sqrt(0.5 / self.continuations)


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


class GroundTruth(NamedTuple):
  """Monte-Carlo values and oracle values of every prefix.

  Attributes:
    values: `[N, G, T + 1]` V̂ of the prefix of length k (k = 0..L, V̂_L = reward); NaN beyond L.
    value_se: `[N, G, T + 1]` sqrt(V̂(1 − V̂)/K), 0 for k = L; NaN beyond L.
    advantages: `[N, G, T]` A_t = V̂_{t+1} − V̂_t on valid tokens, 0 elsewhere.
    advantage_se: `[N, G, T]` the plug-in standard error of A_t, 0 on padding.
    advantage_se_smoothed: `[N, G, T]` the same with V̂ smoothed to (wins + 1)/(K + 2) (never 0 for
      an estimated value), and 0 where the value is known exactly: the final value (the reward)
      and prefixes the oracle calls lost (V = 0).
    oracle: `[N, G, T + 1]` prefix_value of each prefix (k = L: the reward); NaN beyond L.
    fatal: `[N, G, T]` bool, the oracle goes 1 → 0 across token t.
    unique_prefixes: how many distinct (prompt, prefix) pairs were continued (K times each).
  """

  values: np.ndarray
  value_se: np.ndarray
  advantages: np.ndarray
  advantage_se: np.ndarray
  advantage_se_smoothed: np.ndarray
  oracle: np.ndarray
  fatal: np.ndarray
  unique_prefixes: int


class SignalContext(NamedTuple):
  """Everything a token signal may read.

  Attributes:
    task, problems: the task and the N problems.
    graphdef, params: the policy (a signal may run its own forward passes or sampling).
    config: the study settings; key: a PRNG key reserved for signals that sample.
    rollout: the sampled rollouts; truth: GroundTruth (only the oracle may be read by signals:
      `oracle-judge` is the upper bound a judge could reach; no signal reads the MC values).
    policy: `{"logp", "entropy"}` `[N, G, T]` from the train step's forward (`response_logprobs`).
    extras: the `compute_extras` outputs the registered signals asked for (`[N, G, T]` / `[N, J]`).
    trees: the forest of each prompt (`Trees`) when the rollouts are tree leaves, else None.
  """

  task: Task
  problems: list[Problem]
  graphdef: nnx.GraphDef
  params: nnx.State
  config: IdentifyConfig
  key: jax.Array
  rollout: Rollout
  truth: GroundTruth
  policy: dict[str, np.ndarray]
  extras: dict[str, np.ndarray]
  trees: Trees | None = None


@dataclasses.dataclass(frozen=True)
class TokenSignal:
  """A registered token signal: `fn(ctx) -> [N, G, T]` scores, larger = "more decisive".

  Attributes:
    name: registry key (the report's row name).
    description: one line for the report.
    fn: the signal; values on padding are ignored.
    needs_extras: `compute_extras` names it reads from `ctx.extras`.
    needs_tree: reads `ctx.trees` (computed on tree rollouts only).
  """

  name: str
  description: str
  fn: Callable[[SignalContext], np.ndarray]
  needs_extras: tuple[str, ...] = ()
  needs_tree: bool = False


_SIGNALS: dict[str, TokenSignal] = {}


def register_signal(signal: TokenSignal) -> TokenSignal:
  """Adds a signal to the study; refuses duplicate names and unknown extras."""
  if signal.name in _SIGNALS:
    raise ValueError(f"token signal {signal.name!r} is already registered; registered: {signal_names()}")
  validate_extras(signal.needs_extras)
  _SIGNALS[signal.name] = signal
  return signal


def signal_names(*, trees: bool = True) -> list[str]:
  """Registered signals, in registration order (`trees=False`: those that need no tree)."""
  return [n for n, s in _SIGNALS.items() if trees or not s.needs_tree]


def get_signal(name: str) -> TokenSignal:
  if name not in _SIGNALS:
    raise ValueError(f"unknown token signal {name!r}; allowed: {signal_names()}")
  return _SIGNALS[name]


# ------------------------------------------------------------------------------------ signals


def position_answer_sigma(info_gain, mask):
  """Cross-rollout σ at each position of one group: `[G, T], [G, T] -> [T]`.

  `c_{g,t} = Σ_{u≤t} IG_{g,u} = log p(y*|x, o^g_≤t) − log p(y*|x)` is rollout g's running
  answer log-likelihood (the last term is the same for the whole group, so it cancels in the
  std). `σ_t = std_g c_{g,t}` over the G rollouts (DRO's `reference_token_std`, population std),
  a rollout that has ended keeping its final value (its IG is 0 from its last token on). σ_t
  is a property of position t shared by the group: how far the group's reasoning has diverged,
  in terms of the reference answer's likelihood, after t tokens. 0 where no rollout is valid.
  """
  info_gain = jnp.asarray(info_gain, jnp.float32)
  mask = jnp.asarray(mask, bool)
  c = jnp.cumsum(jnp.where(mask, info_gain, 0.0), axis=-1)  # [G, T]
  return reference_token_std(c, jnp.any(mask, axis=0))  # [T]


def running_answer_sigma(info_gain, mask):
  """`position_answer_sigma` on every valid token of the group, 0 elsewhere: `[G, T]`."""
  sigma = position_answer_sigma(info_gain, mask)
  return jnp.where(jnp.asarray(mask, bool), sigma[None, :], 0.0)


def running_answer_sigma_delta(info_gain, mask):
  """`|σ_t − σ_{t−1}|` on every valid token (σ_{−1} = 0: before any token all prefixes agree), `[G, T]`.

  Where the group's answer likelihoods split: the increment of `position_answer_sigma`.
  """
  sigma = position_answer_sigma(info_gain, mask)  # [T]
  prev = jnp.concatenate([jnp.zeros_like(sigma[:1]), sigma[:-1]])
  return jnp.where(jnp.asarray(mask, bool), jnp.abs(sigma - prev)[None, :], 0.0)


def _node_leaf_reward(is_leaf, leaf_row, rewards):
  """`[N]` reward of each leaf node (from its row's reward `[G]`), 0 on inner nodes."""
  rewards = jnp.asarray(rewards, jnp.float32)
  return jnp.where(jnp.asarray(is_leaf, bool), rewards[jnp.clip(jnp.asarray(leaf_row, jnp.int32), 0)], 0.0)


def tree_sibling_gap(parent, is_leaf, valid, leaf_row, rewards, token_node):
  """`|A(s)|` of each token's segment, A the TreeRL segment advantage, for one prompt's forest: `[G, T]`.

  Args:
    parent, is_leaf, valid, leaf_row: `[N]` node arrays (`TreeArrays`); rewards: `[G]` leaf rewards
      (row order); token_node: `[G, T]` node of each row token, −1 on padding.

  Returns:
    `[G, T]` float32, 0 on padding.
  """
  token_node = jnp.asarray(token_node, jnp.int32)
  node_adv = treerl_segment_advantages(parent, is_leaf, _node_leaf_reward(is_leaf, leaf_row, rewards), valid)  # [N]
  return jnp.where(token_node >= 0, jnp.abs(node_adv[jnp.clip(token_node, 0)]), 0.0)


def tree_fork_gap(parent, is_leaf, valid, leaf_row, rewards, token_node):
  """`|V(s) − V(parent s)|` on the first token of each segment s, 0 elsewhere: `[G, T]` (one prompt).

  Same arguments as `tree_sibling_gap`. A root's children compare with the root (the prompt).
  """
  parent = jnp.asarray(parent, jnp.int32)
  token_node = jnp.asarray(token_node, jnp.int32)
  value = node_values(parent, is_leaf, _node_leaf_reward(is_leaf, leaf_row, rewards), valid)  # [N]
  gap = jnp.where(jnp.asarray(valid, bool) & (parent >= 0), jnp.abs(value - value[jnp.clip(parent, 0)]), 0.0)
  prev = jnp.concatenate([jnp.full_like(token_node[:, :1], -1), token_node[:, :-1]], axis=1)  # [G, T]
  first = (token_node >= 0) & (token_node != prev)
  return jnp.where(first, gap[jnp.clip(token_node, 0)], 0.0)


def _tree_signal(fn):
  """A registry entry for a one-forest function: vmapped over prompts and jitted (one compilation per shape)."""
  batched = jax.jit(jax.vmap(fn))

  def signal(ctx: SignalContext) -> np.ndarray:
    if ctx.trees is None:
      raise ValueError("this signal needs tree rollouts (rollouts_from='tree' or 'both')")
    a = ctx.trees.arrays
    stack = lambda name: np.stack([getattr(x, name) for x in a])
    return np.asarray(batched(stack("parent"), stack("is_leaf"), stack("valid"), stack("leaf_row"),
                              np.asarray(ctx.rollout.rewards, np.float32), stack("token_node")))
  return signal


def _oracle_judge(ctx: SignalContext) -> np.ndarray:
  o = ctx.truth.oracle
  return np.nan_to_num(np.abs(o[..., 1:] - o[..., :-1]))


register_signal(TokenSignal("entropy", "entropy H_t of the policy's next-token distribution (nats)",
                            lambda ctx: ctx.policy["entropy"]))
register_signal(TokenSignal("neg-logp", "−log p of the sampled token (EPTree's entropy proxy)",
                            lambda ctx: -ctx.policy["logp"]))
register_signal(TokenSignal("hsic-mi", "HSIC MI between h_t and the reference solution's final state",
                            lambda ctx: ctx.extras["mi"], needs_extras=("mi",)))
register_signal(TokenSignal("info-gain", "|IG_t| = |log p(y*|x,o≤t) − log p(y*|x,o<t)|",
                            lambda ctx: np.abs(ctx.extras["info_gain"]), needs_extras=("info_gain",)))
register_signal(TokenSignal(
    "xroll-sigma", "σ_t over the group of log p(y*|x,o≤t) at position t (shared by the group)",
    lambda ctx: np.asarray(jax.vmap(running_answer_sigma)(ctx.extras["info_gain"], ctx.rollout.mask)),
    needs_extras=("info_gain",)))
register_signal(TokenSignal(
    "xroll-sigma-delta", "|σ_t − σ_{t−1}|: where the group's answer likelihoods split",
    lambda ctx: np.asarray(jax.vmap(running_answer_sigma_delta)(ctx.extras["info_gain"], ctx.rollout.mask)),
    needs_extras=("info_gain",)))
register_signal(TokenSignal(
    "early-position", "control, not a signal: −t (earlier tokens score higher)",
    lambda ctx: -np.broadcast_to(np.arange(ctx.rollout.mask.shape[-1], dtype=np.float64), ctx.rollout.mask.shape)))
register_signal(TokenSignal("oracle-judge", "|oracle(o≤t) − oracle(o<t)| (exact prefix value; upper bound)",
                            _oracle_judge))
register_signal(TokenSignal(
    "tree-sibling-gap", "tree rollouts: |A(s)| of the token's segment s, A(s) = [(V(s) − V(root)) + (V(s) − "
    "V(parent))]/sqrt(|leaves(s)|) (TreeRL), V = mean leaf reward below",
    _tree_signal(tree_sibling_gap), needs_tree=True))
register_signal(TokenSignal(
    "tree-fork-gap", "tree rollouts: |V(s) − V(parent s)| on the first token of each segment s (where siblings "
    "diverge), 0 elsewhere", _tree_signal(tree_fork_gap), needs_tree=True))


# ------------------------------------------------------------------------------------ the study


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
                       namespace: int = _NS_CONTINUATIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """V̂ of every prefix: `[N, G, T + 1]` values, their K-sample standard errors (plug-in and
  smoothed, see `GroundTruth`), and the number of distinct prefixes continued.

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
  index, pairs = _prefix_table(rollout)
  p = rollout.prompt.shape[1]
  width = p + t - 1  # the longest prefix is T - 1 tokens (a full-budget response minus its last token)
  skip = np.zeros(len(pairs), bool)
  if lost is not None:
    skip[index[(index >= 0) & lost]] = True
  order = sorted((u for u in range(len(pairs)) if not skip[u]), key=lambda u: pairs[u][1])
  mean = np.zeros(len(pairs), np.float64)
  base_key = jax.random.fold_in(jax.random.key(config.seed), namespace)
  cache: dict[tuple[int, str], float] = {}
  c = config.prefix_batch
  chunks = [order[s:s + c] for s in range(0, len(order), c)]
  tk = task.tokenizer
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
      wins = 0.0
      for s in range(k_cont):
        if not np.isin(cont[r, s, :t - k], tk.eos_ids).any():
          continue  # no EOS within the remaining budget: reward 0
        text = head + tk.decode(cont[r, s])
        key = (i, text)
        if key not in cache:
          cache[key] = float(task.reward(problems[i], text))
        wins += cache[key]
      mean[u] = wins / k_cont
  values = np.full((n, g, t + 1), np.nan)
  se = np.full((n, g, t + 1), np.nan)
  se_smooth = np.full((n, g, t + 1), np.nan)
  lengths = rollout.mask.sum(-1)
  for i in range(n):
    for j in range(g):
      length = int(lengths[i, j])
      v = mean[index[i, j, :length]]
      values[i, j, :length] = v
      se[i, j, :length] = np.sqrt(v * (1.0 - v) / k_cont)
      smooth = (v * k_cont + 1.0) / (k_cont + 2.0)
      se_smooth[i, j, :length] = np.sqrt(smooth * (1.0 - smooth) / k_cont)
      values[i, j, length] = rollout.rewards[i, j]
      se[i, j, length] = se_smooth[i, j, length] = 0.0
  return values, se, se_smooth, len(order)


def oracle_values(task: Task, problems: Sequence[Problem], rollout: Rollout) -> np.ndarray:
  """`[N, G, T + 1]` exact prefix values (k = L: the reward); NaN beyond L."""
  n, g, t = rollout.tokens.shape
  out = np.full((n, g, t + 1), np.nan)
  lengths = rollout.mask.sum(-1)
  for i in range(n):
    memo: dict[str, float] = {}
    for j in range(g):
      length = int(lengths[i, j])
      for k in range(length):
        text = task.tokenizer.decode(rollout.tokens[i, j, :k])
        if text not in memo:
          memo[text] = float(task.prefix_value(problems[i], text))
        out[i, j, k] = memo[text]
      out[i, j, length] = rollout.rewards[i, j]
  return out


def ground_truth(graphdef, params, task: Task, problems: Sequence[Problem], rollout: Rollout,
                 config: IdentifyConfig, *, progress: bool = False, namespace: int = _NS_CONTINUATIONS
                 ) -> GroundTruth:
  oracle = oracle_values(task, problems, rollout)
  lost = (oracle[..., :-1] == 0.0) if config.skip_lost else None
  values, value_se, value_se_smooth, unique = monte_carlo_values(graphdef, params, task, problems, rollout, config,
                                                                 lost=lost, progress=progress, namespace=namespace)
  mask = rollout.mask
  adv = np.where(mask, np.nan_to_num(values[..., 1:] - values[..., :-1]), 0.0)
  pair_se = lambda se: np.where(mask, np.sqrt(np.nan_to_num(se[..., 1:]) ** 2 + np.nan_to_num(se[..., :-1]) ** 2),
                                 0.0)
  # Where the oracle says a prefix is lost, V = 0 exactly (every continuation fails): no MC error.
  value_se_smooth = np.where(oracle == 0.0, 0.0, value_se_smooth)
  fatal = mask & (np.nan_to_num(oracle[..., :-1]) == 1.0) & (np.nan_to_num(oracle[..., 1:], nan=1.0) == 0.0)
  return GroundTruth(values, value_se, adv, pair_se(value_se), pair_se(value_se_smooth), oracle, fatal, unique)


_response_logprobs_jit = None


def policy_forward(graphdef, params, rollout: Rollout, config: IdentifyConfig) -> dict[str, np.ndarray]:
  """`{"logp", "entropy"}` `[N, G, T]` from the train step's forward (`response_logprobs`), batched by prompts."""
  global _response_logprobs_jit
  from tcred.training.step import response_logprobs  # local: training imports evaluation

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
                  config: IdentifyConfig, names: tuple[str, ...]) -> dict[str, np.ndarray]:
  """The `compute_extras` outputs `names` (the training pipeline's jitted function), batched by prompts."""
  names = validate_extras(names)
  if not names:
    return {}
  answer, answer_valid = encode_answers(task, problems)
  solution, solution_valid = encode_solutions(task, problems)
  cue_id = task.tokenizer.cue_id(task.answer_cue)
  return _batched(lambda *a: compute_extras(graphdef, params, *a, names=names, temperature=config.temperature,
                                            cue_id=cue_id, mi=config.mi_inputs),
                  (rollout.prompt, rollout.prompt_valid, rollout.tokens, rollout.mask, answer, answer_valid,
                   solution, solution_valid), config.extras_batch)


class StudyData(NamedTuple):
  """One study's raw material: rollouts, ground truth, and every registered signal `[N, G, T]`.

  `trees`: the forests when the rollouts are tree leaves (`source == "tree"`), else None.
  """

  task_name: str
  task_answer_cue: str
  problems: list[Problem]
  config: IdentifyConfig
  rollout: Rollout
  truth: GroundTruth
  signals: dict[str, np.ndarray]
  policy: dict[str, np.ndarray]
  extras: dict[str, np.ndarray]
  timings: dict[str, float]
  trees: Trees | None = None
  source: str = "chains"
  tokenizer: Any = None  # the task's `TaskTokenizer` (answer cue id, token text in the plots)


def run_study(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig, *,
              signals: Sequence[str] | None = None, progress: bool = False, source: str = "chains") -> StudyData:
  """Samples the rollouts (`source`: "chains" or "tree"), estimates the ground truth, computes the signals
  (default: every registered signal the source supports; tree signals need tree rollouts)."""
  problems = list(problems)
  if len(problems) != config.prompts:
    raise ValueError(f"got {len(problems)} problems for config.prompts={config.prompts}")
  if source not in ("chains", "tree"):
    raise ValueError(f"source must be one of chains, tree, got {source!r}")
  tree = source == "tree"
  chosen = [get_signal(s) for s in (signal_names(trees=tree) if signals is None else signals)]
  if not tree and any(s.needs_tree for s in chosen):
    raise ValueError(f"signals {[s.name for s in chosen if s.needs_tree]} need tree rollouts (source='tree')")
  timings = {}
  t0 = time.time()
  trees = None
  if tree:
    rollout, trees = sample_tree_rollouts(graphdef, params, task, problems, config)
  else:
    rollout = sample_rollouts(graphdef, params, task, problems, config)
  timings["rollouts_s"] = time.time() - t0
  t0 = time.time()
  policy = policy_forward(graphdef, params, rollout, config)
  names = tuple(sorted({n for s in chosen for n in s.needs_extras}))
  extras = signal_extras(graphdef, params, task, problems, rollout, config, names)
  timings["signals_forward_s"] = time.time() - t0
  t0 = time.time()
  truth = ground_truth(graphdef, params, task, problems, rollout, config, progress=progress,
                       namespace=_NS_TREE_CONTINUATIONS if tree else _NS_CONTINUATIONS)
  timings["ground_truth_s"] = time.time() - t0
  t0 = time.time()
  ctx = SignalContext(task, problems, graphdef, params, config,
                      jax.random.fold_in(jax.random.key(config.seed), _NS_BOOTSTRAP + 1), rollout, truth, policy,
                      extras, trees)
  values = {}
  for s in chosen:
    v = np.asarray(s.fn(ctx), np.float64)
    if v.shape != rollout.mask.shape:
      raise ValueError(f"signal {s.name!r} returned shape {v.shape}, expected {rollout.mask.shape}")
    values[s.name] = np.where(rollout.mask, v, 0.0)
  timings["signals_s"] = time.time() - t0
  return StudyData(task.name, task.answer_cue, problems, config, rollout, truth, values, policy, extras, timings,
                   trees, source, task.tokenizer)


# ------------------------------------------------------------------------------------ metrics


METRICS = ("auroc_decisive", "auroc_decisive_same_position", "auroc_decisive_reasoning", "spearman_abs_adv",
           "precision_top", "auroc_fatal")


class SignalScore(NamedTuple):
  """One signal's metrics (`METRICS` order), each a point estimate with a (low, high) CI."""

  values: dict[str, float]
  ci: dict[str, tuple[float, float]]


class Overlap(NamedTuple):
  """High-entropy set vs MI sets (all over the pooled valid tokens)."""

  jaccard_top: float  # top-fraction by entropy vs top-fraction by MI (forking_mask on each, pooled)
  jaccard_top_chance: float
  jaccard_peaks: float  # top-fraction by entropy vs MI peaks (mi_peaks per rollout, Tukey fence)
  jaccard_peaks_chance: float
  peak_fraction: float  # share of tokens that are MI peaks
  spearman: float  # entropy vs MI, pooled
  spearman_within: float  # mean over rollouts (≥ 3 tokens) of the within-rollout Spearman
  spearman_ci: tuple[float, float]
  jaccard_top_ci: tuple[float, float]


class Results(NamedTuple):
  scores: dict[str, SignalScore]
  overlap: Overlap | None
  decisive_rate: float
  fatal_rate: float
  tokens: int
  mean_advantage_se: float
  signed: dict[str, float]  # Spearman of signed signals with signed A_t
  noise_positive_rate: float  # expected share of |A| ≥ δ from MC noise alone (normal approx.)
  reward_mean: float
  timings: dict[str, float]


def reasoning_mask(cue_id: int, rollout: Rollout) -> np.ndarray:
  """`[N, G, T]` bool: valid tokens before the first answer cue (no cue: all but the last token)."""
  from tcred.credit.extras import cue_index

  cue = np.asarray(cue_index(jnp.asarray(rollout.tokens), jnp.asarray(rollout.mask),
                             cue_id))  # [N, G]
  return rollout.mask & (np.arange(rollout.mask.shape[-1]) < cue[..., None])


def _flat_valid(data: StudyData):
  mask = data.rollout.mask
  flat = lambda x: np.asarray(x)[mask]
  n, g, _ = mask.shape
  prompt_of = np.broadcast_to(np.arange(n)[:, None, None], mask.shape)[mask]
  clusters = [np.flatnonzero(prompt_of == i) for i in range(n)]
  return flat, clusters


def _normal_two_sided_tail(z: np.ndarray) -> np.ndarray:
  """P(|Z| ≥ z) for a standard normal, via math.erfc."""
  return np.vectorize(lambda v: math.erfc(v / math.sqrt(2.0)))(z)


def evaluate_study(data: StudyData) -> Results:
  """Every metric of every signal, with cluster-bootstrap CIs over prompts, and the entropy–MI overlap."""
  t0 = time.time()
  cfg = data.config
  flat, clusters = _flat_valid(data)
  abs_adv = np.abs(flat(data.truth.advantages))
  decisive = abs_adv >= cfg.delta
  fatal = flat(data.truth.fatal)
  reasoning = flat(reasoning_mask(data.tokenizer.cue_id(data.task_answer_cue), data.rollout))
  position = flat(np.broadcast_to(np.arange(data.rollout.mask.shape[-1]), data.rollout.mask.shape))
  frac = cfg.top_fraction

  def metrics_of(score: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    s = score[idx]
    return {"auroc_decisive": im.auroc(s, decisive[idx]), "spearman_abs_adv": im.spearman(s, abs_adv[idx]),
            "precision_top": im.top_fraction_precision(s, decisive[idx], frac),
            "auroc_fatal": im.auroc(s, fatal[idx]),
            "auroc_decisive_reasoning": im.auroc(s[reasoning[idx]], decisive[idx][reasoning[idx]]),
            "auroc_decisive_same_position": im.stratified_auroc(s, decisive[idx], position[idx])}

  everything = np.arange(abs_adv.shape[0])
  rng = np.random.default_rng([_NS_BOOTSTRAP, cfg.seed])
  scores = {}
  for name, signal in data.signals.items():
    s = flat(signal)
    point = metrics_of(s, everything)
    ci = {m: (math.nan, math.nan) for m in METRICS}
    if cfg.bootstrap:
      boot = {m: [] for m in METRICS}
      state = np.random.default_rng(rng.integers(2**63))
      for _ in range(cfg.bootstrap):
        idx = np.concatenate([clusters[i] for i in state.integers(0, len(clusters), size=len(clusters))])
        for m, v in metrics_of(s, idx).items():
          boot[m].append(v)
      for m in METRICS:
        v = np.asarray(boot[m])
        v = v[np.isfinite(v)]
        if v.size >= max(1, cfg.bootstrap // 2):
          ci[m] = tuple(float(q) for q in np.quantile(v, [0.025, 0.975]))
    scores[name] = SignalScore(point, ci)

  overlap = None
  if "entropy" in data.signals and "hsic-mi" in data.signals:
    overlap = entropy_mi_overlap(data, rng)

  signed = {}
  adv = flat(data.truth.advantages)
  if "info_gain" in data.extras:
    signed["info-gain (signed)"] = im.spearman(flat(data.extras["info_gain"]), adv)
  o = data.truth.oracle
  signed["oracle Δ (signed)"] = im.spearman(flat(np.nan_to_num(o[..., 1:] - o[..., :-1])), adv)
  se = flat(data.truth.advantage_se)
  # A token with true A = 0 is labelled decisive with probability P(|Z| ≥ δ / SE); averaged over tokens,
  # with the smoothed SE (the plug-in SE is 0 whenever V̂ is 0 or 1).
  se_smooth = flat(data.truth.advantage_se_smoothed)
  z = np.where(se_smooth > 0, cfg.delta / np.maximum(se_smooth, 1e-12), np.inf)
  noise_rate = float(np.mean(_normal_two_sided_tail(z))) if z.size else math.nan
  timings = dict(data.timings)
  timings["metrics_s"] = time.time() - t0
  return Results(scores, overlap, float(decisive.mean()), float(fatal.mean()), int(abs_adv.shape[0]),
                 float(se.mean()), signed, noise_rate, float(data.rollout.rewards.mean()), timings)


def entropy_mi_overlap(data: StudyData, rng: np.random.Generator) -> Overlap:
  """Do the high-entropy tokens and the MI peaks coincide? (DESIGN §5's open question)

  Sets use the training code's selectors: `forking_mask` (top fraction, pooled over the study,
  ties kept) on entropy and on MI, and `mi_peaks` (per rollout, the configured rule) on MI.
  """
  cfg = data.config
  mask = data.rollout.mask
  ent, mi = data.signals["entropy"], data.signals["hsic-mi"]
  top_ent = np.asarray(forking_mask(ent, mask, rho=cfg.top_fraction))
  top_mi = np.asarray(forking_mask(mi, mask, rho=cfg.top_fraction))
  n, g, t = mask.shape
  peaks = np.asarray(jax.vmap(lambda m, k: mi_peaks(m, k, tau=cfg.mi_tau, rule=cfg.mi_peak_rule, k=cfg.mi_peak_k))(
      jnp.asarray(mi.reshape(n * g, t), jnp.float32), jnp.asarray(mask.reshape(n * g, t)))).reshape(mask.shape)
  flat, clusters = _flat_valid(data)
  a, b, c = flat(top_ent), flat(top_mi), flat(peaks)
  e, m = flat(ent), flat(mi)
  total = a.shape[0]
  within = []
  for i in range(n):
    for j in range(g):
      valid = mask[i, j]
      if valid.sum() >= 3:
        r = im.spearman(ent[i, j][valid], mi[i, j][valid])
        if math.isfinite(r):
          within.append(r)
  sp_ci = jac_ci = (math.nan, math.nan)
  if cfg.bootstrap:
    sp_ci = im.cluster_bootstrap_ci(lambda idx: im.spearman(e[idx], m[idx]), clusters, reps=cfg.bootstrap, rng=rng)
    jac_ci = im.cluster_bootstrap_ci(lambda idx: im.jaccard(a[idx], b[idx]), clusters, reps=cfg.bootstrap, rng=rng)
  return Overlap(
      jaccard_top=im.jaccard(a, b), jaccard_top_chance=im.chance_jaccard(int(a.sum()), int(b.sum()), total),
      jaccard_peaks=im.jaccard(a, c), jaccard_peaks_chance=im.chance_jaccard(int(a.sum()), int(c.sum()), total),
      peak_fraction=float(c.mean()) if total else math.nan, spearman=im.spearman(e, m),
      spearman_within=float(np.mean(within)) if within else math.nan, spearman_ci=sp_ci, jaccard_top_ci=jac_ci)


def describe_signals() -> dict[str, str]:
  return {name: s.description for name, s in _SIGNALS.items()}


def _check_prompts(cfg, prompts: int) -> int:
  n_eval = cfg.rl.held_out_prompts
  if prompts > n_eval:
    raise UsageError(f"--prompts must be <= {n_eval} (the held-out prompts excluded from the policy's "
                     f"training), got {prompts}")
  return n_eval


def _check_mi_layer(cfg, mi_layer: int) -> None:
  layers = cfg.model.num_hidden_layers
  if not -layers <= mi_layer < layers:
    raise UsageError(f"--mi-layer {mi_layer} must be in [{-layers}, {layers}) for this policy's {layers} decoder "
                     "layers (negative: from the last layer)")


def load_policy(task_name: str, policy: str, *, prompts: int = 1, progress: bool = False, mi_layer: int = -1
                ) -> tuple[Any, nnx.GraphDef, nnx.State, str]:
  """The policy of a study: `"base"` (the cached SFT base of `<task>-grpo`) or a run directory's final checkpoint.

  Returns `(experiment config, graphdef, params, description)`. Raises UsageError with the allowed
  values for an unknown task, a directory that is not a run of this task with a checkpoint, or
  more `prompts` than the held-out prompts excluded from the policy's training, or an `mi_layer` the
  policy does not have; all before any policy is built or read.
  """
  import json
  import pathlib

  from tcred import experiments
  from tcred.tasks.registry import make_task_from_config
  from tcred.training.config import config_from_dict
  from tcred.training.export import ExportError, run_policy
  from tcred.training.sft import base_policy

  from tcred.tasks.registry import task_entry, task_names

  # Registered tasks with an exact oracle and a `<task>-grpo` experiment (its config defines the base policy).
  names = set(experiments.experiment_names())
  tasks = [t for t in task_names() if f"{t}-grpo" in names and getattr(task_entry(t).task_cls, "has_oracle", True)]
  if task_name not in tasks:
    raise UsageError(f"unknown task {task_name!r} (identify needs a task with an exact oracle and a "
                     f"`<task>-grpo` experiment); allowed: {', '.join(tasks)}")
  if policy == "base":
    cfg = experiments.get_experiment(f"{task_name}-grpo")
    task = make_task_from_config(cfg.task, cfg.task_config)
    n_eval = _check_prompts(cfg, prompts)
    _check_mi_layer(cfg, mi_layer)
    graphdef, params, directory = base_policy(cfg.model, task, cfg.task_config, cfg.sft, eval_prompts=n_eval,
                                              progress=progress)
    return cfg, graphdef, params, f"SFT base policy of `{cfg.name}` (`{directory}`)"
  run_dir = pathlib.Path(policy)
  config_path = run_dir / "config.json"
  if not config_path.is_file():
    raise UsageError(f"--policy {policy!r}: allowed values are 'base' or a run directory holding config.json "
                     "and checkpoints/ (e.g. runs/countdown-grpo/seed-0)")
  try:
    cfg = config_from_dict(json.loads(config_path.read_text()))
  except (ValueError, KeyError, TypeError) as e:  # e.g. a Hugging Face model directory (its own config.json)
    raise UsageError(f"--policy {policy!r} is not a tcred run directory: its config.json is not a tcred run config "
                     f"({type(e).__name__}: {e}); allowed values are 'base' or a run directory of `tcred run` "
                     "(e.g. runs/countdown-grpo/seed-0)") from None
  if cfg.task != task_name:
    raise UsageError(f"--policy {policy!r} is a run of task {cfg.task!r}, not {task_name!r}")
  _check_prompts(cfg, prompts)
  _check_mi_layer(cfg, mi_layer)
  if not (run_dir / "checkpoints").is_dir():
    raise UsageError(f"--policy {policy!r}: no checkpoints/ directory; allowed values are 'base' or a run "
                     "directory with checkpoints")
  try:
    cfg, graphdef, params, step = run_policy(run_dir)  # the last usable checkpoint, as `tcred export`
  except ExportError as e:
    raise UsageError(f"--policy {policy!r}: {e}") from e
  return cfg, graphdef, params, f"`{cfg.name}` seed {json.loads(config_path.read_text()).get('seed')} " \
                                      f"checkpoint step {step} (`{run_dir}`)"


def identify(task_name: str, *, policy: str = "base", config: IdentifyConfig = IdentifyConfig(),
             out: Any = "benchmarks/results", command: str = "", progress: bool = False
             ) -> tuple[StudyData, Results, Any, Any]:
  """The whole study of `tcred identify`: loads the policy, runs the study on the first N held-out
  prompts (`eval_problems`), writes `out/identify-<task>.md` and `out/identify-<task>.png`.

  Returns (data, results, md path, png path). Raises UsageError for a bad task, policy or --prompts.
  """
  from tcred.tasks.registry import make_task_from_config
  from tcred.training.data import eval_problems

  t_start = time.time()
  load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
  cfg, graphdef, params, description = load_policy(task_name, policy, prompts=config.prompts, progress=progress,
                                                   mi_layer=config.mi_layer)
  task = make_task_from_config(cfg.task, cfg.task_config)
  load_s = time.time() - t_start
  return write_study(graphdef, params, task, eval_problems(task, config.prompts), config, out=out,
                     name=task_name, progress=progress,
                     meta={"command": command or f"tcred identify {task_name}", "policy": description,
                           "load_s": load_s, "task_config": repr(cfg.task_config), "load_start": load_start},
                     t_start=t_start)


def write_study(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig, *, out: Any,
                name: str, meta: dict[str, Any], progress: bool = False, t_start: float | None = None
                ) -> tuple[StudyData, Results, Any, Any]:
  """Runs the study of `problems` and writes `out/identify-<name>.md` and `.png`.

  `config.rollouts_from`: "chains" or "tree" run one study (the report and plot of its rollouts);
  "both" runs the chain study, then the tree study, and writes one report (the chain sections, then
  a tree section) with a second plot `identify-<name>-tree.png`.

  `meta`: `command`, `policy` (a description), optionally `load_s` and `task_config`.
  Returns (data, results, md path, png path) of the first study (chains unless `rollouts_from="tree"`);
  `write_studies` also returns the tree study of "both".
  """
  data, results, md_path, png_path, _ = write_studies(graphdef, params, task, problems, config, out=out, name=name,
                                                      meta=meta, progress=progress, t_start=t_start)
  return data, results, md_path, png_path


def write_studies(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig, *, out: Any,
                  name: str, meta: dict[str, Any], progress: bool = False, t_start: float | None = None):
  """`write_study`, also returning the tree study: (data, results, md, png, tree) where `tree` is
  (tree data, tree results, tree png) with `rollouts_from="both"`, else None."""
  import pathlib

  from tcred.evaluation import identify_report

  t_start = time.time() if t_start is None else t_start
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  md_path, png_path = out / f"identify-{name}.md", out / f"identify-{name}.png"
  first = "tree" if config.rollouts_from == "tree" else "chains"
  data = run_study(graphdef, params, task, problems, config, progress=progress, source=first)
  results = evaluate_study(data)
  identify_report.plot(data, results, png_path)
  tree = None
  if config.rollouts_from == "both":
    tree_png = out / f"identify-{name}-tree.png"
    tree_data = run_study(graphdef, params, task, problems, config, progress=progress, source="tree")
    tree_results = evaluate_study(tree_data)
    identify_report.plot(tree_data, tree_results, tree_png)
    tree = (tree_data, tree_results, tree_png)
  meta = {"task_config": "", "load_s": 0.0, **meta, "wall_s": time.time() - t_start,
          "machine": identify_report.machine_description(), "png": png_path.name}
  text = identify_report.markdown_report(data, results, meta)
  if tree is not None:
    text += identify_report.tree_section(tree[0], tree[1], tree[2].name)
  md_path.write_text(text)
  return data, results, md_path, png_path, tree
