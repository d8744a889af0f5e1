"""The table statistics against hand-computed values and SciPy / NumPy references."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from tcred.evaluation import stats


def test_mean_ci_by_hand():
  mean, hw = stats.mean_ci([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert hw == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)  # s = 1, t(0.975, 2) from the table
  mean, hw = stats.mean_ci([0.2, 0.2, 0.2, 0.2])
  assert mean == pytest.approx(0.2) and hw == pytest.approx(0.0, abs=1e-15)
  mean, hw = stats.mean_ci([1.0, 3.0], confidence=0.9)
  assert mean == 2.0 and hw == pytest.approx(6.313752, rel=1e-6)  # t(0.95, 1) · (√2 / √2)


@pytest.mark.parametrize("df,expected", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_mean_ci_uses_the_tabulated_t_quantile(df, expected):
  x = np.array([0.0, 1.0] + [0.5] * (df - 1))  # n = df + 1 values
  _, hw = stats.mean_ci(x)
  assert hw / (x.std(ddof=1) / math.sqrt(x.size)) == pytest.approx(expected, abs=5e-4)


def test_mean_ci_single_value_has_nan_half_width():
  mean, hw = stats.mean_ci([0.25])
  assert mean == 0.25 and math.isnan(hw)
  assert stats.format_mean_ci(mean, hw, 2) == "0.25 (n=1)"


@pytest.mark.parametrize("values,kw", [([], {}), ([1.0, float("nan")], {}), ([1.0, 2.0], {"confidence": 1.0})])
def test_mean_ci_rejects_bad_input(values, kw):
  with pytest.raises(ValueError):
    stats.mean_ci(values, **kw)


def test_format():
  assert stats.format_mean_ci(21.345, 2.04, 1) == "21.3 ± 2.0"
  assert stats.format_mean_ci(0.5, 0.125, 3) == "0.500 ± 0.125"
  assert [stats.format_count(x) for x in (0, 950, 12_345, 4_560_000, 123_456_789)] == [
      "0", "950", "12.3k", "4.56M", "123M"]
  assert stats.format_interval(stats.Interval(2.0, 1.25, 3.5)) == "2.0 [1.2, 3.5]"
  assert stats.format_interval(stats.Interval(2.0, math.nan, math.nan)) == "2.0 (n=1)"
  assert stats.format_interval(stats.Interval(1500.0, 1000.0, 2000.0), fmt=stats.format_count) == "1.5k [1k, 2k]"


def test_samples_to_reach():
  x, y = [0, 100, 200, 300], [0.10, 0.18, 0.25, 0.22]
  assert stats.samples_to_reach(x, y, 0.18) == 100.0  # reaching means >=
  assert stats.samples_to_reach(x, y, 0.2) == 200.0  # the first crossing, even if it drops again
  assert stats.samples_to_reach(x, y, 0.05) == 0.0
  assert stats.samples_to_reach(x, y, 0.3) is None
  assert stats.samples_to_reach(np.array([]), np.array([]), 0.1) is None
  with pytest.raises(ValueError, match="same length"):
    stats.samples_to_reach([0, 1], [0.1], 0.1)


def test_curve_area_by_hand():
  x, y = [0, 10, 20], [0.2, 0.4, 0.4]
  assert stats.curve_area(x, y, 20) == pytest.approx((3.0 + 4.0) / 20)  # trapezoids 10·0.3 + 10·0.4
  assert stats.curve_area(x, y, 15) == pytest.approx((3.0 + 2.0) / 15)  # cut inside the second segment
  assert stats.curve_area(x, y, 5) == pytest.approx(0.25)  # (0.2 + 0.3) / 2 over [0, 5]
  assert stats.curve_area([0, 4], [0.5, 0.5], 4) == 0.5
  for bad in (0, 21, -1):
    with pytest.raises(ValueError, match="x_max"):
      stats.curve_area(x, y, bad)
  with pytest.raises(ValueError, match="increasing from 0"):
    stats.curve_area([1, 2], [0, 0], 2)


# ---------------------------------------------------------------------------------------------- bootstrap


def test_cluster_tree_validation():
  assert stats.cluster_leaves([[0, 3], [1, [4, 2]]]) == [0, 3, 1, 4, 2]
  for bad in ([], [[]], [0, 0], [1, 2], 3, [[0], "1"]):
    with pytest.raises(ValueError):
      stats.cluster_draws(bad, reps=2, rng=np.random.default_rng(0))
  with pytest.raises(ValueError, match="reps"):
    stats.cluster_draws([0, 1], reps=0, rng=np.random.default_rng(0))


def test_base_tree_and_unit_means():
  assert stats.base_tree([0, 1, 2, 3, 4], 3) == [[0, 3], [1, 4], [2]]
  assert stats.base_tree([0, 1, 2], 1) == [0, 1, 2]
  assert stats.base_tree([2, 5, 7], 3) == [[2], [0, 1]]  # bases in order: seed 7 is base 1; seeds 2, 5 base 2
  np.testing.assert_allclose(stats.unit_means([1.0, 2.0, 3.0, 5.0, 4.0], [[0, 3], [1, 4], [2]]), [3.0, 3.0, 3.0])
  np.testing.assert_allclose(stats.unit_means([1.0, 2.0], [0, 1]), [1.0, 2.0])


def test_flat_draws_are_multinomial():
  c = stats.cluster_draws([0, 1, 2, 3], reps=40_000, rng=np.random.default_rng(1))
  assert c.shape == (40_000, 4) and np.all(c.sum(1) == 4)
  np.testing.assert_allclose(c.mean(0), 1.0, atol=0.02)
  np.testing.assert_allclose(c.var(0), 4 * 0.25 * 0.75, atol=0.03)  # Binomial(4, 1/4)


def _two_stage_exact(tree):
  """Exact distribution {counts: probability} of the two-stage bootstrap of a two-level tree, by
  enumerating every outer draw and every inner draw."""
  n = len(stats.cluster_leaves(tree))
  out = {}
  for outer in itertools.product(range(len(tree)), repeat=len(tree)):
    inner_choices = [itertools.product(tree[b], repeat=len(tree[b])) for b in outer]
    for inner in itertools.product(*[list(c) for c in inner_choices]):
      p = (1 / len(tree)) ** len(tree)
      counts = [0] * n
      for b, picks in zip(outer, inner):
        p *= (1 / len(tree[b])) ** len(tree[b])
        for leaf in picks:
          counts[leaf] += 1
      out[tuple(counts)] = out.get(tuple(counts), 0.0) + p
  return out


def test_two_stage_draws_match_the_exact_distribution():
  tree = [[0, 2], [1]]  # base 0 holds seeds 0 and 2, base 1 seed 1
  exact = _two_stage_exact(tree)
  assert sum(exact.values()) == pytest.approx(1.0)
  reps = 60_000
  c = stats.cluster_draws(tree, reps=reps, rng=np.random.default_rng(2))
  keys, freq = np.unique(c, axis=0, return_counts=True)
  empirical = {tuple(int(v) for v in k): f / reps for k, f in zip(keys, freq)}
  assert set(empirical) <= set(exact)
  for k, p in exact.items():
    assert empirical.get(k, 0.0) == pytest.approx(p, abs=0.01), k
  # e.g. base 1 drawn twice (p = 1/4): counts (0, 2, 0).
  assert exact[(0, 2, 0)] == pytest.approx(0.25)


def _loop_reference(values, tree, reps, rng):
  """A plain per-replicate loop of the two-stage bootstrap of the mean."""
  out = []
  for _ in range(reps):
    picked = []
    for b in rng.integers(0, len(tree), len(tree)):
      picked += [values[tree[b][i]] for i in rng.integers(0, len(tree[b]), len(tree[b]))]
    out.append(np.mean(picked))
  return np.quantile(out, [0.025, 0.975])


def test_two_stage_interval_matches_a_loop_reference():
  values = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3, 0.05])
  tree = [[0, 3, 6], [1, 4], [2, 5]]
  iv = stats.cluster_bootstrap(stats.weighted_mean(values), tree, reps=20_000, rng=np.random.default_rng(3))
  assert iv.estimate == pytest.approx(values.mean())
  ref = _loop_reference(values, tree, 10_000, np.random.default_rng(4))
  assert iv.low == pytest.approx(ref[0], abs=0.02) and iv.high == pytest.approx(ref[1], abs=0.02)


def test_flat_paired_bootstrap_matches_scipy():
  rng = np.random.default_rng(5)
  method, grpo = rng.normal(0.4, 0.1, 8), rng.normal(0.35, 0.1, 8)
  tree = list(range(8))
  diff = stats.cluster_bootstrap(stats.weighted_mean(method - grpo), tree, reps=40_000, rng=np.random.default_rng(6))
  ref = st.bootstrap((method, grpo), lambda m, g, axis: np.mean(m - g, axis=axis), paired=True, vectorized=True,
                     n_resamples=40_000, method="percentile", rng=np.random.default_rng(7)).confidence_interval
  sd = np.std(method - grpo)
  assert diff.low == pytest.approx(ref.low, abs=0.03 * sd) and diff.high == pytest.approx(ref.high, abs=0.03 * sd)
  ratio = stats.cluster_bootstrap(stats.ratio_of_means(method, grpo), tree, reps=40_000,
                                  rng=np.random.default_rng(6))
  ref = st.bootstrap((method, grpo), lambda m, g, axis: np.mean(m, axis=axis) / np.mean(g, axis=axis),
                     paired=True, vectorized=True, n_resamples=40_000, method="percentile",
                     rng=np.random.default_rng(7)).confidence_interval
  assert ratio.estimate == pytest.approx(method.mean() / grpo.mean())
  assert ratio.low == pytest.approx(ref.low, abs=0.01) and ratio.high == pytest.approx(ref.high, abs=0.01)


def test_credit_score_interval_by_hand():
  grpo = np.array([0.30, 0.20, 0.25])
  method = grpo + np.array([0.01, 0.02, 0.03])
  oracle = grpo + np.array([0.02, 0.04, 0.06])  # the method's gain is half the oracle's in every seed
  iv = stats.cluster_bootstrap(stats.ratio_of_means(method - grpo, oracle - grpo), [0, 1, 2], reps=500)
  assert iv.estimate == pytest.approx(0.5) and iv.low == pytest.approx(0.5) and iv.high == pytest.approx(0.5)
  oracle = grpo + np.array([0.04, 0.04, 0.04])  # score = mean gain 0.02 / 0.04; replicates vary
  iv = stats.cluster_bootstrap(stats.ratio_of_means(method - grpo, oracle - grpo), [0, 1, 2], reps=20_000)
  assert iv.estimate == pytest.approx(0.5)
  # Replicate values are (mean of three draws from {1, 2, 3}) / 4: quantiles 1/4 and 3/4 (P(all 1) = 1/27).
  assert iv.low == pytest.approx(0.25) and iv.high == pytest.approx(0.75)
  # A replicate whose denominator vanishes is nan; most are: the interval is undefined.
  iv = stats.cluster_bootstrap(stats.ratio_of_means(method - grpo, np.array([1.0, -1.0, 0.0])), [0, 1, 2], reps=200)
  assert math.isnan(iv.estimate)


def test_ratio_of_means_with_budgets_never_reached():
  """An infinite denominator (the baseline never reached the level) gives 0 over a finite numerator and nan
  over an infinite one; a leaf drawn with weight 0 counts for nothing (0 · inf is not nan here)."""
  num, den = np.array([1.0, 2.0, np.inf]), np.array([2.0, np.inf, 4.0])
  stat = stats.ratio_of_means(num, den)
  w = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
  np.testing.assert_array_equal(stat(w), [0.5, 0.0, np.nan, np.inf, 0.5])


def test_cluster_bootstrap_edge_cases():
  iv = stats.cluster_bootstrap(stats.weighted_mean([0.3]), [0])
  assert iv.estimate == 0.3 and math.isnan(iv.low) and math.isnan(iv.high)
  draws = stats.cluster_draws([0, 1], reps=10, rng=np.random.default_rng(0))
  iv = stats.cluster_bootstrap(stats.weighted_mean([1.0, 1.0]), [0, 1], draws=draws)
  assert iv == (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="draws"):
    stats.cluster_bootstrap(stats.weighted_mean([1.0, 1.0, 1.0]), [0, 1, 2], draws=draws)
  with pytest.raises(ValueError, match=r"\[R\] values"):
    stats.cluster_bootstrap(lambda w: w, [0, 1], reps=5)


def test_pooled_statistic_resamples_prompts_within_bases():
  """identify's use: tokens pooled over prompts (leaves), prompts within bases; the pooled token mean
  of a replicate is Σ_l w_l (token sum of l) / Σ_l w_l (token count of l)."""
  rng = np.random.default_rng(10)
  tokens = [np.arange(i * 10, i * 10 + n) for i, n in enumerate((3, 5, 2, 4))]  # 4 prompts' token positions
  value = rng.normal(size=40)
  tree = [[0, 1], [2, 3]]
  draws = stats.cluster_draws(tree, reps=300, rng=rng)
  pooled = stats.cluster_bootstrap(stats.pooled_statistic(lambda idx: value[idx].mean(), tokens), tree, draws=draws)
  sums, counts = np.array([value[t].sum() for t in tokens]), np.array([t.size for t in tokens])
  direct = stats.cluster_bootstrap(lambda w: (w @ sums) / (w @ counts), tree, draws=draws)
  assert pooled.estimate == pytest.approx(value[np.concatenate(tokens)].mean())
  np.testing.assert_allclose(pooled, direct, rtol=1e-12)


def test_expand_indices_pools_a_replicate():
  leaves = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5])]
  np.testing.assert_array_equal(stats.expand_indices(leaves, np.array([2, 0, 1])), [0, 1, 0, 1, 3, 4, 5])
  assert stats.expand_indices(leaves, np.zeros(3, int)).size == 0


# ---------------------------------------------------------------------------------------------- tests


def test_paired_t_pvalue_by_hand():
  # d = [1, 2, 3]: t = 2 / (1/√3) = 2√3, df 2; p = 2·(1 − F(t)) with F(t; 2) = ½ + t / (2√(2 + t²)).
  t = 2 * math.sqrt(3)
  assert stats.paired_t_pvalue([1.0, 2.0, 3.0]) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
  assert math.isnan(stats.paired_t_pvalue([0.5]))
  assert stats.paired_t_pvalue([0.5, 0.5]) == 0.0 and math.isnan(stats.paired_t_pvalue([0.0, 0.0]))


def _holm_reference(p):
  """Holm's adjusted p-values written as loops: H_i (rank r) gets max over j ≤ r of (m − j) p_(j), capped at 1."""
  p = np.asarray(p)
  m = len(p)
  order = np.argsort(p, kind="stable")
  out = np.empty(m)
  for rank, i in enumerate(order):
    out[i] = min(1.0, max((m - j) * p[order[j]] for j in range(rank + 1)))
  return out


def test_holm_by_hand_and_against_a_reference():
  # sorted [0.005, 0.01, 0.03, 0.04] × [4, 3, 2, 1] = [0.02, 0.03, 0.06, 0.04]; running max [.02, .03, .06, .06]
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
  out = stats.holm([0.01, math.nan, 0.04])  # nan is not in the family (m = 2)
  assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
  assert stats.holm([]).size == 0
  rng = np.random.default_rng(8)
  for _ in range(200):
    p = rng.uniform(0, 0.2, rng.integers(1, 12))
    np.testing.assert_allclose(stats.holm(p), _holm_reference(p), rtol=1e-12)
    adjusted = stats.holm(p)
    for alpha in (0.01, 0.05):  # rejecting at adjusted < α equals the step-down procedure
      order = np.argsort(p)
      k = next((j for j in range(len(p)) if p[order[j]] > alpha / (len(p) - j)), len(p))
      assert set(np.flatnonzero(adjusted <= alpha)) == set(order[:k].tolist())


def test_minimum_detectable_effect_has_the_stated_power():
  d = np.array([0.02, -0.01, 0.03, 0.00, 0.01, 0.04])
  n, s = d.size, d.std(ddof=1)
  mde = stats.minimum_detectable_effect(d)
  # Textbook approximation (t_{1−α/2} + t_{power}) · s / √n, within a few percent at n = 6.
  approx = (st.t.ppf(0.975, n - 1) + st.t.ppf(0.8, n - 1)) * s / math.sqrt(n)
  assert mde == pytest.approx(approx, rel=0.05)
  # Simulated: a true effect of the MDE with spread s is detected by the t-test 80% of the time.
  rng = np.random.default_rng(9)
  x = rng.normal(mde, s, size=(100_000, n))
  t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
  assert np.mean(np.abs(t) > st.t.ppf(0.975, n - 1)) == pytest.approx(0.8, abs=0.006)
  # Large n: the normal-theory 2.80 · s / √n; scales with s; needs two units.
  big = rng.normal(0, 1, 5000)
  assert stats.minimum_detectable_effect(big) == pytest.approx(
      (st.norm.ppf(0.975) + st.norm.ppf(0.8)) * big.std(ddof=1) / math.sqrt(5000), rel=2e-3)
  assert stats.minimum_detectable_effect(3 * d) == pytest.approx(3 * mde)
  assert math.isnan(stats.minimum_detectable_effect([0.1]))
  with pytest.raises(ValueError, match="power"):
    stats.minimum_detectable_effect(d, power=1.0)
