"""One study: sample the rollouts, estimate the ground truth, compute every row (`run_study`).

Shapes: N prompts, G rollouts per prompt, T the response budget.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from tcred.evaluation.identify.config import _NS_CONTINUATIONS, _NS_JUDGES, _NS_TREE_CONTINUATIONS, IdentifyConfig
from tcred.evaluation.identify.rollouts import (Rollout, policy_forward, sample_rollouts, sample_tree_rollouts,
                                                signal_extras)
from tcred.evaluation.identify.signals import (check_signal, compute_signals, judge_signals, judges_of, needed_extras,
                                               needs_tree, signal_names)
from tcred.evaluation.identify.truth import GroundTruth, ground_truth
from tcred.tasks.base import Problem, Task
from tcred.sampling.rollout import Trees


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
  (default: every row of the study the source supports, with the judge rows of `config.judges`; tree
  signals need tree rollouts). `timings` gets each judge's `<judge>_s` and `<judge>_tokens`."""
  problems = list(problems)
  if len(problems) != config.prompts:
    raise ValueError(f"got {len(problems)} problems for config.prompts={config.prompts}")
  if source not in ("chains", "tree"):
    raise ValueError(f"source must be one of chains, tree, got {source!r}")
  tree = source == "tree"
  chosen = [check_signal(s) for s in (signal_names(trees=tree, judges=config.judges) if signals is None else signals)]
  if not tree and any(needs_tree(s) for s in chosen):
    raise ValueError(f"signals {[s for s in chosen if needs_tree(s)]} need tree rollouts (source='tree')")
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
  extras = signal_extras(graphdef, params, task, problems, rollout, config, needed_extras(chosen))
  timings["signals_forward_s"] = time.time() - t0
  t0 = time.time()
  truth = ground_truth(graphdef, params, task, problems, rollout, config, progress=progress,
                       namespace=_NS_TREE_CONTINUATIONS if tree else _NS_CONTINUATIONS)
  timings["ground_truth_s"] = time.time() - t0
  t0 = time.time()
  judge_key = jax.random.fold_in(jax.random.key(config.seed), _NS_JUDGES + 8 * tree)
  judged, cost = judge_signals(graphdef, params, task, problems, rollout, judges_of(chosen), key=judge_key,
                               temperature=config.temperature, progress=progress)
  timings.update(cost)
  timings["judges_s"] = time.time() - t0
  t0 = time.time()
  values = compute_signals(chosen, rollout, truth, policy, extras, trees, judged)
  timings["signals_s"] = time.time() - t0
  return StudyData(task.name, task.answer_cue, problems, config, rollout, truth, values, policy, extras, timings,
                   trees, source, task.tokenizer)
