"""Identifiability metrics (DESIGN §5), plain NumPy: how well a token signal finds decisive tokens.

Every function takes flat `[n]` arrays of the valid tokens of a study (pooled over prompts,
rollouts and positions; the caller flattens and masks) and returns a Python float, NaN when the
metric is undefined (an empty class, a constant input). Ranks are SciPy's (`scipy.stats.rankdata`).

- `average_ranks`: 1-based ranks, ties get the mean of the ranks they span.
- `auroc`: area under the ROC curve of `scores` for binary `labels`, the Mann–Whitney U statistic
  over `n_pos · n_neg`: the probability that a random positive scores above a random negative,
  ties counting 1/2.
- `stratified_auroc`: the same over pairs within a stratum only (e.g. tokens at the same
  position), so that what a signal knows through the stratum alone does not count.
- `spearman`: Pearson correlation of the average ranks.
- `top_fraction_precision`: the share of positives among the top `ceil(frac · n)` tokens by score,
  ties at the threshold broken uniformly at random (its expectation is returned, so the result
  is deterministic and a constant signal scores exactly the base rate).
- `jaccard`, `chance_jaccard`: the overlap of two token sets and its expectation for two
  independent random sets of the same sizes.
- `cluster_bootstrap_ci`: percentile confidence interval of any of the above, resampling whole
  clusters (prompts) with replacement, since tokens of one prompt are not independent.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata


def _flat(x, dtype=np.float64) -> np.ndarray:
  x = np.asarray(x, dtype)
  if x.ndim != 1:
    raise ValueError(f"expected a flat [n] array, got shape {x.shape}")
  return x


def _check_same(*arrays):
  n = arrays[0].shape[0]
  if any(a.shape[0] != n for a in arrays):
    raise ValueError(f"arrays must have the same length, got {[a.shape[0] for a in arrays]}")


def average_ranks(x) -> np.ndarray:
  """1-based ranks of `x [n]`, tied values sharing the mean of their ranks (float64 `[n]`).

  Example: `[10, 20, 20, 5] -> [2, 3.5, 3.5, 1]`.
  """
  x = _flat(x)
  if np.isnan(x).any():
    raise ValueError("average_ranks: NaN in input")
  return rankdata(x, method="average").astype(np.float64)  # scipy.stats; [] -> []


def auroc(scores, labels) -> float:
  """AUROC of `scores [n]` for `labels [n]` (bool): U / (n_pos · n_neg), ties count 1/2.

  `U = Σ_{positives} rank − n_pos (n_pos + 1) / 2` with average ranks (Mann–Whitney).
  NaN if there is no positive or no negative.
  """
  scores = _flat(scores)
  labels = _flat(labels, bool)
  _check_same(scores, labels)
  n_pos = int(labels.sum())
  n_neg = labels.shape[0] - n_pos
  if n_pos == 0 or n_neg == 0:
    return math.nan
  ranks = average_ranks(scores)
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def stratified_auroc(scores, labels, strata) -> float:
  """AUROC over the (positive, negative) pairs that share a stratum (e.g. the token position).

  `Σ_s U_s / Σ_s n_pos,s · n_neg,s`, with U_s the Mann–Whitney statistic within stratum s: the
  probability that a positive scores above a negative of the same stratum (ties 1/2). It removes
  what a signal knows only through the stratum (a signal that is a function of the position
  scores exactly 0.5). NaN if no stratum holds both classes.
  """
  scores = _flat(scores)
  labels = _flat(labels, bool)
  strata = np.asarray(strata).reshape(-1)
  _check_same(scores, labels, strata)
  u_sum, pairs = 0.0, 0
  for s in np.unique(strata):
    sel = strata == s
    lab = labels[sel]
    n_pos = int(lab.sum())
    n_neg = lab.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
      continue
    ranks = average_ranks(scores[sel])
    u_sum += ranks[lab].sum() - n_pos * (n_pos + 1) / 2.0
    pairs += n_pos * n_neg
  return math.nan if pairs == 0 else float(u_sum / pairs)


def spearman(x, y) -> float:
  """Spearman's rank correlation: the Pearson correlation of the average ranks of x and y.

  NaN if fewer than two values or either input is constant.
  """
  x, y = _flat(x), _flat(y)
  _check_same(x, y)
  if x.shape[0] < 2:
    return math.nan
  rx = average_ranks(x) - (x.shape[0] + 1) / 2.0
  ry = average_ranks(y) - (y.shape[0] + 1) / 2.0
  den = math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry)))
  if den == 0.0:
    return math.nan
  return float(np.dot(rx, ry) / den)


def top_fraction_precision(scores, labels, frac: float = 0.2) -> float:
  """Expected precision of the top `k = ceil(frac · n)` tokens by score, ties broken at random.

  With `a` tokens scoring strictly above the k-th largest score s_k (of which `p_a` positive)
  and `m` tokens tied at s_k (of which `p_m` positive), `k − a` of the tied tokens are chosen
  uniformly: precision = (p_a + (k − a) · p_m / m) / k. NaN when n = 0.
  """
  scores = _flat(scores)
  labels = _flat(labels, bool)
  _check_same(scores, labels)
  if not 0.0 < frac <= 1.0:
    raise ValueError(f"frac must be in (0, 1], got {frac}")
  n = scores.shape[0]
  if n == 0:
    return math.nan
  k = min(n, math.ceil(round(frac * n, 9)))
  threshold = np.sort(scores)[n - k]  # the k-th largest
  above = scores > threshold
  tied = scores == threshold
  a, m = int(above.sum()), int(tied.sum())
  hits = labels[above].sum() + (k - a) * labels[tied].sum() / m
  return float(hits / k)


def jaccard(a, b) -> float:
  """|A ∩ B| / |A ∪ B| of two bool masks `[n]`; NaN when both are empty."""
  a, b = _flat(a, bool), _flat(b, bool)
  _check_same(a, b)
  union = int((a | b).sum())
  return math.nan if union == 0 else float((a & b).sum() / union)


def chance_jaccard(size_a: int, size_b: int, n: int) -> float:
  """Approximate Jaccard of two independent uniformly random sets of the given sizes out of n.

  E|A ∩ B| = a b / n (hypergeometric); returns E∩ / (a + b − E∩), the ratio of expectations.
  """
  if n <= 0 or size_a + size_b == 0:
    return math.nan
  inter = size_a * size_b / n
  return float(inter / (size_a + size_b - inter))


def cluster_bootstrap_ci(metric: Callable[[np.ndarray], float], clusters: Sequence[np.ndarray], *,
                         reps: int, rng: np.random.Generator, confidence: float = 0.95
                         ) -> tuple[float, float]:
  """Percentile CI of `metric(idx)` under resampling whole clusters with replacement.

  Args:
    metric: maps an index array into the flat token arrays to a float (NaN allowed).
    clusters: C index arrays (the tokens of each prompt).
    reps: bootstrap replicates.
    rng: NumPy generator (the CI is a deterministic function of its state).
    confidence: two-sided level.

  Returns:
    (low, high), NaN if fewer than half of the replicates gave a finite value.
  """
  c = len(clusters)
  values = []
  for _ in range(reps):
    pick = rng.integers(0, c, size=c)
    idx = np.concatenate([clusters[i] for i in pick])
    values.append(metric(idx))
  values = np.asarray(values, np.float64)
  values = values[np.isfinite(values)]
  if values.size < max(1, reps // 2):
    return math.nan, math.nan
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
  return float(lo), float(hi)
