"""The study's rows: every registered token signal (`tcred.signals.registry`, the functions training
uses), plus the study's own ground-truth rows, which need the ground truth and so are never trainable:

  early-position  a control, not a signal: −t (earlier tokens score higher);
  oracle-judge    |oracle(o≤t) − oracle(o<t)|, the exact prefix value's change: the upper bound a
                  judge could reach (DESIGN §4.6).

and one row per chosen step judge (`tcred.judges`, `IdentifyConfig.judges`): `judge-<name>`, the judge's
step score change |s_k − s_{k−1}| on every token of step k (`judge_signals`; a judge sees steps, not
tokens, so all tokens of a step tie). The judges score the study's rollouts with the policy under study
(the `mc` judge continues them with its own, small budget, independent of the ground truth's).

Row order: the registered signals that need no tree, the ground-truth rows, the judge rows, then the tree
signals (tree rollouts only).

Shapes: N prompts, G rollouts per prompt, T the response budget.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import jax
import numpy as np
from flax import nnx

from tcred.credit.judge import prepared_judge, score_rollouts
from tcred.credit.tree import tree_extras
from tcred.evaluation.identify.rollouts import Rollout
from tcred.evaluation.identify.truth import GroundTruth
from tcred.judges import JudgeContext, judge_class, judge_names, make_judge
from tcred.judges.credit import step_change_per_token
from tcred.signals import registry
from tcred.signals.controls import batch_group_keys
from tcred.sampling.rollout import Trees
from tcred.tasks.base import Problem, Task
from tcred.training.judges import prepare_trained
from tcred.training.sft import cache_root


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


def judge_row(judge: str) -> str:
  """The study's row of a registered step judge."""
  return f"judge-{judge}"


def _judge_rows() -> dict[str, str]:
  """`{row: judge}` of every registered judge."""
  return {judge_row(j): j for j in judge_names()}


def check_judges(judges: Sequence[str]) -> tuple[str, ...]:
  """`judges` as a tuple when each is a registered judge; ValueError with the allowed values otherwise."""
  for j in judges:
    if j not in judge_names():
      raise ValueError(f"unknown judge {j!r}; allowed: {', '.join(judge_names())}")
  return tuple(judges)


def signal_names(*, trees: bool = True, judges: Sequence[str] = (), reference: bool = False) -> list[str]:
  """The study's rows in report order (`trees=False`: those computable on independent chains; `judges`:
  the step judges whose rows are included; `reference`: also the signals that read a reference policy beside
  the studied one, e.g. `delta-logp`, for a study given one: `identify --steps`, the run's base)."""
  chains = registry.signal_names(trees=False, reference=reference)
  tree_only = [n for n in registry.signal_names(reference=reference) if n not in chains]
  return (chains + [row.name for row in TRUTH_ROWS] + [judge_row(j) for j in check_judges(judges)]
          + (tree_only if trees else []))


def describe_signals(*, judges: Sequence[str] = (), reference: bool = False) -> dict[str, str]:
  """`{row: one-line description}` of every row (the judge rows of `judges`)."""
  out = {}
  for n in signal_names(judges=judges, reference=reference):
    if n in _TRUTH:
      out[n] = _TRUTH[n].description
    elif n in _judge_rows():
      judge = _judge_rows()[n]
      out[n] = f"|s_k − s_(k−1)| of the {judge} judge on the tokens of step k ({judge_class(judge).description})"
    else:
      out[n] = registry.get_signal(n).description
  return out


def needs_tree(name: str) -> bool:
  return name not in _TRUTH and name not in _judge_rows() and registry.get_signal(name).needs_tree


def check_signal(name: str) -> str:
  """`name` if it is a row of the study (any registered judge's row included); ValueError with the allowed
  values otherwise."""
  allowed = signal_names(judges=judge_names(), reference=True)
  if name not in allowed:
    raise ValueError(f"unknown token signal {name!r}; allowed: {allowed}")
  return name


def judges_of(names: Sequence[str]) -> tuple[str, ...]:
  """The judges whose rows are among `names`."""
  rows = _judge_rows()
  return tuple(rows[n] for n in names if n in rows)


def judge_signals(graphdef, params, task: Task, problems: Sequence[Problem], rollout: Rollout, judges: Sequence[str],
                  *, key: jax.Array, temperature: float, progress: bool = False
                  ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """`({judge row: [N, G, T] float64}, {"<judge>_s": seconds, "<judge>_tokens": tokens})`: each judge (default
  settings, `prepare`d first: a trained judge loads or trains) scores the study's rollouts with the policy
  under study; its step score changes are spread on the steps' tokens (`step_change_per_token`)."""
  ctx = JudgeContext(graphdef, params, key, temperature, cache_dir=cache_root(),
                     task_config=getattr(task, "config", None), model_config=nnx.merge(graphdef, params).config,
                     progress=progress, prepare_trained=prepare_trained)
  values, cost = {}, {}
  for n, judge in enumerate(judges):
    t0 = time.time()
    arrays, out = score_rollouts(prepared_judge(make_judge(judge), task, ctx), task, problems, rollout.tokens,
                                 rollout.mask, rollout.texts, rollout.rewards, ctx._replace(key=jax.random.fold_in(key, n)))
    values[judge_row(judge)] = step_change_per_token(arrays["judge_scores"], arrays["judge_valid"],
                                                     arrays["judge_steps"])
    cost[f"{judge}_s"], cost[f"{judge}_tokens"] = time.time() - t0, float(out.tokens)
  return values, cost


def needed_extras(names) -> tuple[str, ...]:
  """The `compute_extras` names the registered signals among `names` read."""
  return tuple(sorted({e for n in names if n not in _TRUTH and n not in _judge_rows()
                       for e in registry.get_signal(n).needs_extras}))


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
            "entropy": policy["entropy"], "logp": policy["logp"],
            "key": np.asarray(batch_group_keys(policy["logp"], rollout.mask))}  # the random control's keys
  if trees is not None:
    arrays.update(tree_extras(trees))
  return arrays


def compute_signals(names, rollout: Rollout, truth: GroundTruth, policy: dict[str, np.ndarray],
                    extras: dict[str, np.ndarray], trees: Trees | None,
                    judged: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """`{row: [N, G, T] float64}` of each row in `names`, 0 on padding (`judged`: the judge rows, from
  `judge_signals`)."""
  arrays = study_arrays(rollout, policy, extras, trees)
  values = {}
  for name in names:
    if name in _TRUTH:
      v = _TRUTH[name].fn(truth, rollout.mask)
    elif name in _judge_rows():
      if judged is None or name not in judged:
        raise ValueError(f"row {name!r} needs its judge's scores (judge_signals)")
      v = judged[name]
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
