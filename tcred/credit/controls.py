"""Controls of the credit suite (DESIGN §5 "Credit suite", issue 24): methods whose credit is known to be
right (positive) or known to carry no information about which tokens mattered (negative), registered like
every credit method so that a table can place the other methods between them.

Positive controls (tasks with an exact oracle; both score every step on the host, `host_extras`):

  policy-value   the policy's own step values from C Monte-Carlo continuations (the `mc` judge,
                 `tcred.judges.mc`, VinePPO's A^π, arXiv 2410.01679): with V_k the value after step k
                 (V_0 the prompt's, V_K = the rollout's reward R_i), token t of step k(t) gets

                   A_{i,t} = V_{i,k(t)} − V_{i,k(t)−1}     (norm="none", the default)

                 summing over the steps to R_i − V_0: an outcome advantage with a Monte-Carlo baseline,
                 placed on the steps that changed the value. norm="group" group-normalises the changes
                 as the `judge` method does (today's judge credit, kept for comparison).
  verifier       exact step correctness from the oracle (a perfect process reward): with v_k the task's
                 prefix value after step k (`Task.prefix_value`: can a correct answer still be reached?;
                 v_K the rollout's own reward, so a last step that ends a wrong answer is wrong), step k
                 gets the process reward (`verifier_step_rewards`)

                   r_k = +1  if v_{k−1} = 1 and v_k = 1   (a correct step)
                         −1  if v_{k−1} = 1 and v_k = 0   (the fatal step: the first that loses the answer)
                          0  if v_{k−1} = 0               (after the fatal step; after_fatal="negative": −1;
                                                            "local": ±1 by the step's own label)

                 and A_{i,t} = A_i + λ · r_{k(t)} (outcome=True, A_i GRPO's outcome advantage) or
                 A_{i,t} = λ · r_{k(t)} (outcome=False: pure process advantage).

What each control rewards after a fatal step (the issue's [1,1,1,1] / [1,1,0,0] case, where today's
group-normalised judge credit gives the doomed rollout's last step +0.447): nothing. policy-value: after the
fatal step every continuation fails, so V is 0 before and after each later step and their A^π is 0 exactly
(a finite C cannot make it otherwise: no continuation of a dead prefix wins); the fatal step gets −V_{k−1}.
verifier: r = 0 after the fatal step (by default), so those tokens carry the outcome advantage alone (negative
in a doomed rollout) or, in the pure process form, nothing; the fatal step alone is blamed. after_fatal=
"negative" instead judges every step on a dead prefix wrong (the strict per-step label of a verifier that
checks each step against reachability). after_fatal="local" judges a step after the fatal one on the prefix
as written (`Task.step_label`, the lock-chain and long-addition tasks: a right key after a wrong one, a column
added right from a wrong carry, +1; a wrong one −1): the per-step label of a human-style process reward, which
carries an earlier error forward instead of charging every later step with it. The `judge` method
(`<task>-judge-oracle`) keeps today's credit.

Negative controls (any task):

  random-mask    the policy gradient on a uniformly random ρ-fraction of each response's tokens: exactly
                 ceil(ρ·n) of its n valid tokens, every such subset equally likely (`random_token_mask`),
                 GRPO's advantage on them; the loss divides by the kept tokens (as `entropy-mask`). The
                 entropy mask (and every other token selection) must beat it before it can claim anything
                 (arXiv 2605.07660 reports that a random 20% keeps much of full-token performance).
  shuffled       any other registered method (`method`, `settings`) with each response's token credits
                 permuted among its own valid tokens (`shuffle_within_rows`): a token's credit is its
                 (advantage, loss weight) pair (and normaliser weight), moved as one, so every response
                 keeps the multiset of its credits and loses only where they sat. Shuffling a mask method
                 keeps its per-response token count at random positions; shuffling outcome credit changes
                 nothing (every token of a response has the same credit).

Randomness: the random methods (`stochastic = True`) draw inside the jitted train step from the step's
key: `host_extras` adds "credit_key" `[B, 2]` uint32, the raw key data of one key per prompt split from the
chunk's host key (`JudgeContext.key`, a pure function of seed and step), so a run is reproducible from its
seed; the mask and the shuffle draw from independent streams of it (`fold_in`).

Group conventions (`GroupNorm`): a group of one rollout gets no credit under lone="zero" (the default, as
every method: nothing to compare it with), filler groups none at all.

Shapes: B prompts, G rollouts, T response tokens, K steps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.advantages import AdvantageMode, GroupNorm
from tcred.credit.base import (Credit, CreditInputs, CreditMethod, HostExtras, credit_class, credit_names,
                               make_credit, register_credit)
from tcred.credit.judge import judge_host_extras
from tcred.credit.outcome import outcome_advantages, per_token, valid_tokens
from tcred.credit.signal_methods import MASK_NORMALISERS
from tcred.judges.base import JudgeContext, make_judge
from tcred.judges.credit import ProcessNorm, process_advantages, steps_to_tokens
from tcred.sampling.rollout import Groups
from tcred.signals.entropy import pooled_forking_mask
from tcred.tasks.base import Problem, Task
from tcred.validation import Choice, parse_settings, require_finite

CREDIT_KEY = "credit_key"
"""The extra holding each prompt's PRNG key data `[B, 2]` uint32 for the random methods."""

_MASK_STREAM, _SHUFFLE_STREAM = 0, 1  # `fold_in` data of the two independent streams of a prompt's key


def credit_key_data(key: jax.Array, prompts: int) -> np.ndarray:
  """`[prompts, 2]` uint32: the raw data of one key per prompt, split from `key` (typed or raw)."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  return np.asarray(jax.random.key_data(jax.random.split(key, prompts)), np.uint32)


def _prompt_keys(inputs: CreditInputs, stream: int) -> jax.Array:
  """`[B]` typed keys of one stream, from the "credit_key" extra."""
  keys = jax.random.wrap_key_data(jnp.asarray(inputs.extras[CREDIT_KEY], jnp.uint32))
  return jax.vmap(lambda k: jax.random.fold_in(k, stream))(keys)


# ------------------------------------------------------------------ pure functions of one group


class AfterFatal(Choice):
  """What the perfect verifier's process reward gives a step after the fatal one (module docstring)."""

  ZERO = "zero"
  NEGATIVE = "negative"
  LOCAL = "local"


def verifier_step_rewards(values, valid, *, after_fatal: str = "zero", labels=None):
  """[G, K + 1] float32: the perfect verifier's process reward r_k of each step (module docstring).

  Args:
    values: [G, K + 1] oracle prefix values v_0 … v_K (the oracle gives 0 or 1; v ≥ 0.5 counts as 1).
    valid: [G, K + 1] bool, True where the rollout has that step (v_0 always).
    after_fatal: an `AfterFatal` (static): r of a step taken after the fatal one ("zero": 0,
      "negative": −1, "local": its label).
    labels: [G, K + 1] float, with after_fatal="local" only: each step's label on the prefix as written
      (`Task.step_label`: +1 right, −1 wrong, 0 unreadable; column 0 unused).

  Returns:
    r with column 0 (no step) and the invalid steps 0.
  """
  rule = AfterFatal.parse(after_fatal, field="after_fatal")
  if (rule is AfterFatal.LOCAL) != (labels is not None):
    raise ValueError('verifier_step_rewards needs step labels with after_fatal="local" and only then')
  alive = jnp.asarray(values, jnp.float32) >= 0.5  # [G, K + 1]
  valid = jnp.asarray(valid, bool)
  before, after = alive[:, :-1], alive[:, 1:]  # [G, K]
  if rule is AfterFatal.LOCAL:
    dead = jnp.asarray(labels, jnp.float32)[:, 1:]
  else:
    dead = -1.0 if rule is AfterFatal.NEGATIVE else 0.0
  r = jnp.where(before, jnp.where(after, 1.0, -1.0), dead)
  r = jnp.where(valid[:, 1:] & valid[:, :-1], r, 0.0)
  return jnp.concatenate([jnp.zeros((r.shape[0], 1), jnp.float32), r], axis=1)


def random_token_mask(key: jax.Array, mask, *, rho: float):
  """[G, T] bool: exactly ceil(ρ·n_g) of each row's n_g valid tokens, uniformly at random.

  Each row keeps the k = ceil(ρ·n) valid tokens of smallest uniform key (ties broken by position, probability
  ~2⁻²³ per pair), so every k-subset of its valid tokens is equally likely and each valid token is kept with
  probability k / n; `pooled_forking_mask` with ties="exact", pool="sequence" on the keys negated (one
  implementation of ceil(ρ·n)).

  Args:
    key: a PRNG key; mask: [G, T] bool valid tokens; rho: static, in (0, 1].
  """
  mask = jnp.asarray(mask, bool)
  u = jax.random.uniform(key, mask.shape)
  return pooled_forking_mask(-u, mask, rho=rho, ties="exact", pool="sequence")


def shuffle_permutation(key: jax.Array, mask):
  """[T] int32 source index of each position: a uniformly random permutation of the row's valid positions
  among themselves; every padded position maps to itself.

  `x[shuffle_permutation(key, mask)]` keeps x on padding and permutes the valid values, so the multiset
  of valid values is unchanged.

  Args:
    key: a PRNG key; mask: [T] bool valid tokens (anywhere in the row, not only a prefix).
  """
  mask = jnp.asarray(mask, bool)
  t = mask.shape[0]
  positions = jnp.arange(t, dtype=jnp.int32)
  big = jnp.float32(2.0)  # above every uniform key: padding after the valid positions
  order = jnp.argsort(jnp.where(mask, jax.random.uniform(key, (t,)), big), stable=True)  # valid in random order
  slots = jnp.argsort(jnp.where(mask, positions, t + positions), stable=True)  # valid in order, then padding
  return jnp.zeros(t, jnp.int32).at[slots].set(order.astype(jnp.int32))


def shuffle_within_rows(key: jax.Array, mask, *arrays):
  """Each `[G, T]` array of `arrays` with every row's valid entries permuted by the same random permutation
  (one per row, `shuffle_permutation`); padding unchanged. Returns a tuple like `arrays`."""
  mask = jnp.asarray(mask, bool)
  keys = jax.random.split(key, mask.shape[0])
  source = jax.vmap(shuffle_permutation)(keys, mask)  # [G, T]
  return tuple(jnp.take_along_axis(jnp.asarray(x), source, axis=1) for x in arrays)


def step_labels(task: Task, problems: Sequence[Problem], texts: Sequence[Sequence[str]], width: int) -> np.ndarray:
  """`[B, G, width]` float32: +1 / −1 where `Task.step_label` calls step k of response `texts[b][g]` (cut by
  `task.step_ends`) right / wrong on its prefix as written, 0 where it gives no label; column 0 (no step) and
  the columns past the response's steps 0."""
  out = np.zeros((len(texts), len(texts[0]) if texts else 0, width), np.float32)
  for i, (problem, group) in enumerate(zip(problems, texts)):
    for j, text in enumerate(group):
      start = 0
      for k, end in enumerate(task.step_ends(text), start=1):
        label = task.step_label(problem, text[:start], text[start:end])
        out[i, j, k] = 0.0 if label is None else (1.0 if label else -1.0)
        start = end
  return out


# ------------------------------------------------------------------ positive controls


def _lone_or_filler(process: jax.Array, inputs: CreditInputs, lone: str) -> jax.Array:
  """The process credit with filler groups zeroed, and a group of one zeroed under lone="zero"."""
  process = jnp.where(inputs.group_valid[:, None, None], process, 0.0)
  if inputs.mask.shape[1] == 1 and lone == "zero":
    process = jnp.zeros_like(process)
  return process


def _step_metric(process: jax.Array, weights: jax.Array) -> jax.Array:
  return jnp.sum(jnp.where(weights, jnp.abs(process), 0.0)) / jnp.maximum(jnp.sum(weights), 1)


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyValue(GroupNorm, CreditMethod):
  """Positive control: A^π = V(after step) − V(before step) on the step's tokens, V from `continuations`
  Monte-Carlo continuations of the current policy (module docstring).

  Label noise: each V_k (k < K) is a Bernoulli mean of C continuations, standard error
  sqrt(V(1 − V) / C) ≤ 1 / (2√C): C = 16 (default) 0.125, 32 0.088, 64 0.0625; a step advantage (two
  independent means, or one and the exact reward) at most √2 times that (C = 16: 0.177). Logged as
  `credit/value_se`, the plug-in sqrt(V(1 − V) / C) averaged over the batch's valid step values.
  Cost: about C·K·T/2 continuation tokens per rollout (K steps, T the budget), logged as
  `counts/judge_tokens`.

  Attributes:
    continuations: C ≥ 1 continuations per distinct prefix (the `mc` judge's).
    fork_rows: continuation rows per sampler call (memory vs. calls; not a statistical setting).
    norm: a `ProcessNorm`: "none" (A^π as it is, default) or "group" (today's judge credit normaliser).
    std_ddof, eps, lone: the group normaliser's conventions (`GroupNorm`; eps and ddof used by
      norm="group"); lone="zero" gives a group of one no credit.
  """

  name = "policy-value"
  description = "positive control: the policy's own step values from many Monte-Carlo continuations (A^π)"
  host_cost = "judge"
  continuations: int = 16
  fork_rows: int = 256
  norm: str = "none"

  def __post_init__(self):
    super().__post_init__()
    ProcessNorm.parse(self.norm, field="credit.norm")
    try:
      self.make_judge()
    except (ValueError, TypeError) as e:
      raise ValueError(f"credit.continuations={self.continuations!r}, credit.fork_rows={self.fork_rows!r}: "
                       f"{e}") from None

  def make_judge(self):
    return make_judge("mc", continuations=self.continuations, fork_rows=self.fork_rows)

  def host_extras(self, task: Task, problems: Sequence[Problem], groups: Groups, ctx: JudgeContext) -> HostExtras:
    """The Monte-Carlo values of the chunk's rollouts (the current policy, rewards and token ids in `ctx`)."""
    return judge_host_extras(self.make_judge(), task, problems, groups, ctx)

  def __call__(self, inputs: CreditInputs) -> Credit:
    ex = inputs.extras
    process = jax.vmap(functools.partial(process_advantages, eps=self.eps, ddof=self.std_ddof, norm=self.norm))(
        ex["judge_scores"], ex["judge_valid"], ex["judge_steps"], inputs.mask)  # [B, G, T]
    process = _lone_or_filler(process, inputs, self.lone)
    weights = valid_tokens(inputs)
    v = jnp.clip(jnp.asarray(ex["judge_scores"], jnp.float32), 0.0, 1.0)
    sv = jnp.asarray(ex["judge_valid"], bool) & inputs.group_valid[:, None, None]
    se = jnp.sum(jnp.where(sv, jnp.sqrt(v * (1 - v) / self.continuations), 0.0)) / jnp.maximum(jnp.sum(sv), 1)
    return Credit(advantages=process, weights=weights.astype(jnp.float32),
                  metrics={"process_abs": _step_metric(process, weights), "value_se": se})


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class Verifier(GroupNorm, CreditMethod):
  """Positive control: a perfect process reward, exact step correctness from the task's oracle (module
  docstring): `A_{i,t} = A_i + λ · r_{k(t)}` (outcome=True) or `λ · r_{k(t)}` (outcome=False).

  Attributes:
    lam: λ ≥ 0, the process reward's weight (with outcome=False only a scale).
    outcome: whether the outcome advantage A_i is added (False: pure process advantage).
    after_fatal: an `AfterFatal`: "zero" (default), "negative" or "local" (the step's own label on the prefix
      as written, `Task.step_label`; tasks with `has_step_labels` only), r of a step after the fatal one.
    mode: the outcome advantage convention (`AdvantageMode`: GRPO's by default).
    std_ddof, eps, lone: the group normaliser's conventions (`GroupNorm`); lone="zero" gives a group of
      one no credit at all (process included).
  """

  name = "verifier"
  description = "positive control: outcome + λ × exact step correctness from the task's oracle (perfect PRM)"
  host_cost = "judge"
  lam: float = 0.5
  outcome: bool = True
  after_fatal: str = "zero"
  mode: str = "grpo"

  def __post_init__(self):
    super().__post_init__()
    AdvantageMode.parse(self.mode, field="credit.mode")
    AfterFatal.parse(self.after_fatal, field="credit.after_fatal")
    if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam >= 0:
      raise ValueError(f"credit.lam must be a number >= 0, got {self.lam!r}")
    if not isinstance(self.outcome, bool):
      raise ValueError(f"credit.outcome must be true or false, got {self.outcome!r}")

  def check_task(self, task_cls: type[Task]) -> None:
    if self.after_fatal == AfterFatal.LOCAL.value and not task_cls.has_step_labels:
      raise ValueError(f'credit.after_fatal="local" needs a task that labels steps after an error '
                       f"(Task.step_label); {task_cls.name!r} does not: use after_fatal=zero or negative")

  def host_extras(self, task: Task, problems: Sequence[Problem], groups: Groups, ctx: JudgeContext) -> HostExtras:
    """The oracle's prefix values of the chunk's rollouts, the last one replaced by the rollout's reward
    (an answer that ended wrong is wrong even where a longer answer could still be right); with
    after_fatal="local" also each step's label on the prefix as written ("step_labels", `step_labels`)."""
    extras = judge_host_extras(make_judge("oracle"), task, problems, groups, ctx)
    scores, valid = extras.arrays["judge_scores"], extras.arrays["judge_valid"]
    last = valid.sum(-1) - 1  # [B, G] index of s_K
    has_steps = last > 0
    rows = np.nonzero(has_steps)
    scores[rows + (last[rows],)] = np.asarray(groups.rewards, np.float32)[rows]
    if self.after_fatal == AfterFatal.LOCAL.value:
      extras.arrays["step_labels"] = step_labels(task, problems, groups.texts, scores.shape[-1])
    return extras

  def __call__(self, inputs: CreditInputs) -> Credit:
    ex = inputs.extras
    labels = ex["step_labels"] if self.after_fatal == AfterFatal.LOCAL.value else None
    per_step = jax.vmap(functools.partial(verifier_step_rewards, after_fatal=self.after_fatal))(
        ex["judge_scores"], ex["judge_valid"], labels=labels)  # [B, G, K + 1]
    process = jax.vmap(steps_to_tokens)(per_step, ex["judge_steps"], inputs.mask)  # [B, G, T]
    process = _lone_or_filler(process, inputs, self.lone)
    advantages = self.lam * process
    if self.outcome:
      outcome = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())
      advantages = per_token(outcome, inputs.mask) + advantages
    weights = valid_tokens(inputs)
    return Credit(advantages=advantages, weights=weights.astype(jnp.float32),
                  metrics={"process_abs": _step_metric(process, weights)})


# ------------------------------------------------------------------ negative controls


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomMask(GroupNorm, CreditMethod):
  """Negative control: GRPO's advantage on exactly ceil(ρ·n) uniformly random tokens of each response
  (`random_token_mask`; module docstring).

  Attributes:
    rho: ρ in (0, 1], the kept fraction of each response's valid tokens (ρ = 1: GRPO exactly).
    normaliser: the loss divides by the "kept" tokens (default, as `entropy-mask`) or every "valid" one.
    mode: the outcome advantage convention (`AdvantageMode`).
    std_ddof, eps, lone: the group normaliser's conventions (`GroupNorm`).
  """

  name = "random-mask"
  description = "negative control: policy gradient on a uniformly random ρ-fraction of each response's tokens"
  stochastic = True
  rho: float = 0.2
  normaliser: str = "kept"
  mode: str = "grpo"

  def __post_init__(self):
    super().__post_init__()
    AdvantageMode.parse(self.mode, field="credit.mode")
    if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) or not 0.0 < self.rho <= 1.0:
      raise ValueError(f"credit.rho must be in (0, 1], got {self.rho!r}")
    if self.normaliser not in MASK_NORMALISERS:
      raise ValueError(f"credit.normaliser={self.normaliser!r} is not one of {list(MASK_NORMALISERS)}")

  def host_extras(self, task: Task, problems: Sequence[Problem], groups: Groups, ctx: JudgeContext) -> HostExtras:
    """One key per prompt of the chunk (`credit_key_data`)."""
    del task, groups
    return HostExtras({CREDIT_KEY: credit_key_data(ctx.key, len(problems))})

  def __call__(self, inputs: CreditInputs) -> Credit:
    valid = valid_tokens(inputs)
    kept = jax.vmap(functools.partial(random_token_mask, rho=self.rho))(_prompt_keys(inputs, _MASK_STREAM), valid)
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())
    return Credit(advantages=per_token(adv, inputs.mask), weights=kept.astype(jnp.float32), metrics={},
                  normaliser=valid.astype(jnp.float32) if self.normaliser == "valid" else None)


SETTINGS_SEPARATOR = ";"
"""Separates the wrapped method's settings in `shuffled`'s `settings` (a judge's own settings use commas)."""


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class Shuffled(CreditMethod):
  """Negative control: another registered method's credit with each response's token credits permuted among
  its own valid tokens (`shuffle_within_rows`; module docstring).

  Attributes:
    method: the wrapped credit method's name (any registered method but `shuffled` and methods that filter
      groups, whose credit is their outcome advantage: nothing to shuffle).
    settings: its settings as ``"key=value;key=value"`` (";" separates them: a judge's own settings inside
      use commas, e.g. ``"judge=mc;judge_settings=continuations=8,fork_rows=128;lam=0.5"``); "" keeps
      its defaults.
  Everything else (extras, tree arrays, host work and its cost, MI inputs, metrics) is the wrapped method's.
  """

  name = "shuffled"
  description = "negative control: another method's token credits permuted within each response"
  stochastic = True
  method: str = "verifier"
  settings: str = ""

  def __post_init__(self):
    if not isinstance(self.method, str) or self.method == self.name or self.method not in credit_names():
      allowed = [n for n in credit_names() if n != self.name]
      raise ValueError(f"credit.method={self.method!r} is not a credit method shuffled can wrap; allowed: {allowed}")
    if not isinstance(self.settings, str):
      raise ValueError(f"credit.settings must be a string of key=value pairs, got {self.settings!r}")
    try:
      inner = self.inner
      require_finite(inner, f"credit.settings of {self.method}")  # the config checks only shuffled's own fields
    except (ValueError, TypeError) as e:
      raise ValueError(f"credit.method={self.method!r}, credit.settings={self.settings!r}: {e}") from None
    if type(inner).group_filter is not CreditMethod.group_filter:
      raise ValueError(f"credit.method={self.method!r} filters groups; shuffled wraps only methods without a "
                       "group filter (their credit is the outcome advantage: nothing to shuffle)")

  @functools.cached_property
  def inner(self) -> CreditMethod:
    """The wrapped method (built once per instance)."""
    settings = parse_settings(credit_class(self.method), self.settings, kind="credit method", name=self.method,
                              sep=SETTINGS_SEPARATOR)
    return make_credit(self.method, **settings)

  @property
  def needs_extras(self) -> tuple[str, ...]:
    return self.inner.needs_extras

  @property
  def needs_tree(self) -> bool:
    return self.inner.needs_tree

  @property
  def host_cost(self) -> str | None:
    return self.inner.host_cost

  def mi_inputs(self):
    return self.inner.mi_inputs()

  def host_extras(self, task: Task, problems: Sequence[Problem], groups: Groups, ctx: JudgeContext) -> HostExtras:
    """The wrapped method's host arrays plus one key per prompt (`credit_key_data`)."""
    out = self.inner.host_extras(task, problems, groups, ctx)
    arrays = {CREDIT_KEY: credit_key_data(ctx.key, len(problems)), **out.arrays}
    return out._replace(arrays=arrays)

  def __call__(self, inputs: CreditInputs) -> Credit:
    out = self.inner(inputs)
    fields = [out.advantages, out.weights] + ([] if out.normaliser is None else [out.normaliser])
    keys = _prompt_keys(inputs, _SHUFFLE_STREAM)  # [B]
    shuffled = jax.vmap(shuffle_within_rows)(keys, inputs.mask, *fields)
    return Credit(advantages=shuffled[0], weights=shuffled[1], metrics=out.metrics,
                  normaliser=None if out.normaliser is None else shuffled[2])

