"""Cluster-bootstrap confidence intervals: the study's tokens are resampled by whole prompts (a prompt's
G rollouts and their tokens are not independent), and, when the study pools several SFT bases, by bases
first, then prompts within each drawn base (a two-level cluster bootstrap drawn as the tables draw it, `stats.cluster_draws`);
95% percentile intervals.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from tcred.evaluation import stats
from tcred.evaluation.identify_metrics import cluster_replicates


def prompt_clusters(mask: np.ndarray, base: np.ndarray | None = None) -> list:
  """For each prompt, the positions of its valid tokens in the pooled `mask` order: `[N, G, T]` -> N arrays.

  `base` (`[N]` int, optional): the SFT base of each prompt row (a study pooled over bases); then the
  clusters are two-level: one list per base (in order of first appearance), of its prompts' arrays.
  """
  n = mask.shape[0]
  prompt_of = np.broadcast_to(np.arange(n)[:, None, None], mask.shape)[mask]
  prompts = [np.flatnonzero(prompt_of == i) for i in range(n)]
  if base is None:
    return prompts
  base = np.asarray(base).reshape(-1)
  return [[prompts[i] for i in np.flatnonzero(base == b)] for b in dict.fromkeys(base.tolist())]


def metric_cis(metrics_of: Callable[[np.ndarray], dict], clusters: Sequence, names: Sequence, *, reps: int,
               rng: np.random.Generator) -> dict:
  """95% percentile intervals of every metric `metrics_of(idx)` over `reps` cluster-bootstrap replicates.

  Each replicate draws clusters with replacement (`cluster_replicates`: prompts, or bases then prompts; one
  generator seeded from `rng`, so each call consumes one draw of `rng`) and pools their token positions `idx`. A metric gets
  (nan, nan) with `reps = 0` or when fewer than half the replicates give a finite value.
  """
  ci = {m: (math.nan, math.nan) for m in names}
  if not reps:
    return ci
  boot = {m: [] for m in names}
  state = np.random.default_rng(rng.integers(2**63))
  for idx in cluster_replicates(clusters, reps=reps, rng=state):
    for m, v in metrics_of(idx).items():
      boot[m].append(v)
  return {m: stats.percentile_interval(boot[m]) for m in names}
