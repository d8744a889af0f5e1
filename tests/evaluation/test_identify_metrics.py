"""Identifiability metrics against hand-computed values and brute-force references."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcred.evaluation import identify_metrics as im
from tcred.evaluation import stats as tstats

# ------------------------------------------------------------------ brute-force references


def auroc_pairs(scores, labels):
  """P(score_pos > score_neg) + ½ P(tie), over every (positive, negative) pair."""
  pos = [s for s, l in zip(scores, labels) if l]
  neg = [s for s, l in zip(scores, labels) if not l]
  if not pos or not neg:
    return math.nan
  total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
  return total / (len(pos) * len(neg))


def ranks_by_counting(x):
  """Average rank of x_i = #{x_j < x_i} + (#{x_j == x_i} + 1) / 2."""
  return np.array([sum(v < xi for v in x) + (sum(v == xi for v in x) + 1) / 2 for xi in x], float)


def spearman_ref(x, y):
  rx, ry = ranks_by_counting(x), ranks_by_counting(y)
  rx, ry = rx - rx.mean(), ry - ry.mean()
  den = math.sqrt((rx * rx).sum() * (ry * ry).sum())
  return math.nan if den == 0 else float((rx * ry).sum() / den)


def precision_enumerated(scores, labels, frac):
  """Mean precision over every top-k set consistent with the ordering (all tie-breaks equally likely)."""
  n = len(scores)
  k = math.ceil(round(frac * n, 9))
  kth = sorted(scores, reverse=True)[k - 1]
  above = [i for i in range(n) if scores[i] > kth]
  tied = [i for i in range(n) if scores[i] == kth]
  precisions = [(sum(labels[i] for i in above) + sum(labels[i] for i in extra)) / k
                for extra in itertools.combinations(tied, k - len(above))]
  return float(np.mean(precisions))


# ------------------------------------------------------------------ hand-computed values


def test_average_ranks_by_hand():
  np.testing.assert_allclose(im.average_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
  np.testing.assert_allclose(im.average_ranks([1, 1, 1]), [2, 2, 2])
  assert im.average_ranks([]).shape == (0,)


def test_auroc_by_hand():
  # Positives score 3 and 1, negatives 2 and 1: pairs (3>2), (3>1), (1<2), (1=1 -> ½) -> 2.5 / 4.
  assert im.auroc([3, 1, 2, 1], [True, True, False, False]) == pytest.approx(0.625)
  assert im.auroc([1, 2, 3], [False, False, True]) == 1.0
  assert im.auroc([1, 2, 3], [True, False, False]) == 0.0
  assert im.auroc([5, 5, 5, 5], [True, False, True, False]) == 0.5  # constant signal: chance
  assert math.isnan(im.auroc([1, 2], [True, True]))
  assert math.isnan(im.auroc([1, 2], [False, False]))


def test_spearman_by_hand():
  assert im.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert im.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  # x ranks [1, 2.5, 2.5, 4], y ranks [1, 2, 3, 4]; centred: [-1.5, 0, 0, 1.5], [-1.5, -.5, .5, 1.5]
  # -> 4.5 / sqrt(4.5 · 5) = 0.9487
  assert im.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
  assert math.isnan(im.spearman([1, 1, 1], [1, 2, 3]))
  assert math.isnan(im.spearman([1], [2]))


def test_top_fraction_precision_by_hand():
  scores = [0.9, 0.8, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
  labels = [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
  assert im.top_fraction_precision(scores, labels, 0.2) == pytest.approx(0.5)  # top 2: {0.9, 0.8}
  # top 3: 0.9, 0.8 and one of three tied 0.1 (one of them positive): (1 + 1/3) / 3
  assert im.top_fraction_precision(scores, labels, 0.3) == pytest.approx((1 + 1 / 3) / 3)
  # a constant signal scores exactly the base rate
  assert im.top_fraction_precision([0.0] * 10, labels, 0.2) == pytest.approx(0.2)
  assert im.top_fraction_precision([1.0], [True], 0.2) == 1.0  # k = ceil(0.2) = 1


def test_jaccard_and_chance():
  a = np.array([1, 1, 0, 0, 1], bool)
  b = np.array([0, 1, 1, 0, 1], bool)
  assert im.jaccard(a, b) == pytest.approx(2 / 4)
  assert math.isnan(im.jaccard(np.zeros(3, bool), np.zeros(3, bool)))
  # sizes 2 and 2 of 4: E∩ = 1, union 3 -> 1/3
  assert im.chance_jaccard(2, 2, 4) == pytest.approx(1 / 3)
  rng = np.random.default_rng(0)
  sims = []
  for _ in range(4000):
    x = np.zeros(100, bool)
    y = np.zeros(100, bool)
    x[rng.choice(100, 20, replace=False)] = True
    y[rng.choice(100, 20, replace=False)] = True
    sims.append(im.jaccard(x, y))
  assert im.chance_jaccard(20, 20, 100) == pytest.approx(np.mean(sims), rel=0.05)


def test_cluster_bootstrap_ci():
  rng = np.random.default_rng(1)
  x = rng.normal(size=200)
  clusters = [np.arange(i, i + 10) for i in range(0, 200, 10)]
  lo, hi = im.cluster_bootstrap_ci(lambda idx: float(x[idx].mean()), clusters, reps=300,
                                   rng=np.random.default_rng(0))
  assert lo < x.mean() < hi and hi - lo < 1.0
  # deterministic given the generator
  again = im.cluster_bootstrap_ci(lambda idx: float(x[idx].mean()), clusters, reps=300,
                                  rng=np.random.default_rng(0))
  assert again == (lo, hi)
  nan = im.cluster_bootstrap_ci(lambda idx: math.nan, clusters, reps=10, rng=np.random.default_rng(0))
  assert all(math.isnan(v) for v in nan)


def test_shape_and_argument_checks():
  with pytest.raises(ValueError):
    im.auroc([[1, 2]], [[True, False]])
  with pytest.raises(ValueError):
    im.spearman([1, 2], [1, 2, 3])
  with pytest.raises(ValueError):
    im.top_fraction_precision([1, 2], [True, False], 0.0)
  with pytest.raises(ValueError):
    im.average_ranks([1.0, math.nan])


# ------------------------------------------------------------------ against the brute-force references

values = st.lists(st.integers(0, 4), min_size=2, max_size=14)  # small integers: many ties


@settings(max_examples=60, deadline=None)
@given(values, st.data())
def test_auroc_matches_pairwise(scores, data):
  labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
  got, want = im.auroc(scores, labels), auroc_pairs(scores, labels)
  assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
  if math.isfinite(got):
    assert 0.0 <= got <= 1.0


@settings(max_examples=60, deadline=None)
@given(values, st.data())
def test_spearman_and_ranks_match_counting(x, data):
  y = data.draw(st.lists(st.integers(0, 4), min_size=len(x), max_size=len(x)))
  np.testing.assert_allclose(im.average_ranks(x), ranks_by_counting(x))
  got, want = im.spearman(x, y), spearman_ref(x, y)
  assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_stratified_auroc_by_hand():
  # stratum 0: pos 3 vs neg 1 -> 1; stratum 1: pos 0 vs negs 2, 0 -> (0 + ½) / 2; pooled pairs: 1.5 / 3
  scores = [3, 1, 0, 2, 0]
  labels = [True, False, True, False, False]
  strata = [0, 0, 1, 1, 1]
  assert im.stratified_auroc(scores, labels, strata) == pytest.approx(1.5 / 3)
  # a function of the stratum alone is worth exactly 0.5
  assert im.stratified_auroc([-s for s in strata], labels, strata) == 0.5
  assert math.isnan(im.stratified_auroc([1, 2], [True, False], [0, 1]))


@settings(max_examples=60, deadline=None)
@given(values, st.data())
def test_stratified_auroc_matches_pairs_within_strata(scores, data):
  labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
  strata = data.draw(st.lists(st.integers(0, 2), min_size=len(scores), max_size=len(scores)))
  total = pairs = 0.0
  for i, j in itertools.product(range(len(scores)), repeat=2):
    if strata[i] == strata[j] and labels[i] and not labels[j]:
      total += 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
      pairs += 1
  got = im.stratified_auroc(scores, labels, strata)
  assert (math.isnan(got) and pairs == 0) or got == pytest.approx(total / pairs)


@settings(max_examples=60, deadline=None)
@given(values, st.data(), st.sampled_from([0.1, 0.2, 0.5, 1.0]))
def test_precision_matches_enumeration(scores, data, frac):
  labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
  assert im.top_fraction_precision(scores, labels, frac) == pytest.approx(
      precision_enumerated(scores, labels, frac))


def test_against_scipy_if_installed():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(3)
  x = rng.integers(0, 20, size=500).astype(float)
  y = x + rng.integers(0, 10, size=500)
  labels = y > 15
  assert im.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
  np.testing.assert_allclose(im.average_ranks(x), stats.rankdata(x))
  u = stats.mannwhitneyu(x[labels], x[~labels]).statistic
  assert im.auroc(x, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()))


# ------------------------------------------------------------------ controls: strata, p-conditioning, bases


def test_quantile_strata_by_hand():
  # deciles of 0..19: edges at 1.9, 3.8, ..., 17.1 -> two values per bin
  np.testing.assert_array_equal(im.quantile_strata(np.arange(20.0)), np.repeat(np.arange(10), 2))
  # heavily tied (p ≈ 1 for most tokens): equal values share a bin, fewer than ten bins
  s = im.quantile_strata([1.0] * 8 + [0.2, 0.5])
  assert len(set(s[:8])) == 1 and len(set(s)) < 10 and s[8] < s[9] <= s[0]


def test_stratified_ranks_match_scipy_within_each_stratum():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, size=200).astype(float)
  strata = rng.integers(0, 7, size=200) * 3 - 4
  ranks, inv = im.stratified_ranks(x, strata)
  for s in np.unique(strata):
    sel = strata == s
    np.testing.assert_allclose(ranks[sel], stats.rankdata(x[sel]))
    assert len(set(inv[sel])) == 1


def test_stratified_spearman_by_hand_and_against_scipy():
  # stratum 0 (4 tokens): ρ = 1; stratum 1 (2 tokens): ρ = −1; stratum 2: constant x, left out
  x = [1, 2, 3, 4, 1, 2, 5, 5]
  y = [1, 3, 5, 7, 2, 1, 0, 9]
  strata = [0, 0, 0, 0, 1, 1, 2, 2]
  assert im.stratified_spearman(x, y, strata) == pytest.approx((4 * 1 - 2 * 1) / 6)
  assert math.isnan(im.stratified_spearman([0, 1], [0, 1], [0, 1]))  # no stratum with two values
  # a function of the stratum alone carries no within-stratum information
  assert math.isnan(im.stratified_spearman(strata, y, strata))
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(1)
  x = rng.normal(size=300)
  strata = rng.integers(0, 6, size=300)
  y = x + strata + rng.normal(size=300)
  want = [(np.sum(strata == s), stats.spearmanr(x[strata == s], y[strata == s]).statistic) for s in range(6)]
  assert im.stratified_spearman(x, y, strata) == pytest.approx(sum(n * r for n, r in want) / 300)
  # pooled, the stratum's shift in y dilutes the correlation; within strata it does not
  assert im.spearman(x, y) < im.stratified_spearman(x, y, strata)


def test_stratified_top_precision_and_sets_by_hand():
  # stratum 0: scores 4, 3, 2, 1, 0 labels 1, 0, 0, 0, 0 -> top ceil(0.2·5) = 1 token, precision 1
  # stratum 1: scores 1, 1 (tied) labels 1, 0 -> top 1 of 2 tied: expected precision 0.5
  scores = [4, 3, 2, 1, 0, 1, 1]
  labels = [1, 0, 0, 0, 0, 1, 0]
  strata = [0, 0, 0, 0, 0, 1, 1]
  assert im.stratified_top_precision(scores, labels, strata, 0.2) == pytest.approx((1 * 1 + 1 * 0.5) / 2)
  np.testing.assert_array_equal(im.stratified_top_mask(scores, strata, 0.2), [1, 0, 0, 0, 0, 1, 1])  # ties kept
  # a signal that only knows the stratum: the strata-weighted base rate
  assert im.stratified_top_precision(strata, labels, strata, 1.0) == pytest.approx(2 / 7)
  # chance Jaccard within strata: E∩ = Σ a_s b_s / n_s
  a = np.array([1, 1, 0, 0, 1, 0], bool)
  b = np.array([1, 0, 0, 0, 0, 1], bool)
  st = [0, 0, 0, 0, 1, 1]
  inter = 2 * 1 / 4 + 1 * 1 / 2
  assert im.stratified_chance_jaccard(a, b, st) == pytest.approx(inter / (3 + 2 - inter))
  # one stratum: the pooled chance Jaccard
  assert im.stratified_chance_jaccard(a, b, [0] * 6) == pytest.approx(im.chance_jaccard(3, 2, 6))


@settings(max_examples=60, deadline=None)
@given(values, st.data(), st.sampled_from([0.1, 0.2, 0.5, 1.0]))
def test_stratified_top_precision_matches_per_stratum_enumeration(scores, data, frac):
  labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
  strata = np.array(data.draw(st.lists(st.integers(0, 2), min_size=len(scores), max_size=len(scores))))
  hits = chosen = 0.0
  for s in np.unique(strata):
    sel = np.flatnonzero(strata == s)
    k = math.ceil(round(frac * len(sel), 9))
    hits += k * precision_enumerated([scores[i] for i in sel], [labels[i] for i in sel], frac)
    chosen += k
  assert im.stratified_top_precision(scores, labels, strata, frac) == pytest.approx(hits / chosen)


def test_p_conditioned_controls_against_a_reference():
  """The bound row and the p-conditioned AUROC (`control_metrics`) against scipy's Mann–Whitney on a
  hand-made study where the answer is known: decisive tokens all have p ≤ 1 − δ."""
  stats = pytest.importorskip("scipy.stats")
  from tcred.evaluation.identify.metrics import bound_indicator, control_metrics

  rng = np.random.default_rng(2)
  n, delta = 400, 0.25
  p = np.where(rng.random(n) < 0.5, rng.uniform(0.9, 1.0, n), rng.uniform(0.05, 0.7, n))
  can = p <= 1 - delta
  decisive = can & (rng.random(n) < 0.4)
  surprisal = -np.log(p)
  bound = bound_indicator(np.log(p), delta)
  np.testing.assert_array_equal(bound, can.astype(float))
  # the bound row alone: AUROC = P(bound_pos > bound_neg) + ½ ties = (1 + share of negatives that can decide) / 2
  share = can[~decisive].mean()
  assert im.auroc(bound, decisive) == pytest.approx(1 - share + share / 2)
  position = rng.integers(0, 10, n)
  out = control_metrics(surprisal, decisive, decisive.astype(float), can, im.quantile_strata(p), position, 0.2)
  u = stats.mannwhitneyu(surprisal[can & decisive], surprisal[can & ~decisive]).statistic
  assert out["auroc_p_bound"] == pytest.approx(u / ((can & decisive).sum() * (can & ~decisive).sum()))
  # surprisal knows nothing about decisiveness beyond the bound here: near 0.5 among p ≤ 1 − δ
  assert abs(out["auroc_p_bound"] - 0.5) < 0.1 and im.auroc(surprisal, decisive) > 0.75
  assert out["spearman_p_bound"] == pytest.approx(stats.spearmanr(surprisal[can], decisive[can]).statistic)
  assert out["auroc_p_decile"] == pytest.approx(im.stratified_auroc(surprisal, decisive, im.quantile_strata(p)))
  assert im.violating_share(decisive, can) == 0.0
  assert im.violating_share([True, True, False, True], [True, False, False, False]) == pytest.approx(2 / 3)
  assert math.isnan(im.violating_share([False], [True]))


def test_two_level_cluster_bootstrap_draws_as_the_tables_do():
  bases = [[np.arange(0, 3), np.arange(3, 5)], [np.arange(5, 9)], [np.arange(9, 10), np.arange(10, 12),
                                                                   np.arange(12, 15)]]
  leaves, tree = im.cluster_tree(bases)
  assert tree == [[0, 1], [2], [3, 4, 5]] and [len(x) for x in leaves] == [3, 2, 4, 1, 2, 3]
  counts = tstats.cluster_draws(tree, reps=50, rng=np.random.default_rng(4))
  got = list(im.cluster_replicates(bases, reps=50, rng=np.random.default_rng(4)))
  for c, idx in zip(counts, got):
    # each prompt's tokens appear exactly as often as the tables' bootstrap drew that prompt
    np.testing.assert_array_equal(np.bincount(idx, minlength=15), np.repeat(c, [len(x) for x in leaves]))
  # one base: exactly the one-level replicate
  one = im.cluster_replicates([bases[0]], reps=5, rng=np.random.default_rng(7))
  flat = im.cluster_replicates(bases[0], reps=5, rng=np.random.default_rng(7))
  for a, b in zip(one, flat):
    np.testing.assert_array_equal(a, b)
  # Base variation: each base's prompts share a base effect; resampling prompts alone ignores it.
  rng = np.random.default_rng(3)
  values, clusters, flat = [], [], []
  start = 0
  for b in range(3):
    effect = 2.0 * b
    base = []
    for _ in range(8):
      v = effect + rng.normal(scale=0.1, size=5)
      base.append(np.arange(start, start + 5))
      values.append(v)
      start += 5
    clusters.append(base)
    flat += base
  x = np.concatenate(values)
  mean = lambda idx: float(x[idx].mean())
  lo2, hi2 = im.cluster_bootstrap_ci(mean, clusters, reps=400, rng=np.random.default_rng(0))
  lo1, hi1 = im.cluster_bootstrap_ci(mean, flat, reps=400, rng=np.random.default_rng(0))
  assert hi2 - lo2 > 2 * (hi1 - lo1)  # expected ratio sqrt(24 prompts / 3 bases) ≈ 2.8
  # the two-level replicate mean's spread: the base means' bootstrap spread, sd(base means)·sqrt((B−1)/B)/sqrt(B)
  reps = np.array([mean(idx) for idx in im.cluster_replicates(clusters, reps=2000, rng=np.random.default_rng(0))])
  base_means = np.array([x[np.concatenate(c)].mean() for c in clusters])
  assert reps.std() == pytest.approx(base_means.std() / math.sqrt(3), rel=0.1)
