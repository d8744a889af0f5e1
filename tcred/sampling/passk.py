"""pass@k on held-out problems."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from tcred.parallel.mesh import Layout
from tcred.sampling.rollout import sample_and_score
from tcred.tasks.base import Problem, Task


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
  """Unbiased pass@k of one problem (Chen et al. 2021): `1 − C(n−c, k) / C(n, k)`."""
  if not 0 < k <= num_samples:
    raise ValueError(f"k must be in [1, {num_samples}], got {k}")
  if num_samples - num_correct < k:
    return 1.0
  return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def evaluate(graphdef: nnx.GraphDef, params: nnx.State, task: Task, problems: Sequence[Problem],
             key: jax.Array, *, samples: int, temperature: float, batch_prompts: int = 64,
             greedy: bool = True, layout: Layout | None = None) -> dict[str, float]:
  """pass@1 at `temperature` over `len(problems) × samples` rollouts, pass@k for k = samples,
  and greedy pass@1 (one greedy rollout per problem) if `greedy`; `layout`: the run's mesh, or None
  (`sample_and_score`)."""
  correct = []
  for start in range(0, len(problems), batch_prompts):
    chunk = problems[start:start + batch_prompts]
    groups = sample_and_score(graphdef, params, task, chunk, jax.random.fold_in(key, start),
                              group_size=samples, temperature=temperature, layout=layout)
    correct.append(groups.rewards.sum(axis=1))
  c = np.concatenate(correct)
  out = {"pass1": float(np.mean(c / samples)),
         f"pass{samples}": float(np.mean([pass_at_k(samples, int(x), samples) for x in c])),
         "samples": int(len(problems) * samples)}
  if greedy:
    hits = []
    for start in range(0, len(problems), batch_prompts):
      chunk = problems[start:start + batch_prompts]
      groups = sample_and_score(graphdef, params, task, chunk, key, group_size=1, temperature=1.0,
                                greedy=True, layout=layout)
      hits.append(groups.rewards[:, 0])
    out["pass1_greedy"] = float(np.mean(np.concatenate(hits)))
  return out
