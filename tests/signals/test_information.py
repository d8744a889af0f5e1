"""Tests of tcred.signals.information: HSIC MI (arXiv 2506.02867) and MI peaks."""

import jax

jax.config.update("jax_enable_x64", False)

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.signals.information import (default_sigma, hsic_answer_factor, hsic_mi,
                                       hsic_mi_from_factor, mi_peaks)
from tcred.testing.numpy_refs import hsic_factor as ref_factor, hsic_mi as ref_hsic_mi, mi_peaks as ref_mi_peaks

PROPERTY = hypothesis.settings(max_examples=25, deadline=None)

# float32 vs the float64 reference: the problem's condition number is ~1/eps.
PAPER_EPS, PAPER_RTOL = 1e-5, 5e-3
LOOSE_EPS, LOOSE_RTOL = 1e-3, 1e-4

_T, _D = 5, 32


@pytest.fixture(params=["nojit", "jit"])
def variant(request):
  return request.param


def _maybe_jit(variant, fn):
  return jax.jit(fn) if variant == "jit" else fn


def _hsic_mi_traced(h, h_ans, sigma, eps):
  return hsic_mi(h, h_ans, sigma=sigma, eps=eps)


# sigma and eps are traced arguments here, so one compilation per shape serves
# every test.
_HSIC = {"nojit": _hsic_mi_traced, "jit": jax.jit(_hsic_mi_traced)}


# ------------------------------------------------------------ NumPy references


def _hidden(seed, t=_T, d=_D, scale=1.0):
  rng = np.random.default_rng(seed)
  h = (rng.normal(size=(t, d)) * scale).astype(np.float32)
  h_ans = (rng.normal(size=d) * scale).astype(np.float32)
  h[0] = h_ans  # token 0 carries exactly the answer's state
  return h, h_ans


# ------------------------------------------------------------------- HSIC MI


@pytest.mark.parametrize("eps, rtol", [(PAPER_EPS, PAPER_RTOL), (LOOSE_EPS, LOOSE_RTOL)])
def test_hsic_matches_numpy_inverse(variant, eps, rtol):
  h, h_ans = _hidden(0)
  np.testing.assert_allclose(_HSIC[variant](h, h_ans, 1.0, eps),
                             ref_hsic_mi(h, h_ans, 1.0, eps), rtol=rtol)


def test_hsic_large_sigma_default_bandwidth(variant):
  # σ = default_sigma(32) ≈ 4.4 on coordinates of scale 3: the kernel is close
  # to all ones, the regime where forming K = exp(·) naively loses the signal.
  h, h_ans = _hidden(1, scale=3.0)
  sigma = default_sigma(_D)
  np.testing.assert_allclose(_HSIC[variant](h, h_ans, sigma, PAPER_EPS),
                             ref_hsic_mi(h, h_ans, sigma, PAPER_EPS), rtol=PAPER_RTOL)


def test_answer_factor_and_from_factor():
  # Un-jitted here; the jitted composition is `hsic_mi` in the tests above.
  h, h_ans = _hidden(2)
  r_y = hsic_answer_factor(h_ans, sigma=1.0, eps=LOOSE_EPS)
  np.testing.assert_allclose(r_y, ref_factor(h_ans, 1.0, LOOSE_EPS), rtol=1e-4, atol=1e-5)
  direct = _HSIC["jit"](h, h_ans, 1.0, LOOSE_EPS)
  np.testing.assert_allclose(hsic_mi_from_factor(h, r_y, sigma=1.0, eps=LOOSE_EPS), direct,
                             rtol=1e-5)
  # The token loop in chunks (with a zero-padded last chunk) gives the same numbers.
  chunked = hsic_mi_from_factor(h, r_y, sigma=1.0, eps=LOOSE_EPS, batch_size=2)
  np.testing.assert_allclose(chunked, direct, rtol=1e-5)


def test_answer_state_has_the_largest_mi():
  # Token 0 equals h_ans: MI(h_ans, h_ans) beats unrelated random vectors.
  for seed in range(3):
    h, h_ans = _hidden(10 + seed)
    mi = np.asarray(_HSIC["jit"](h, h_ans, 1.0, PAPER_EPS))
    assert np.all(np.isfinite(mi))
    assert mi[0] > mi[1:].max()


def test_hsic_vmap_over_group():
  rng = np.random.default_rng(3)
  h = rng.normal(size=(2, _T, _D)).astype(np.float32)  # [G, T, D]
  h_ans = rng.normal(size=_D).astype(np.float32)
  fn = jax.jit(jax.vmap(_hsic_mi_traced, in_axes=(0, None, None, None)))
  got = np.asarray(fn(h, h_ans, 1.0, LOOSE_EPS))
  for g in range(2):
    np.testing.assert_allclose(got[g], ref_hsic_mi(h[g], h_ans, 1.0, LOOSE_EPS),
                               rtol=LOOSE_RTOL)


def test_hsic_constant_vector_gives_zero():
  # A constant (e.g. zero-padded) vector has K = 11ᵀ, K̃ = 0, so MI = 0.
  h, h_ans = _hidden(4)
  h[1] = 0.0
  h[2] = 4.0
  mi = np.asarray(_HSIC["jit"](h, h_ans, 1.0, PAPER_EPS))
  np.testing.assert_allclose(mi[1:3], [0.0, 0.0], atol=1e-6)


def test_default_sigma():
  assert default_sigma(4096) == pytest.approx(50.0)
  assert default_sigma(1024) == pytest.approx(25.0)
  assert default_sigma(128) == pytest.approx(50.0 * math.sqrt(128 / 4096))
  with pytest.raises(ValueError):
    default_sigma(0)


def test_hsic_rejects_bad_arguments():
  with pytest.raises(ValueError):
    hsic_mi(jnp.zeros((3, 4)), jnp.zeros(5), sigma=1.0)
  with pytest.raises(ValueError):
    hsic_mi(jnp.zeros((3, 4)), jnp.zeros(4), sigma=0.0)
  with pytest.raises(ValueError):
    hsic_answer_factor(jnp.zeros((2, 4)), sigma=1.0)


# --------------------------------------------------------------------- peaks

_L = 12
_peaks = {"nojit": mi_peaks, "jit": jax.jit(mi_peaks)}


def test_mi_peaks_hand_computed(variant):
  # Valid values 1, 2, 3, 4, 100 (padding 50 at the end is ignored):
  # Q1 = 2, Q3 = 4, IQR = 2, fence = 4 + 1.5 * 2 = 7 -> only 100 is a peak.
  mi = jnp.array([1.0, 2.0, 3.0, 4.0, 100.0, 50.0])
  mask = jnp.array([True, True, True, True, True, False])
  np.testing.assert_array_equal(_peaks[variant](mi, mask),
                                [False, False, False, False, True, False])
  # Linear interpolation: valid 0, 1, 2, 10 -> Q1 = 0.75, Q3 = 4, IQR = 3.25,
  # fence = 8.875 < 10 (tau = 1.5) but > 10 with tau = 2 (fence = 10.5).
  mi = jnp.array([0.0, 1.0, 2.0, 10.0])
  m = jnp.ones(4, bool)
  np.testing.assert_array_equal(_peaks[variant](mi, m), [False, False, False, True])
  np.testing.assert_array_equal(
      _maybe_jit(variant, functools.partial(mi_peaks, tau=2.0))(mi, m), [False] * 4)


def test_mi_peaks_edge_cases(variant):
  fn = _peaks[variant]
  mi = jnp.arange(_L, dtype=jnp.float32)
  assert not np.any(fn(mi, jnp.zeros(_L, bool)))  # no valid token
  one = jnp.zeros(_L, bool).at[3].set(True)
  assert not np.any(fn(mi, one))  # one valid token: IQR 0, nothing above the fence
  assert not np.any(fn(jnp.full(_L, 2.0), jnp.ones(_L, bool)))  # all equal
  nan_pad = jnp.where(jnp.arange(_L) < 6, mi, jnp.nan)
  assert not np.any(np.asarray(fn(nan_pad, jnp.arange(_L) < 6))[6:])


def test_mi_peaks_matches_reference_and_vmap(variant):
  rng = np.random.default_rng(5)
  mi = rng.standard_cauchy(size=(6, _L)).astype(np.float32)  # heavy tails: peaks
  mask = rng.random((6, _L)) < 0.8
  want = np.stack([ref_mi_peaks(mi[g], mask[g], 1.5) for g in range(6)])
  assert want.any()
  for g in range(2):
    np.testing.assert_array_equal(_peaks[variant](mi[g], mask[g]), want[g])
  np.testing.assert_array_equal(jax.jit(jax.vmap(mi_peaks))(mi, mask), want)


# ---------------------------------------------------------------- properties


@st.composite
def curves(draw):
  mi = draw(st.lists(st.sampled_from([0.0, 1.0, 5.0]) | st.floats(-50, 50, width=32),
                     min_size=_L, max_size=_L))
  mask = draw(st.lists(st.booleans(), min_size=_L, max_size=_L))
  perm = np.array(draw(st.permutations(range(_L))))
  return np.array(mi, np.float32), np.array(mask), perm


@PROPERTY
@hypothesis.given(curves())
def test_mi_peaks_properties(case):
  mi, mask, perm = case
  out = np.asarray(_peaks["jit"](mi, mask))
  np.testing.assert_array_equal(out, ref_mi_peaks(mi, mask, 1.5))
  assert not np.any(out & ~mask)  # never on padding
  np.testing.assert_array_equal(np.asarray(_peaks["jit"](mi[perm], mask[perm])), out[perm])


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(st.integers(0, 2**31 - 1), st.floats(0.1, 30.0))
def test_hsic_properties(seed, scale):
  rng = np.random.default_rng(seed)
  h = (rng.normal(size=(_T, _D)) * scale).astype(np.float32)
  h_ans = (rng.normal(size=_D) * scale).astype(np.float32)
  fn = _HSIC["jit"]
  mi = np.asarray(fn(h, h_ans, 1.0, LOOSE_EPS))
  assert np.all(np.isfinite(mi))
  # Permuting tokens permutes MI.
  np.testing.assert_allclose(np.asarray(fn(h[::-1], h_ans, 1.0, LOOSE_EPS)), mi[::-1],
                             rtol=1e-5, atol=1e-6)
  # MI is symmetric in its two arguments: tr(R_x R_y) = tr(R_y R_x).
  swapped = np.asarray(fn(np.tile(h_ans, (_T, 1)), h[0], 1.0, LOOSE_EPS))
  np.testing.assert_allclose(swapped[0], mi[0], rtol=1e-3, atol=1e-5)
