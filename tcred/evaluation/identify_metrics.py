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
- Controls (DESIGN §5): `quantile_strata` (e.g. p-deciles), `stratified_spearman`,
  `stratified_top_precision`, `stratified_top_mask` and `stratified_chance_jaccard`: the same figures
  computed within strata (a position, a p-decile) and pooled, so that what a signal knows through the
  stratum alone does not count.
- `cluster_bootstrap_ci`: percentile confidence interval of any of the above, resampling whole
  clusters (prompts, or bases then prompts) with replacement, since tokens of one prompt are not
  independent; the draws are the tables' (`stats.cluster_draws`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from tcred.evaluation import stats


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


def stratified_ranks(x, strata) -> tuple[np.ndarray, np.ndarray]:
  """1-based average ranks of `x [n]` within each stratum (ties share the mean of their ranks), and each
  value's stratum as `0..S−1` (`np.unique(strata, return_inverse=True)`): `(ranks [n], inverse [n])`.

  One sort for all strata (`np.lexsort` by stratum, then value): rank = position in the sorted order minus
  the stratum's first position, averaged over runs of equal (stratum, value).
  """
  x = _flat(x)
  if np.isnan(x).any():
    raise ValueError("stratified_ranks: NaN in input")
  strata = np.asarray(strata).reshape(-1)
  _check_same(x, strata)
  _, inv = np.unique(strata, return_inverse=True)
  inv = inv.reshape(-1)
  n = x.shape[0]
  ranks = np.empty(n, np.float64)
  if n == 0:
    return ranks, inv
  order = np.lexsort((x, inv))
  xs, gs = x[order], inv[order]
  new_run = np.concatenate([[True], (xs[1:] != xs[:-1]) | (gs[1:] != gs[:-1])])
  starts = np.flatnonzero(new_run)
  ends = np.concatenate([starts[1:], [n]])
  first = np.searchsorted(gs, gs[starts], side="left")  # the stratum's first sorted position, per run
  ranks[order] = np.repeat((starts + ends + 1) / 2.0 - first, ends - starts)
  return ranks, inv


def stratified_auroc(scores, labels, strata) -> float:
  """AUROC over the (positive, negative) pairs that share a stratum (e.g. the token position).

  `Σ_s U_s / Σ_s n_pos,s · n_neg,s`, with U_s the Mann–Whitney statistic within stratum s: the
  probability that a positive scores above a negative of the same stratum (ties 1/2). It removes
  what a signal knows only through the stratum (a signal that is a function of the position
  scores exactly 0.5). NaN if no stratum holds both classes. (A stratum with one class has U_s = 0
  and no pairs, so summing over every stratum is the same.)
  """
  scores = _flat(scores)
  labels = _flat(labels, bool)
  _check_same(scores, labels)
  ranks, inv = stratified_ranks(scores, strata)
  if not inv.size:
    return math.nan
  n_pos = np.bincount(inv, weights=labels.astype(np.float64))
  n_all = np.bincount(inv).astype(np.float64)
  pairs = float(np.sum(n_pos * (n_all - n_pos)))
  if pairs == 0:
    return math.nan
  u = float(np.sum(np.bincount(inv, weights=np.where(labels, ranks, 0.0), minlength=n_pos.size)
                   - n_pos * (n_pos + 1) / 2.0))
  return u / pairs


def quantile_strata(x, q: int = 10) -> np.ndarray:
  """`[n]` int stratum of each value: its q-quantile bin over `x` itself (`q = 10`: deciles).

  Bin edges are the interior quantiles `np.quantile(x, [1/q, …, (q−1)/q])`; value v goes to bin
  `#{edges < v}` (`np.searchsorted(edges, v, side="left")`), so equal values share a bin and heavily
  tied inputs (p ≈ 1 for most tokens) give fewer than q non-empty bins.
  """
  x = _flat(x)
  if q < 1:
    raise ValueError(f"q must be >= 1, got {q}")
  if x.shape[0] == 0:
    return np.zeros(0, np.int64)
  edges = np.quantile(x, np.arange(1, q) / q)
  return np.searchsorted(edges, x, side="left").astype(np.int64)


def _strata(strata, n: int) -> tuple[np.ndarray, np.ndarray]:
  strata = np.asarray(strata).reshape(-1)
  if strata.shape[0] != n:
    raise ValueError(f"arrays must have the same length, got {[n, strata.shape[0]]}")
  values, inv = np.unique(strata, return_inverse=True)
  return values, inv.reshape(-1)


def stratified_spearman(x, y, strata) -> float:
  """Spearman's correlation within strata, pooled: `Σ_s n_s ρ_s / Σ_s n_s` over the strata whose ρ_s is
  defined (≥ 2 values, neither input constant within the stratum). A function of the stratum alone has no
  within-stratum variation and is left out (NaN when no stratum has a defined ρ_s).
  """
  x, y = _flat(x), _flat(y)
  _check_same(x, y)
  rx, inv = stratified_ranks(x, strata)
  ry, _ = stratified_ranks(y, strata)
  if not inv.size:
    return math.nan
  n_s = np.bincount(inv).astype(np.float64)
  mid = (n_s + 1.0) / 2.0  # the mean rank within each stratum
  dx, dy = rx - mid[inv], ry - mid[inv]
  sxy, sxx, syy = (np.bincount(inv, weights=w, minlength=n_s.size) for w in (dx * dy, dx * dx, dy * dy))
  ok = (n_s >= 2) & (sxx > 0) & (syy > 0)
  if not ok.any():
    return math.nan
  rho = sxy[ok] / np.sqrt(sxx[ok] * syy[ok])
  return float(np.sum(n_s[ok] * rho) / np.sum(n_s[ok]))


def stratified_top_precision(scores, labels, strata, frac: float = 0.2) -> float:
  """Precision of the top `k_s = ceil(frac · n_s)` tokens of every stratum s, pooled over strata:
  `Σ_s k_s · precision_s / Σ_s k_s`, each `precision_s` the `top_fraction_precision` of the stratum (ties at
  its threshold broken uniformly at random, its expectation). A constant signal scores the strata-weighted
  base rate. Vectorised: one sort by (stratum, −score) gives each stratum's k_s-th largest score.
  """
  scores = _flat(scores)
  labels = _flat(labels, bool)
  _check_same(scores, labels)
  if not 0.0 < frac <= 1.0:
    raise ValueError(f"frac must be in (0, 1], got {frac}")
  _, inv = _strata(strata, scores.shape[0])
  if not inv.size:
    return math.nan
  n_s = np.bincount(inv)
  k_s = np.minimum(n_s, np.ceil(np.round(frac * n_s, 9)).astype(np.int64))
  order = np.lexsort((-scores, inv))
  starts = np.searchsorted(inv[order], np.arange(n_s.size), side="left")
  threshold = scores[order][starts + np.maximum(k_s, 1) - 1][inv]  # each token's stratum's k_s-th largest
  count = lambda m: np.bincount(inv, weights=m.astype(np.float64), minlength=n_s.size)
  above, tied = scores > threshold, scores == threshold
  a, m = count(above), count(tied)
  hits = count(above & labels) + (k_s - a) * count(tied & labels) / np.maximum(m, 1)
  return float(hits.sum() / k_s.sum())


def stratified_top_mask(scores, strata, frac: float = 0.2) -> np.ndarray:
  """`[n]` bool: within each stratum, the tokens scoring at least its `ceil(frac · n_s)`-th largest score
  (ties at the threshold kept, as `forking_mask` keeps them)."""
  scores = _flat(scores)
  _, inv = _strata(strata, scores.shape[0])
  out = np.zeros(scores.shape[0], bool)
  for s in range(int(inv.max()) + 1 if inv.size else 0):
    sel = np.flatnonzero(inv == s)
    k = min(sel.size, math.ceil(round(frac * sel.size, 9)))
    if k:
      out[sel] = scores[sel] >= np.sort(scores[sel])[sel.size - k]
  return out


def stratified_chance_jaccard(a, b, strata) -> float:
  """Jaccard expected for two sets drawn uniformly at random within each stratum with the per-stratum sizes
  of the bool masks `a` and `b`: `E∩ / (|A| + |B| − E∩)`, `E∩ = Σ_s a_s b_s / n_s` (the ratio of expectations,
  as `chance_jaccard`)."""
  a, b = _flat(a, bool), _flat(b, bool)
  _check_same(a, b)
  _, inv = _strata(strata, a.shape[0])
  n_s = np.bincount(inv).astype(np.float64)
  a_s = np.bincount(inv, weights=a).astype(np.float64)
  b_s = np.bincount(inv, weights=b).astype(np.float64)
  inter = float(np.sum(np.where(n_s > 0, a_s * b_s / np.maximum(n_s, 1), 0.0)))
  union = float(a.sum() + b.sum()) - inter
  return math.nan if union <= 0 else inter / union


def violating_share(decisive, can_decide) -> float:
  """Share of the decisive labels on tokens that cannot be decisive (`~can_decide`, e.g. p > 1 − δ under the
  on-policy bound |A_t| ≤ 1 − p): provably Monte-Carlo noise. NaN without a decisive label."""
  decisive, can_decide = _flat(decisive, bool), _flat(can_decide, bool)
  _check_same(decisive, can_decide)
  d = int(decisive.sum())
  return math.nan if d == 0 else float((decisive & ~can_decide).sum() / d)


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


def cluster_tree(clusters) -> tuple[list[np.ndarray], list]:
  """Identify's clusters as `stats.cluster_draws` takes them: `(leaf_indices, tree)`.

  `clusters`: C index arrays (one level: prompts), or B sequences of index arrays (two levels: SFT bases,
  then the prompts of each base). `leaf_indices` lists every prompt's index array in order; `tree` holds
  their positions in it (`[0, .., C-1]`, or one list per base). One base is the one-level tree.
  """
  if len(clusters) and not isinstance(clusters[0], np.ndarray):
    if len(clusters) == 1:
      return cluster_tree(clusters[0])
    leaves, tree = [], []
    for base in clusters:
      tree.append(list(range(len(leaves), len(leaves) + len(base))))
      leaves.extend(base)
    return leaves, tree
  return list(clusters), list(range(len(clusters)))


def cluster_replicates(clusters, *, reps: int, rng: np.random.Generator):
  """The token indices of `reps` cluster-bootstrap replicates (a generator): bases with replacement, then
  prompts within each drawn base (`stats.cluster_draws`, the tables' bootstrap), each drawn prompt's
  indices pooled (`stats.expand_indices`)."""
  leaves, tree = cluster_tree(clusters)
  for counts in stats.cluster_draws(tree, reps=reps, rng=rng):
    yield stats.expand_indices(leaves, counts)


def cluster_bootstrap_ci(metric: Callable[[np.ndarray], float], clusters: Sequence, *,
                         reps: int, rng: np.random.Generator, confidence: float = 0.95
                         ) -> tuple[float, float]:
  """Percentile CI of `metric(idx)` under resampling whole clusters with replacement.

  Args:
    metric: maps an index array into the flat token arrays to a float (NaN allowed).
    clusters: C index arrays (the tokens of each prompt), or B sequences of them (bases, then prompts:
      a two-level cluster bootstrap, `cluster_replicates`).
    reps: bootstrap replicates.
    rng: NumPy generator (the CI is a deterministic function of its state).
    confidence: two-sided level.

  Returns:
    (low, high), NaN if fewer than half of the replicates gave a finite value.
  """
  values = [metric(idx) for idx in cluster_replicates(clusters, reps=reps, rng=rng)]
  return stats.percentile_interval(values, confidence=confidence)
