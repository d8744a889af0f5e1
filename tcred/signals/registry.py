"""The token-signal registry: one entry per signal, read by training and by the identifiability study.

A token signal is a pure function of one group (G rollouts of one prompt) that scores every response
token, `[G, T]`, larger = "more decisive" (`TokenSignal.__call__` zeroes it on padding with "mask").
It is registered once, next to its function, with the names of the arrays it reads (`inputs`, passed
positionally in that order):

  per group, always available (the train step and `tcred identify` both give them):
    "mask"     [G, T] bool   valid response tokens (EOS included; a filler group is all False)
    "rewards"  [G]    float  outcome rewards
    "entropy"  [G, T] float  entropy of the policy's next-token distribution at the sampling temperature
    "logp"     [G, T] float  log-probability of each sampled token under the policy (same forward)
    "key"      [2]    uint32 a PRNG key of the group (raw `jax.random.key_data`), for the random control:
                             a hash of the batch's sampled-token log-probs (`controls.batch_group_keys`;
                             training: the sampling policy's, the study: its policy's), fresh every batch
  the tree arrays of tree rollouts (`TREE_INPUTS`; training needs `tree.enabled`)
  extras: any other name is computed by an extra forward pass before the step
    (`tcred.credit.extras`, e.g. "mi", "info_gain"); credit methods and the study validate them there.

In training, "entropy" and "logp" come from the train step's own forward pass of the current policy
(`stop_gradient`ed); in `tcred identify` from the same function (`response_logprobs`) on the study's
policy. Built on this registry: the generic credit methods `signal-mask` / `signal-peaks` /
`signal-weight` (`tcred.credit.signal_methods`, which make every registered signal trainable by
name) and the rows of `tcred identify`.

Shapes: B prompts, G rollouts, T response tokens.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import chex
import jax
import jax.numpy as jnp

# The arrays every caller provides (module docstring).
STEP_INPUTS = ("mask", "rewards", "entropy", "logp", "key")
# What a registered signal is for (`TokenSignal.role`): a "signal" ranks tokens by how decisive they are
# (every pair of a run's signals is compared each step, `tcred.signals.agreement`); a "control" is a
# reference row that carries no information by construction (the random chance row); a "diagnostic"
# checks a bound or a convention and is summarised by its share of non-zero tokens (the entropy bound).
SIGNAL_ROLES = ("signal", "control", "diagnostic")
# The extra that holds the reference policy's log-probs (`tcred.credit.extras`): signals reading it
# need a reference policy (training: the run's base; the study: a base beside the policy under study).
REFERENCE_INPUTS = ("ref_policy_logp",)
# The tree arrays of tree rollouts, as the train step's `CreditInputs.extras` and the study give them
# (`tcred.credit.tree.tree_extras`); per prompt: tree_id [G] tree of each leaf row; tree_parent,
# tree_is_leaf, tree_valid, tree_leaf_row [N] node arrays (`TreeArrays`; leaf_row: the row a leaf node
# ends, −1 on inner nodes); token_node [G, T] the node of each row token, −1 on padding.
TREE_INPUTS = ("tree_id", "tree_parent", "tree_is_leaf", "tree_valid", "tree_leaf_row", "token_node")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenSignal:
  """A registered token signal.

  Attributes:
    name: registry key (credit settings `credit.signal=NAME`, the study's row name).
    description: one line (the study's report).
    fn: the pure function of one group, `fn(*[inputs of one group]) -> [G, T]` float, 0 on padding;
      no `jax.jit` on it (callers jit once, at the outermost step).
    inputs: the names of the arrays `fn` reads, in its argument order (module docstring).
    role: one of `SIGNAL_ROLES` (default "signal").
  """

  name: str
  description: str
  fn: Callable[..., Any]
  inputs: tuple[str, ...]
  role: str = "signal"

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
      raise ValueError(f"token signal name must be a non-empty string without surrounding spaces, got {self.name!r}")
    if not isinstance(self.inputs, tuple) or not self.inputs or not all(isinstance(n, str) for n in self.inputs):
      raise ValueError(f"token signal {self.name!r}: inputs must be a non-empty tuple of array names, "
                       f"got {self.inputs!r}")
    if self.role not in SIGNAL_ROLES:
      raise ValueError(f"token signal {self.name!r}: role={self.role!r} is not one of {list(SIGNAL_ROLES)}")
    try:
      inspect.signature(self.fn).bind(*self.inputs)
    except TypeError as e:
      raise ValueError(f"token signal {self.name!r}: fn does not take its {len(self.inputs)} inputs "
                       f"{list(self.inputs)} positionally ({e})") from None
    except ValueError:  # a callable without a signature (a C function): checked at the first call
      pass

  @property
  def needs_extras(self) -> tuple[str, ...]:
    """Inputs computed by an extra forward pass (`tcred.credit.extras`), sorted."""
    return tuple(sorted(n for n in set(self.inputs) if n not in STEP_INPUTS and n not in TREE_INPUTS))

  @property
  def needs_tree(self) -> bool:
    """Whether the signal reads the tree arrays (defined on tree rollouts only)."""
    return any(n in TREE_INPUTS for n in self.inputs)

  @property
  def needs_reference(self) -> bool:
    """Whether the signal reads a reference policy's log-probs (`REFERENCE_INPUTS`)."""
    return any(n in REFERENCE_INPUTS for n in self.inputs)

  def __call__(self, arrays: Mapping[str, Any]) -> jax.Array:
    """The signal of a batch: `fn` vmapped over the B prompts of `arrays` (each input `[B, ...]`).

    Returns:
      `[B, G, T]` float32, 0 where `arrays["mask"]` is False.
    """
    missing = [n for n in self.inputs + ("mask",) if n not in arrays]
    if missing:
      raise ValueError(f"token signal {self.name!r} needs {missing}; got {sorted(arrays)}")
    mask = jnp.asarray(arrays["mask"], bool)
    chex.assert_rank(mask, 3)
    out = jax.vmap(self.fn)(*[jnp.asarray(arrays[n]) for n in self.inputs])
    chex.assert_shape(out, mask.shape)
    return jnp.where(mask, jnp.asarray(out, jnp.float32), 0.0)


_SIGNALS: dict[str, TokenSignal] = {}


def register_signal(signal: TokenSignal) -> TokenSignal:
  """Adds a signal to the registry (training and `tcred identify` read it); refuses duplicate names."""
  if not isinstance(signal, TokenSignal):
    raise TypeError(f"register_signal takes a TokenSignal, got {type(signal).__name__}")
  if signal.name in _SIGNALS:
    raise ValueError(f"token signal {signal.name!r} is already registered; registered: {signal_names()}")
  _SIGNALS[signal.name] = signal
  return signal


def unregister_signal(name: str) -> None:
  """Removes a signal (tests that register a throwaway signal clean up with this)."""
  get_signal(name)
  del _SIGNALS[name]


def signal_names(*, trees: bool = True, reference: bool = True, roles: tuple[str, ...] = SIGNAL_ROLES) -> list[str]:
  """Registered signals in registration order (`trees=False`: those that need no tree rollouts;
  `reference=False`: those that need no reference policy; `roles`: only these `SIGNAL_ROLES`)."""
  return [n for n, s in _SIGNALS.items()
          if (trees or not s.needs_tree) and (reference or not s.needs_reference) and s.role in roles]


def get_signal(name: str) -> TokenSignal:
  if name not in _SIGNALS:
    raise ValueError(f"unknown token signal {name!r}; allowed: {signal_names()}")
  return _SIGNALS[name]


def normalised_magnitude(score, mask):
  """`[..., T]` token weights `|s_t| / mean_t |s_t|` over each sequence's valid tokens.

  Mean 1 over the valid tokens of the sequence; all ones where every |s_t| is 0 (no signal: plain
  outcome weights); 0 on padding. The weight of `signal-weight` (and of `mi-weight`, DESIGN §4.3(b)).
  """
  mag = jnp.where(mask, jnp.abs(score), 0.0)
  # Scaled by the largest |s_t| first, so that the mean of the scaled magnitudes is at least 1/T whenever any
  # |s_t| > 0: a mean of tiny magnitudes would otherwise fall below float32's normal range, where XLA's CPU
  # flushes it to zero (|s| = [1.2e-38, 0] gave uniform weights instead of [2, 0]).
  scale = jnp.max(mag, axis=-1, keepdims=True)
  mag = mag / jnp.where(scale > 0, scale, 1.0)
  n = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1)
  mean = jnp.sum(mag, axis=-1, keepdims=True) / n
  return jnp.where(mask, jnp.where(mean > 0, mag / jnp.where(mean > 0, mean, 1.0), 1.0), 0.0)
