"""One study: sample the rollouts, estimate the ground truth, compute every row (`run_study`).

Shapes: N prompts, G rollouts per prompt, T the response budget.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from tcred.evaluation.identify.config import (_NS_CONTINUATIONS, _NS_JUDGES, _NS_REPLICAS, _NS_TREE_CONTINUATIONS,
                                             IdentifyConfig)
from tcred.evaluation.identify.rollouts import (Rollout, policy_forward, sample_rollouts, sample_tree_rollouts,
                                                signal_extras)
from tcred.evaluation.identify.signals import (check_signal, compute_signals, judge_signals, judges_of, needed_extras,
                                               needs_tree, signal_names)
from tcred.evaluation.identify.truth import GroundTruth, ground_truth
from tcred.judges.mc import replica_agreement
from tcred.tasks.base import Problem, Task
from tcred.sampling.rollout import Trees
from tcred.evaluation.identify.forking import forking_truth, pool_forking


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
  base: np.ndarray | None = None  # `[N]` the SFT base of each prompt row (a study pooled over bases), or None
  replica: dict | None = None  # `{label rule: ReplicaAgreement}` of the mc judge at K (`config.replicas`)
  forking: Any = None  # `forking.ForkingTruth` of the sampled positions (`config.fork_positions`), or None

  @property
  def bases(self) -> int:
    """How many SFT bases the study pools."""
    return 1 if self.base is None else len(set(np.asarray(self.base).tolist()))


def run_study(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig, *,
              signals: Sequence[str] | None = None, progress: bool = False, source: str = "chains",
              ref_params=None) -> StudyData:
  """Samples the rollouts (`source`: "chains" or "tree"), estimates the ground truth, computes the signals
  (default: every row of the study the source supports, with the judge rows of `config.judges`; tree
  signals need tree rollouts; with `ref_params`, a reference policy of the same graphdef, also the rows that
  read one, e.g. `delta-logp`). `timings` gets each judge's `<judge>_s` and `<judge>_tokens`."""
  problems = list(problems)
  if len(problems) != config.prompts:
    raise ValueError(f"got {len(problems)} problems for config.prompts={config.prompts}")
  if source not in ("chains", "tree"):
    raise ValueError(f"source must be one of chains, tree, got {source!r}")
  tree = source == "tree"
  chosen = [check_signal(s) for s in (signal_names(trees=tree, judges=config.judges, reference=ref_params is not None)
                                      if signals is None else signals)]
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
  extras = signal_extras(graphdef, params, task, problems, rollout, config, needed_extras(chosen), ref_params)
  timings["signals_forward_s"] = time.time() - t0
  t0 = time.time()
  can_decide = rollout.mask & (np.exp(policy["logp"]) <= 1.0 - config.delta)  # the bound row's tokens
  truth = ground_truth(graphdef, params, task, problems, rollout, config, progress=progress,
                       namespace=_NS_TREE_CONTINUATIONS if tree else _NS_CONTINUATIONS, can_decide=can_decide)
  timings["ground_truth_s"] = time.time() - t0
  replica = None
  if config.replicas and not tree:
    t0 = time.time()
    lengths = rollout.mask.sum(-1)
    ids = [[rollout.tokens[i, j, :lengths[i, j]] for j in range(rollout.tokens.shape[1])]
           for i in range(len(problems))]
    replica = replica_agreement(graphdef, params, task, problems, rollout.texts, continuations=truth.continuations,
                                key=jax.random.fold_in(jax.random.key(config.seed), _NS_REPLICAS),
                                temperature=config.temperature, rewards=rollout.rewards, response_ids=ids,
                                progress=progress)
    timings["replicas_s"] = time.time() - t0
  forking = None
  if config.fork_positions and not tree:
    t0 = time.time()
    forking = forking_truth(graphdef, params, task, problems, rollout, dataclasses.replace(
        config, continuations=truth.continuations), progress=progress)
    timings["forking_s"] = time.time() - t0
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
                   trees, source, task.tokenizer, replica=replica, forking=forking)


def _cat(parts: Sequence[Any]) -> Any:
  """Concatenates the pieces of one field along the prompt axis: arrays, lists, dicts, NamedTuples of them."""
  first = parts[0]
  if first is None:
    return None
  if isinstance(first, np.ndarray):
    return np.concatenate(parts, axis=0)
  if isinstance(first, list):
    return [x for p in parts for x in p]
  if isinstance(first, dict):
    return {k: _cat([p[k] for p in parts]) for k in first}
  if isinstance(first, tuple) and hasattr(first, "_fields"):
    return type(first)(*(_cat([getattr(p, f) for p in parts]) for f in first._fields))
  raise TypeError(f"cannot pool {type(first).__name__} over bases")


def pool_studies(studies: Sequence[StudyData]) -> StudyData:
  """One study of B SFT bases: the studies' prompt rows concatenated (base b's rows after base b − 1's),
  with `base [N·B]` the base of each row, so that the metrics pool every token and the bootstrap resamples
  bases, then prompts. Each study must have the same task, config and shapes (the same prompts on each
  base). Timings add up; the first study's K search (`truth.continuation_steps`) and replica agreement are
  kept (later bases reuse the K it chose); the forking truth is pooled."""
  studies = list(studies)
  if len(studies) == 1:
    return studies[0]
  first = studies[0]
  truth = first.truth._replace(
      **{f: np.concatenate([getattr(s.truth, f) for s in studies]) for f in
         ("values", "value_se", "advantages", "advantage_se", "advantage_se_smoothed", "oracle", "fatal")},
      unique_prefixes=sum(s.truth.unique_prefixes for s in studies))
  trees = None
  if first.trees is not None:
    trees = first.trees._replace(source=_cat([s.trees.source for s in studies]),
                                 fork_pos=_cat([s.trees.fork_pos for s in studies]),
                                 tree_id=_cat([s.trees.tree_id for s in studies]),
                                 arrays=_cat([s.trees.arrays for s in studies]), fed=sum(s.trees.fed for s in studies))
  timings = {}
  for s in studies:
    for k, v in s.timings.items():
      timings[k] = timings.get(k, 0.0) + v
  forking = None
  if first.forking is not None:

    forking = pool_forking([s.forking for s in studies], [len(s.problems) for s in studies])
  base = np.concatenate([np.full(len(s.problems), b) for b, s in enumerate(studies)])
  return first._replace(problems=_cat([s.problems for s in studies]), rollout=_cat([s.rollout for s in studies]),
                        truth=truth, signals=_cat([s.signals for s in studies]),
                        policy=_cat([s.policy for s in studies]), extras=_cat([s.extras for s in studies]),
                        timings=timings, trees=trees, base=base, forking=forking)
