"""Credit methods: signals + rewards -> per-token advantages and loss weights.

A credit method is a frozen (hashable) dataclass registered by name. It is a
*static* argument of the jitted train step: the step computes what the method
asks for (`needs`) from the current policy's forward pass and calls it; adding a
method never touches the train step.

Arrays a method needs from the host (after sampling, before the step) come from
its `host_extras` hook: the tree arrays of tree rollouts (`needs_tree`), a step
judge's scores (`tcred.credit.judge`). The RL loop calls it on every sampled
chunk and logs its cost (`HostExtras.tokens`, `seconds`) under `host_cost`.

Shapes: B prompts, G rollouts per prompt, T response tokens.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, NamedTuple, Sequence

import jax
import numpy as np

from tcred.credit.extras import tree_extras
from tcred.judges.base import JudgeContext
from tcred.sampling.rollout import Groups
from tcred.tasks.base import Problem, Task


class CreditInputs(NamedTuple):
  """What a credit method sees inside the train step (all `stop_gradient`ed).

  Attributes:
    rewards: `[B, G]` outcome rewards.
    mask: `[B, G, T]` bool response mask.
    group_valid: `[B]` bool, False for filler groups (dynamic sampling refill).
    entropy: `[B, G, T]` entropy of the current policy at the sampling temperature.
    logp: `[B, G, T]` log-probability of each sampled token under the current policy.
    old_logp: `[B, G, T]` the same under the sampling policy.
    extras: signals computed outside the step, keyed by name (see `needs_extras`).
  """

  rewards: jax.Array
  mask: jax.Array
  group_valid: jax.Array
  entropy: jax.Array
  logp: jax.Array
  old_logp: jax.Array
  extras: dict[str, jax.Array]


class Credit(NamedTuple):
  """Output of a credit method.

  Attributes:
    advantages: `[B, G, T]` per-token advantages.
    weights: `[B, G, T]` non-negative loss weights, zero on padding; the loss
      aggregation normalises by them.
    metrics: scalar diagnostics, logged under `credit/<name>`.
    normaliser: optional `[B, G, T]` weights the aggregation divides by instead of
      `weights` (e.g. every valid token while only the kept ones carry weight, TRL's
      convention for a token mask); None: `weights`.
  """

  advantages: jax.Array
  weights: jax.Array
  metrics: dict[str, jax.Array]
  normaliser: jax.Array | None = None


class HostExtras(NamedTuple):
  """What `CreditMethod.host_extras` returns for one sampled chunk.

  Attributes:
    arrays: host arrays added to `CreditInputs.extras` (`[B, ...]`, B the chunk's prompts).
    tokens: token positions a model processed or generated to compute them (0: none).
    seconds: wall time spent computing them.
  """

  arrays: dict[str, np.ndarray]
  tokens: int = 0
  seconds: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class CreditMethod(abc.ABC):
  """Base class; subclasses are frozen dataclasses whose fields are the method's settings."""

  name: ClassVar[str]
  description: ClassVar[str]
  # Names of `CreditInputs.extras` entries the rollout stage must provide.
  needs_extras: ClassVar[tuple[str, ...]] = ()
  # Whether the method reads the tree arrays of tree rollouts (`TREE_EXTRAS`).
  needs_tree: ClassVar[bool] = False
  # The name the RL loop logs `host_extras`' cost under (`counts/<name>_tokens`, `time/<name>_s`, summary
  # `<name>_tokens`, `<name>_wall_s`); None: nothing logged (a cost-free hook, e.g. the tree arrays).
  host_cost: ClassVar[str | None] = None
  # Whether the credit draws random numbers (the controls `random-mask`, `shuffled`): from the "credit_key"
  # extra its `host_extras` adds (one key per prompt, a pure function of seed and step), so it is
  # equivariant under permuting a group only in distribution (tests/credit/test_method_properties.py).
  stochastic: ClassVar[bool] = False

  @abc.abstractmethod
  def __call__(self, inputs: CreditInputs) -> Credit:
    ...

  def mi_inputs(self):
    """The `tcred.signals.information.MIInputs` for the "mi" extra (None: the default states)."""
    return None

  def host_extras(self, task: Task, problems: Sequence[Problem], groups: Groups, ctx: JudgeContext) -> HostExtras:
    """Host arrays for `CreditInputs.extras`, computed after sampling (see the module docstring).

    Args:
      task, problems: the chunk's task and its B problems.
      groups: the sampled, scored chunk (`[B, G, T]` rollouts, texts, trees).
      ctx: the sampling context: the current policy, a PRNG key for this chunk (a pure function of seed
        and step), the sampling rule, the cache root, the task and model configs.

    Default: the tree arrays (`tcred.credit.extras.tree_extras`) when `needs_tree`, else nothing.
    """
    del task, problems, ctx
    if not self.needs_tree:
      return HostExtras({})
    return HostExtras(tree_extras(groups.trees))

  def check_task(self, task_cls: type[Task]) -> None:
    """Raises ValueError, naming the problem, where the method's settings need something `task_cls` lacks
    (checked when an experiment's config is built, before anything is written). Default: nothing."""
    del task_cls

  def group_filter(self, rewards: np.ndarray, extras: dict[str, Any]) -> np.ndarray | None:
    """Host-side prompt filter applied while collecting a batch: `[B]` bool of groups to keep
    (dropped groups are refilled), or None for no filter. `rewards` is `[B, G]`."""
    del rewards, extras
    return None


_REGISTRY: dict[str, type[CreditMethod]] = {}


def register_credit(cls: type[CreditMethod]) -> type[CreditMethod]:
  """Class decorator adding a credit method to the registry under `cls.name`."""
  if cls.name in _REGISTRY:
    raise ValueError(f"credit method {cls.name!r} is already registered")
  _REGISTRY[cls.name] = cls
  return cls


def credit_names() -> list[str]:
  return sorted(_REGISTRY)


def credit_class(name: str) -> type[CreditMethod]:
  if name not in _REGISTRY:
    raise ValueError(f"unknown credit method {name!r}; allowed: {credit_names()}")
  return _REGISTRY[name]


def make_credit(name: str, **settings: Any) -> CreditMethod:
  """Builds a registered method, validating the settings against its fields."""
  cls = credit_class(name)
  allowed = {f.name for f in dataclasses.fields(cls)}
  unknown = set(settings) - allowed
  if unknown:
    raise ValueError(f"credit method {name!r} has no setting(s) {sorted(unknown)}; "
                     f"allowed: {sorted(allowed)}")
  return cls(**settings)
