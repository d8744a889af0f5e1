"""Cluster-bootstrap confidence intervals over prompts: the study's tokens are resampled by whole
prompts (a prompt's G rollouts and their tokens are not independent), 95% percentile intervals.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


def prompt_clusters(mask: np.ndarray) -> list[np.ndarray]:
  """For each prompt, the positions of its valid tokens in the pooled `mask` order: `[N, G, T]` -> N arrays."""
  n = mask.shape[0]
  prompt_of = np.broadcast_to(np.arange(n)[:, None, None], mask.shape)[mask]
  return [np.flatnonzero(prompt_of == i) for i in range(n)]


def metric_cis(metrics_of: Callable[[np.ndarray], dict[str, float]], clusters: Sequence[np.ndarray],
               names: Sequence[str], *, reps: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
  """95% percentile intervals of every metric `metrics_of(idx)` over `reps` cluster-bootstrap replicates.

  Each replicate draws len(clusters) prompts with replacement (one generator seeded from `rng`, so
  each call consumes one draw of `rng`) and pools their token positions `idx`. A metric gets
  (nan, nan) with `reps = 0` or when fewer than half the replicates give a finite value.
  """
  ci = {m: (math.nan, math.nan) for m in names}
  if not reps:
    return ci
  boot = {m: [] for m in names}
  state = np.random.default_rng(rng.integers(2**63))
  for _ in range(reps):
    idx = np.concatenate([clusters[i] for i in state.integers(0, len(clusters), size=len(clusters))])
    for m, v in metrics_of(idx).items():
      boot[m].append(v)
  for m in names:
    v = np.asarray(boot[m])
    v = v[np.isfinite(v)]
    if v.size >= max(1, reps // 2):
      ci[m] = tuple(float(q) for q in np.quantile(v, [0.025, 0.975]))
  return ci
