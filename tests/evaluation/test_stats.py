"""Student-t intervals and budget-to-target, against hand-computed and tabulated values."""

import math

import numpy as np
import pytest

from tcred.evaluation import stats


@pytest.mark.parametrize("df,expected", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042),
                                         (1_000_000, 1.960)])
def test_t_quantile_matches_the_table(df, expected):
  assert stats.student_t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_other_levels_and_symmetry():
  assert stats.student_t_quantile(0.95, 5) == pytest.approx(2.015, abs=5e-4)
  assert stats.student_t_quantile(0.995, 3) == pytest.approx(5.841, abs=5e-4)
  assert stats.student_t_quantile(0.5, 7) == 0.0
  assert stats.student_t_quantile(0.025, 4) == pytest.approx(-stats.student_t_quantile(0.975, 4))
  for t in (-3.0, -0.5, 0.0, 1.2, 8.0):
    assert stats.student_t_cdf(stats.student_t_quantile(stats.student_t_cdf(t, 3), 3), 3) == pytest.approx(
        stats.student_t_cdf(t, 3))
  assert stats.student_t_cdf(0.0, 2) == 0.5
  # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/π.
  assert stats.student_t_cdf(2.0, 1) == pytest.approx(0.5 + math.atan(2.0) / math.pi, abs=1e-12)


def test_t_quantile_against_scipy():
  st = pytest.importorskip("scipy.stats")
  for df in (1, 3, 9, 57, 400):
    for p in (0.6, 0.9, 0.975, 0.999):
      assert stats.student_t_quantile(p, df) == pytest.approx(st.t.ppf(p, df), rel=1e-9)


@pytest.mark.parametrize("p,df", [(0.0, 3), (1.0, 3), (0.9, 0), (0.9, -1)])
def test_t_quantile_rejects_bad_arguments(p, df):
  with pytest.raises(ValueError):
    stats.student_t_quantile(p, df)


def test_mean_ci_by_hand():
  mean, hw = stats.mean_ci([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert hw == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)  # s = 1
  mean, hw = stats.mean_ci([0.2, 0.2, 0.2, 0.2])
  assert mean == pytest.approx(0.2) and hw == pytest.approx(0.0, abs=1e-15)
  mean, hw = stats.mean_ci([1.0, 3.0], confidence=0.9)
  assert mean == 2.0 and hw == pytest.approx(6.313752, rel=1e-6)  # t(0.95, 1) · (√2 / √2)


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


def test_samples_to_reach():
  x, y = [0, 100, 200, 300], [0.10, 0.18, 0.25, 0.22]
  assert stats.samples_to_reach(x, y, 0.18) == 100.0  # reaching means >=
  assert stats.samples_to_reach(x, y, 0.2) == 200.0  # the first crossing, even if it drops again
  assert stats.samples_to_reach(x, y, 0.05) == 0.0
  assert stats.samples_to_reach(x, y, 0.3) is None
  assert stats.samples_to_reach(np.array([]), np.array([]), 0.1) is None
  with pytest.raises(ValueError, match="same length"):
    stats.samples_to_reach([0, 1], [0.1], 0.1)
