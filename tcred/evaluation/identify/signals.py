"""The study's rows: every registered token signal (`tcred.signals.registry`, the functions training
uses), plus the study's own ground-truth rows, which need the ground truth and so are never trainable:

  early-position  a control, not a signal: −t (earlier tokens score higher);
  oracle-judge    |oracle(o≤t) − oracle(o<t)|, the exact prefix value's change: the upper bound a
                  judge could reach (DESIGN §4.6).

Row order: the registered signals that need no tree, the ground-truth rows, then the tree signals
(tree rollouts only).

Shapes: N prompts, G rollouts per prompt, T the response budget.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import numpy as np

from tcred.credit.tree import tree_extras
from tcred.evaluation.identify.rollouts import Rollout
from tcred.evaluation.identify.truth import GroundTruth
from tcred.signals import registry
from tcred.sampling.rollout import Trees


class TruthRow(NamedTuple):
  """A row of the study that reads the ground truth: `fn(truth, mask) -> [N, G, T]`."""

  name: str
  description: str
  fn: Callable[[GroundTruth, np.ndarray], np.ndarray]


def _early_position(truth: GroundTruth, mask: np.ndarray) -> np.ndarray:
  del truth
  return -np.broadcast_to(np.arange(mask.shape[-1], dtype=np.float64), mask.shape)


def _oracle_judge(truth: GroundTruth, mask: np.ndarray) -> np.ndarray:
  del mask
  o = truth.oracle
  return np.nan_to_num(np.abs(o[..., 1:] - o[..., :-1]))


TRUTH_ROWS = (
    TruthRow("early-position", "control, not a signal: −t (earlier tokens score higher)", _early_position),
    TruthRow("oracle-judge", "|oracle(o≤t) − oracle(o<t)| (exact prefix value; upper bound)", _oracle_judge),
)
_TRUTH = {row.name: row for row in TRUTH_ROWS}


def signal_names(*, trees: bool = True) -> list[str]:
  """The study's rows in report order (`trees=False`: those computable on independent chains)."""
  chains = registry.signal_names(trees=False)
  tree_only = [n for n in registry.signal_names() if n not in chains]
  return chains + [row.name for row in TRUTH_ROWS] + (tree_only if trees else [])


def describe_signals() -> dict[str, str]:
  """`{row: one-line description}` of every row."""
  return {n: _TRUTH[n].description if n in _TRUTH else registry.get_signal(n).description for n in signal_names()}


def needs_tree(name: str) -> bool:
  return name not in _TRUTH and registry.get_signal(name).needs_tree


def check_signal(name: str) -> str:
  """`name` if it is a row of the study; ValueError with the allowed values otherwise."""
  if name not in signal_names():
    raise ValueError(f"unknown token signal {name!r}; allowed: {signal_names()}")
  return name


def needed_extras(names) -> tuple[str, ...]:
  """The `compute_extras` names the registered signals among `names` read."""
  return tuple(sorted({e for n in names if n not in _TRUTH for e in registry.get_signal(n).needs_extras}))


_JITTED: dict[registry.TokenSignal, Callable] = {}


def _jitted(signal: registry.TokenSignal) -> Callable:
  """The registered signal vmapped over prompts, jitted once per signal (one compilation per shape)."""
  if signal not in _JITTED:
    _JITTED[signal] = jax.jit(signal.__call__)
  return _JITTED[signal]


def study_arrays(rollout: Rollout, policy: dict[str, np.ndarray], extras: dict[str, np.ndarray],
                 trees: Trees | None) -> dict[str, np.ndarray]:
  """The arrays a registered signal may read (`tcred.signals.registry`), for the study's rollouts."""
  arrays = {**extras, "mask": rollout.mask, "rewards": np.asarray(rollout.rewards, np.float32),
            "entropy": policy["entropy"], "logp": policy["logp"]}
  if trees is not None:
    arrays.update(tree_extras(trees))
  return arrays


def compute_signals(names, rollout: Rollout, truth: GroundTruth, policy: dict[str, np.ndarray],
                    extras: dict[str, np.ndarray], trees: Trees | None) -> dict[str, np.ndarray]:
  """`{row: [N, G, T] float64}` of each row in `names`, 0 on padding."""
  arrays = study_arrays(rollout, policy, extras, trees)
  values = {}
  for name in names:
    if name in _TRUTH:
      v = _TRUTH[name].fn(truth, rollout.mask)
    else:
      signal = registry.get_signal(name)
      if signal.needs_tree and trees is None:
        raise ValueError(f"signal {name!r} needs tree rollouts (rollouts_from='tree' or 'both')")
      v = _jitted(signal)({n: arrays[n] for n in (*signal.inputs, "mask")})
    v = np.asarray(v, np.float64)
    if v.shape != rollout.mask.shape:
      raise ValueError(f"signal {name!r} returned shape {v.shape}, expected {rollout.mask.shape}")
    values[name] = np.where(rollout.mask, v, 0.0)
  return values
