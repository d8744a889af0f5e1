"""Small statistics for the results tables: Student-t confidence intervals and budgets to a target.

Everything here is plain Python/NumPy (no SciPy): the Student-t quantile is the exact inverse of
the t CDF, written through the regularised incomplete beta function

  F(t; ν) = 1 − ½ I_{ν/(ν+t²)}(ν/2, ½)      for t ≥ 0,

evaluated with Lentz's continued fraction (Numerical Recipes §6.4) and inverted by bisection to
machine precision, so it holds for any degrees of freedom and any confidence level.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz, NR §6.4)."""
  tiny, eps = 1e-300, 1e-15
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 10_000):
    m2 = 2 * m
    aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    h *= d * c
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    delta = d * c
    h *= delta
    if abs(delta - 1.0) < eps:
      break
  return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
  """`I_x(a, b)`, the regularised incomplete beta function, for `a, b > 0` and `0 ≤ x ≤ 1`."""
  if not 0.0 <= x <= 1.0:
    raise ValueError(f"x must be in [0, 1], got {x}")
  if x in (0.0, 1.0):
    return x
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
  front = math.exp(log_front)
  if x < (a + 1.0) / (a + b + 2.0):
    return front * _betacf(a, b, x) / a
  return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
  """CDF of Student's t distribution with `df` degrees of freedom."""
  if df <= 0:
    raise ValueError(f"df must be > 0, got {df}")
  tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
  """The `p` quantile of Student's t with `df` degrees of freedom (e.g. `p=0.975, df=2` → 4.303).

  Bisection on the exact CDF (`student_t_cdf`); accurate to ~1e-12 relative.
  """
  if not 0.0 < p < 1.0:
    raise ValueError(f"p must be in (0, 1), got {p}")
  if df <= 0:
    raise ValueError(f"df must be > 0, got {df}")
  if p < 0.5:
    return -student_t_quantile(1.0 - p, df)
  if p == 0.5:
    return 0.0
  lo, hi = 0.0, 1.0
  while student_t_cdf(hi, df) < p:
    lo, hi = hi, hi * 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if student_t_cdf(mid, df) < p:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-13 * max(1.0, hi):
      break
  return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float]:
  """Mean and half-width of the two-sided Student-t confidence interval of the mean.

  `half_width = t_{(1+c)/2, n−1} · s / √n` with `s` the sample standard deviation (ddof = 1).

  Args:
    values: `[n]` finite numbers (one per seed), n ≥ 1.
    confidence: the interval's coverage `c`, in (0, 1).

  Returns:
    `(mean, half_width)`; for n = 1 the half-width is `nan` (no spread can be estimated) and
    `format_mean_ci` prints "(n=1)" instead.
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  x = np.asarray(values, dtype=np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError("mean_ci needs at least one value, got none")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"mean_ci needs finite values, got {x.tolist()}")
  mean = float(x.mean())
  if x.size == 1:
    return mean, float("nan")
  sem = float(x.std(ddof=1)) / math.sqrt(x.size)
  return mean, student_t_quantile(0.5 + confidence / 2.0, x.size - 1) * sem


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


def format_mean_ci(mean: float, half_width: float, digits: int = 1) -> str:
  """`"m ± h"` with `digits` decimals; `"m (n=1)"` when the half-width is nan (a single value)."""
  if math.isnan(half_width):
    return f"{mean:.{digits}f} (n=1)"
  return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def format_count(x: float) -> str:
  """A count in short form: 950, 12.3k, 4.56M, 1.2G."""
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= scale:
      v = x / scale
      return f"{v:.3g}{suffix}" if abs(v) < 100 else f"{v:.0f}{suffix}"
  return f"{x:.0f}"
