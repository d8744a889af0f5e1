"""Statistics of the results tables: intervals, budgets to a target, and the paired design's tests.

Distributions come from SciPy (`scipy.stats.t`, `scipy.stats.nct`); this module adds what SciPy
does not have:

  * `cluster_bootstrap` — a percentile bootstrap that resamples a *tree* of clusters: draw the
    top-level clusters with replacement, then, inside every drawn cluster, its children with
    replacement, down to the leaves (taken whole). `[[0, 3], [1, 4], [2]]` is five seeds over three
    SFT bases (bases, then seeds within a base); `[0, 1, ..., n−1]` is the ordinary bootstrap of n
    units; a tree of prompts whose leaves hold token positions is identify's cluster bootstrap.
    `scipy.stats.bootstrap` resamples independent observations (paired or not) but has no
    hierarchical resampling, which a random base factor needs; with one level the two agree
    (tests/evaluation/test_stats.py checks it against `scipy.stats.bootstrap(paired=True)`).
    Statistics are functions of leaf weights `[R, L]` (`weighted_mean`, `ratio_of_means`), or of
    pooled positions through `pooled_statistic` (identify's tokens of prompts).
  * `minimum_detectable_effect` / `mde_from_sd` — the effect a two-sided paired t-test detects with
    a given power, solved exactly with the noncentral t distribution.
  * `holm` — Holm's step-down adjusted p-values (SciPy has only Benjamini–Hochberg).
  * `samples_to_reach` / `curve_area` — the budget (samples, generated tokens) until a pass@1 curve
    reaches a target, and the mean pass@1 over its first X generated tokens (the area under the curve / X).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import optimize
from scipy import stats as _st

BOOTSTRAP_REPS = 10_000
"""Bootstrap replicates of every table interval."""


def mean_ci(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float]:
  """Mean and half-width of the two-sided Student-t confidence interval of the mean.

  `half_width = t_{(1+c)/2, n−1} · s / √n` with `s` the sample standard deviation (ddof = 1) and the
  t quantile from `scipy.stats.t.ppf`.

  Args:
    values: `[n]` finite numbers (one per seed), n ≥ 1.
    confidence: the interval's coverage `c`, in (0, 1).

  Returns:
    `(mean, half_width)`; for n = 1 the half-width is `nan` (no spread can be estimated) and
    `format_mean_ci` prints "(n=1)" instead.
  """
  _check_level(confidence, "confidence")
  x = _finite(values, "mean_ci")
  mean = float(x.mean())
  if x.size == 1:
    return mean, float("nan")
  sem = float(x.std(ddof=1)) / math.sqrt(x.size)
  return mean, float(_st.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * sem


def _check_level(value: float, name: str) -> None:
  if not 0.0 < value < 1.0:
    raise ValueError(f"{name} must be in (0, 1), got {value}")


def _finite(values, what: str) -> np.ndarray:
  x = np.asarray(values, dtype=np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError(f"{what} needs at least one value, got none")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{what} needs finite values, got {x.tolist()}")
  return x


# ----------------------------------------------------------------------------------------------------
# Cluster bootstrap


class Interval(NamedTuple):
  """A point estimate and its percentile bootstrap interval (`low`, `high`; nan when undefined)."""

  estimate: float
  low: float
  high: float


def cluster_leaves(tree) -> list[int]:
  """The leaf ids of a cluster tree, depth first. A tree is a non-empty list whose items are leaf
  ids (ints) or trees; every id 0..L−1 must appear exactly once."""
  if isinstance(tree, (int, np.integer)) or not isinstance(tree, (list, tuple)) or not tree:
    raise ValueError(f"a cluster tree is a non-empty list of leaf ids or cluster trees, got {tree!r}")
  out = []
  for child in tree:
    if isinstance(child, (int, np.integer)) and not isinstance(child, bool):
      out.append(int(child))
    else:
      out += cluster_leaves(child)
  return out


def _check_tree(tree) -> int:
  leaves = cluster_leaves(tree)
  if sorted(leaves) != list(range(len(leaves))):
    raise ValueError(f"the leaf ids of a cluster tree must be 0..L-1, each once; got {sorted(leaves)}")
  return len(leaves)


def _draw(node, reps: int, rng: np.random.Generator, n_leaves: int) -> np.ndarray:
  """`[reps, L]` counts: `reps` independent resamples of `node` (a list level of the tree)."""
  out = np.zeros((reps, n_leaves), np.int64)
  picks = rng.integers(0, len(node), size=(reps, len(node)))  # [reps, k] children drawn at this level
  for c, child in enumerate(node):
    m = (picks == c).sum(axis=1)  # [reps] times child c was drawn
    if isinstance(child, (int, np.integer)):
      out[:, int(child)] += m
    elif (total := int(m.sum())):
      # Each draw of a subtree resamples it anew: `total` resamples, summed per replicate.
      np.add.at(out, np.repeat(np.arange(reps), m), _draw(child, total, rng, n_leaves))
  return out


def cluster_draws(tree, *, reps: int, rng: np.random.Generator) -> np.ndarray:
  """Counts `[reps, L]`: how many times each leaf is drawn in each replicate of the cluster bootstrap.

  At every level of `tree` (see `cluster_leaves`), as many children as the level has are drawn with
  replacement; a drawn subtree is resampled again the same way (independently per draw), a drawn leaf
  is taken whole. A replicate is a deterministic function of `rng`'s state.

  Examples:
    `[0, 1, 2]`: the ordinary bootstrap of three units (multinomial counts, each row sums to 3).
    `[[0, 2], [1]]`: two bases with seeds {0, 2} and {1}; row sums vary (a base drawn twice counts
    its resampled seeds twice).
  """
  if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
    raise ValueError(f"reps must be an integer >= 1, got {reps!r}")
  n_leaves = _check_tree(tree)
  return _draw(list(tree), int(reps), rng, n_leaves)


def percentile_interval(replicates, *, confidence: float = 0.95) -> tuple[float, float]:
  """The `(1 ± confidence)/2` quantiles of the bootstrap replicates (linear interpolation between
  order statistics, as `np.quantile`); `(nan, nan)` when fewer than half of them are defined (not nan;
  a ratio whose denominator often vanishes, say). ±inf replicates (a budget never reached) count as
  the largest / smallest values, and a quantile among them is ±inf."""
  _check_level(confidence, "confidence")
  v = np.asarray(replicates, np.float64).reshape(-1)
  defined = v[~np.isnan(v)]
  if defined.size == 0 or defined.size < v.size / 2:
    return math.nan, math.nan
  alpha = (1.0 - confidence) / 2.0
  big = 1e300  # stands in for ±inf so that interpolation next to it stays defined
  lo, hi = np.quantile(np.clip(defined, -big, big), [alpha, 1.0 - alpha])
  back = lambda q: math.copysign(math.inf, q) if abs(q) >= big / 2 else float(q)
  return back(lo), back(hi)


def cluster_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], tree, *, reps: int = BOOTSTRAP_REPS,
                      rng: np.random.Generator | None = None, draws: np.ndarray | None = None,
                      confidence: float = 0.95) -> Interval:
  """A statistic of L leaves with its percentile cluster-bootstrap interval.

  Args:
    statistic: maps leaf weights `[R, L]` (how often each leaf is drawn) to `[R]` values, e.g. a
      weighted mean `w @ x / w.sum(1)`; nan where undefined. The estimate is its value at weights 1.
      A statistic of pooled positions (identify's tokens) builds them per replicate with
      `expand_indices`.
    tree: the clusters (`cluster_draws`).
    reps, rng: replicates and the generator that draws them (default: seed 0, so a table is a
      deterministic function of its runs); or `draws`, counts from `cluster_draws` reused across
      statistics of the same design.
    confidence: two-sided level of the interval.

  Returns:
    `Interval(estimate, low, high)`; `low, high` are nan with a single leaf or when fewer than half
    the replicates are finite.
  """
  n_leaves = _check_tree(tree)
  if draws is None:
    draws = cluster_draws(tree, reps=reps, rng=np.random.default_rng(0) if rng is None else rng)
  elif draws.ndim != 2 or draws.shape[1] != n_leaves:
    raise ValueError(f"draws must be [R, {n_leaves}] (one column per leaf), got {draws.shape}")
  with np.errstate(divide="ignore", invalid="ignore"):
    estimate = float(np.asarray(statistic(np.ones((1, n_leaves))), np.float64).reshape(-1)[0])
    values = np.asarray(statistic(draws.astype(np.float64)), np.float64).reshape(-1)
  if values.shape != (draws.shape[0],):
    raise ValueError(f"statistic must map weights [R, L] to [R] values, got shape {values.shape}")
  if n_leaves == 1:  # one unit: no spread can be estimated
    return Interval(estimate, math.nan, math.nan)
  return Interval(estimate, *percentile_interval(values, confidence=confidence))


def expand_indices(leaf_indices: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
  """The pooled positions of one replicate: leaf `l`'s index array repeated `counts[l]` times.

  `leaf_indices`: `[L]` arrays (e.g. the token positions of each prompt); `counts`: `[L]`, one row of
  `cluster_draws`.
  """
  parts = [np.asarray(ix) for ix, c in zip(leaf_indices, counts) for _ in range(int(c))]
  return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def pooled_statistic(metric: Callable[[np.ndarray], float], leaf_indices: Sequence[np.ndarray]
                     ) -> Callable[[np.ndarray], np.ndarray]:
  """A `cluster_bootstrap` statistic from a metric of pooled positions (AUROC of a study's tokens,
  say): `w ↦ [metric(expand_indices(leaf_indices, w_r)) for each replicate r]`.

  `leaf_indices`: `[L]` index arrays, leaf l's positions (e.g. the tokens of prompt l); the tree's
  leaf ids are positions in this list. Example, prompts within bases (identify over several bases):
  `cluster_bootstrap(pooled_statistic(auroc_of, tokens_of_prompt), [[0, 1, 2], [3, 4, 5]], reps=200, rng=rng)`.
  """
  return lambda w: np.array([metric(expand_indices(leaf_indices, row)) for row in w], np.float64)


def weighted_mean(x) -> Callable[[np.ndarray], np.ndarray]:
  """The statistic `w ↦ Σ_l w_l x_l / Σ_l w_l` of leaf values `x [L]` (for `cluster_bootstrap`)."""
  x = np.asarray(x, np.float64)
  return lambda w: (w @ x) / w.sum(axis=1)


def ratio_of_means(num, den) -> Callable[[np.ndarray], np.ndarray]:
  """The statistic `w ↦ Σ w·num / Σ w·den` (nan where the denominator is 0; an infinite `num` drawn
  at least once — a budget never reached — gives inf; an infinite `den` drawn gives 0 over a finite
  numerator and nan over an infinite one). Leaves with weight 0 count for nothing, infinite or not."""
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  inf_num, inf_den = np.isinf(num), np.isinf(den)
  finite_num, finite_den = np.where(inf_num, 0.0, num), np.where(inf_den, 0.0, den)

  def stat(w):
    d = w @ finite_den
    r = np.where(d != 0, (w @ finite_num) / np.where(d != 0, d, 1.0), np.nan)
    num_inf, den_inf = w @ inf_num.astype(np.float64) > 0, w @ inf_den.astype(np.float64) > 0
    r = np.where(num_inf & (d > 0), np.inf, r)
    return np.where(den_inf, np.where(num_inf, np.nan, 0.0), r)

  return stat


def base_tree(seeds: Sequence[int], bases: int):
  """The cluster tree of runs `seeds` (positions 0..n−1 are the leaves) when seed s uses SFT base
  `s mod bases`: one cluster per base holding its seeds; with one base, the seeds themselves."""
  if bases < 1:
    raise ValueError(f"bases must be >= 1, got {bases}")
  if bases == 1:
    return list(range(len(seeds)))
  groups: dict[int, list[int]] = {}
  for i, s in enumerate(seeds):
    groups.setdefault(int(s) % bases, []).append(i)
  return [groups[b] for b in sorted(groups)]


def unit_means(values, tree) -> np.ndarray:
  """The mean of `values [L]` over the leaves of each top-level cluster of `tree` (a leaf alone is
  its own unit): the independent units of the design (bases, or seeds with one base)."""
  x = np.asarray(values, np.float64)
  return np.array([x[c] if isinstance(c, (int, np.integer)) else x[cluster_leaves(c)].mean() for c in tree])


# ----------------------------------------------------------------------------------------------------
# Tests and resolution


def paired_t_pvalue(differences) -> float:
  """Two-sided p-value of the one-sample t-test of mean 0 on `differences [n]` (`scipy.stats.ttest_1samp`);
  nan with fewer than 2 values or no spread at a mean of exactly 0; 0 with no spread otherwise."""
  d = _finite(differences, "paired_t_pvalue")
  if d.size < 2:
    return math.nan
  if float(d.std(ddof=1)) == 0.0:
    return math.nan if float(d.mean()) == 0.0 else 0.0
  return float(_st.ttest_1samp(d, 0.0).pvalue)


def holm(pvalues) -> np.ndarray:
  """Holm's step-down adjusted p-values: sorted ascending, `p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))`.

  nan p-values are left out of the family (m counts the finite ones) and stay nan. Rejecting where
  `p̃ < α` controls the family-wise error rate at α (Holm 1979).
  """
  p = np.asarray(pvalues, np.float64).reshape(-1)
  out = np.full(p.shape, np.nan)
  idx = np.flatnonzero(np.isfinite(p))
  if idx.size == 0:
    return out
  order = idx[np.argsort(p[idx], kind="stable")]
  m = order.size
  adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
  out[order] = np.maximum.accumulate(adjusted)
  return out


def minimum_detectable_effect(differences, *, alpha: float = 0.05, power: float = 0.8) -> float:
  """The smallest true mean difference the two-sided paired t-test at level `alpha` detects with
  probability `power`, given the spread of the observed unit differences `[n]` (`mde_from_sd`);
  nan with fewer than 2 units."""
  d = _finite(differences, "minimum_detectable_effect")
  return mde_from_sd(float(d.std(ddof=1)) if d.size > 1 else math.nan, d.size, alpha=alpha, power=power)


def mde_from_sd(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
  """Minimum detectable effect of the two-sided one-sample (paired) t-test with n units of spread `sd`.

  `MDE = λ · sd / √n`, λ the noncentrality at which `P(|T| > t_{1−α/2, n−1}) = power` for
  `T ~ nct(n − 1, λ)` (solved with SciPy; about `(t_{1−α/2} + t_{power}) · sd / √n`, → 2.80 · sd / √n
  for large n). nan for n < 2 or a nan sd.
  """
  _check_level(alpha, "alpha")
  _check_level(power, "power")
  if n < 2 or math.isnan(sd):
    return math.nan
  df = n - 1
  crit = float(_st.t.ppf(1.0 - alpha / 2.0, df))

  def gap(lam: float) -> float:  # P(T > crit) + P(T < −crit) − power; the far tail is P(T' > crit), T' ~ nct(−λ)
    far = float(_st.nct.sf(crit, df, -lam))
    return float(_st.nct.sf(crit, df, lam)) + (0.0 if math.isnan(far) else far) - power

  if gap(0.0) >= 0:  # power ≤ alpha: any effect is "detected" as often as none
    lam = 0.0
  else:
    hi = 1.0
    while gap(hi) < 0:
      hi *= 2.0
    lam = optimize.brentq(gap, 0.0, hi, xtol=1e-12)
  return lam * sd / math.sqrt(n)


# ----------------------------------------------------------------------------------------------------
# Curves


def samples_to_reach(curve_x: Sequence[float], curve_y: Sequence[float], target: float) -> float | None:
  """The first `x` (samples, tokens, ...) at which the curve `y` reaches `target` (`y ≥ target`).

  The curve is read point by point in the given order (eval steps, increasing budget); there is
  no interpolation between eval points. Returns None if the curve never reaches the target.
  """
  xs = np.asarray(curve_x, dtype=np.float64).reshape(-1)
  ys = np.asarray(curve_y, dtype=np.float64).reshape(-1)
  if xs.shape != ys.shape:
    raise ValueError(f"curve_x and curve_y must have the same length, got {xs.size} and {ys.size}")
  hits = np.nonzero(ys >= target)[0]
  return float(xs[hits[0]]) if hits.size else None


def curve_area(curve_x: Sequence[float], curve_y: Sequence[float], x_max: float) -> float:
  """The mean of `y` over `[0, x_max]`: the area under the piecewise-linear curve through the points
  `(x, y)` (x increasing from 0) up to `x_max`, divided by `x_max`.

  `x_max` must lie within the curve (`0 < x_max ≤ x[-1]`); the curve is never extrapolated.
  """
  xs = np.asarray(curve_x, dtype=np.float64).reshape(-1)
  ys = np.asarray(curve_y, dtype=np.float64).reshape(-1)
  if xs.shape != ys.shape or xs.size < 2:
    raise ValueError(f"curve_area needs x and y of the same length >= 2, got {xs.size} and {ys.size}")
  if np.any(np.diff(xs) < 0) or xs[0] != 0.0:
    raise ValueError(f"curve_area needs x increasing from 0, got {xs.tolist()}")
  if not 0.0 < x_max <= xs[-1]:
    raise ValueError(f"x_max must be in (0, {xs[-1]}] (within the curve), got {x_max}")
  keep = xs < x_max
  px = np.append(xs[keep], x_max)
  py = np.append(ys[keep], np.interp(x_max, xs, ys))
  return float(np.sum(0.5 * (py[1:] + py[:-1]) * np.diff(px)) / x_max)  # trapezoids


# ----------------------------------------------------------------------------------------------------
# Formatting


def format_mean_ci(mean: float, half_width: float, digits: int = 1) -> str:
  """`"m ± h"` with `digits` decimals; `"m (n=1)"` when the half-width is nan (a single value)."""
  if math.isnan(half_width):
    return f"{mean:.{digits}f} (n=1)"
  return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def format_interval(iv: Interval, digits: int = 1, *, fmt: Callable[[float], str] | None = None) -> str:
  """`"m [lo, hi]"` (`fmt` or `digits` decimals); `"m (n=1)"` when the interval is undefined."""
  f = fmt or (lambda v: f"{v:.{digits}f}")
  if math.isnan(iv.estimate):
    return "—"
  if math.isnan(iv.low) or math.isnan(iv.high):
    return f"{f(iv.estimate)} (n=1)"
  return f"{f(iv.estimate)} [{f(iv.low)}, {f(iv.high)}]"


def format_count(x: float) -> str:
  """A count in short form: 950, 12.3k, 4.56M, 1.2G."""
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= scale:
      v = x / scale
      return f"{v:.3g}{suffix}" if abs(v) < 100 else f"{v:.0f}{suffix}"
  return f"{x:.0f}"
