"""Identifiability metrics against hand-computed values and brute-force references."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcred.evaluation import identify_metrics as im

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
