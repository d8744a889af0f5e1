"""Tests of tcred.signals.entropy.forking_mask."""

import jax

jax.config.update("jax_enable_x64", False)

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.signals.entropy import forking_mask
from tcred.testing.numpy_refs import forking_mask as ref_forking_mask

PROPERTY = hypothesis.settings(max_examples=25, deadline=None)

_FNS = {}
for _rho in (0.0, 0.1, 0.2, 0.5, 1.0):
  for _keep in ("top", "bottom"):
    _FNS["nojit", _rho, _keep] = functools.partial(forking_mask, rho=_rho, keep=_keep)
    _FNS["jit", _rho, _keep] = jax.jit(_FNS["nojit", _rho, _keep])


@pytest.fixture(params=["nojit", "jit"])
def variant(request):
  return request.param


def _random_batch(rng, shape, p_valid=0.8):
  h = rng.random(shape).astype(np.float32) * 3.0  # continuous: no ties
  mask = rng.random(shape) < p_valid
  h = np.where(mask, h, np.nan).astype(np.float32)  # padding holds garbage
  return h, mask


def test_hand_computed(variant):
  h = jnp.arange(10.0)
  m = jnp.ones(10, bool)
  top = _FNS[variant, 0.2, "top"](h, m)
  bottom = _FNS[variant, 0.2, "bottom"](h, m)
  np.testing.assert_array_equal(top, np.arange(10) >= 8)  # ceil(0.2 * 10) = 2 kept
  np.testing.assert_array_equal(bottom, np.arange(10) < 8)  # the "bottom 80%"
  # 7 valid tokens (the last three are padding): k = ceil(0.2 * 7) = 2 -> 5.0, 6.0.
  m = jnp.arange(10) < 7
  np.testing.assert_array_equal(_FNS[variant, 0.2, "top"](h, m),
                                (np.arange(10) >= 5) & (np.arange(10) < 7))
  # rho = 0.5, 3 valid: k = ceil(1.5) = 2.
  h = jnp.array([0.3, 0.1, 0.2, 9.0])
  m = jnp.array([True, True, True, False])
  np.testing.assert_array_equal(_FNS[variant, 0.5, "top"](h, m),
                                [True, False, True, False])


# Few distinct shapes: every (shape, rho, keep) is one compilation.
_SHAPE = (2, 4, 16)  # [B, G, T]


@pytest.mark.parametrize("shape, rhos", [(_SHAPE, (0.1, 0.2, 0.5, 1.0)), ((37,), (0.2,))])
def test_matches_reference_and_counts(variant, shape, rhos):
  rng = np.random.default_rng(len(shape))
  h, mask = _random_batch(rng, shape)
  n = int(mask.sum())
  for rho in rhos:
    for keep in ("top", "bottom"):
      got = np.asarray(_FNS[variant, rho, keep](h, mask))
      np.testing.assert_array_equal(got, ref_forking_mask(h, mask, rho, keep))
    top = np.asarray(_FNS[variant, rho, "top"](h, mask))
    assert top.sum() == math.ceil(round(rho * n, 9))  # exact count without ties
    assert not np.any(top & ~mask)


def test_pools_over_the_whole_batch(variant):
  # Sequence 0 has only low entropies, sequence 1 only high ones: the pooled
  # top 50% is all of sequence 1 (a per-sequence quantile would keep half of each).
  h = jnp.array([[0.1, 0.2, 0.3, 0.4], [1.1, 1.2, 1.3, 1.4]])
  m = jnp.ones((2, 4), bool)
  np.testing.assert_array_equal(_FNS[variant, 0.5, "top"](h, m),
                                [[False] * 4, [True] * 4])


def test_special_cases(variant):
  rng = np.random.default_rng(3)
  h, mask = _random_batch(rng, _SHAPE)
  np.testing.assert_array_equal(_FNS[variant, 1.0, "top"](h, mask), mask)
  assert not np.any(_FNS[variant, 1.0, "bottom"](h, mask))
  assert not np.any(_FNS[variant, 0.0, "top"](h, mask))
  np.testing.assert_array_equal(_FNS[variant, 0.0, "bottom"](h, mask), mask)
  # No valid token: all False, no NaN trouble.
  none = np.zeros(_SHAPE, bool)
  for keep in ("top", "bottom"):
    assert not np.any(_FNS[variant, 0.2, keep](h, none))
  # Ties: all-equal entropies are all at the threshold, so "top" keeps them all.
  flat = jnp.full(_SHAPE, 0.7)
  np.testing.assert_array_equal(_FNS[variant, 0.2, "top"](flat, mask), mask)
  assert not np.any(_FNS[variant, 0.2, "bottom"](flat, mask))


def test_vmap_pools_per_element():
  rng = np.random.default_rng(4)
  h, mask = _random_batch(rng, (3,) + _SHAPE[1:])
  fn = jax.jit(jax.vmap(_FNS["nojit", 0.2, "top"]))
  got = np.asarray(fn(h, mask))
  for b in range(3):
    np.testing.assert_array_equal(got[b], ref_forking_mask(h[b], mask[b], 0.2))


def test_rejects_bad_arguments():
  h = jnp.zeros((2, 3))
  m = jnp.ones((2, 3), bool)
  with pytest.raises(ValueError, match="top"):
    forking_mask(h, m, rho=0.2, keep="middle")
  with pytest.raises(ValueError, match="rho"):
    forking_mask(h, m, rho=1.5)
  with pytest.raises(ValueError):
    forking_mask(h, jnp.ones((2, 4), bool), rho=0.2)


# ---------------------------------------------------------------- properties

@st.composite
def batches(draw):
  size = math.prod(_SHAPE)
  values = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]) | st.floats(0, 5, width=32),
                         min_size=size, max_size=size))
  valid = draw(st.lists(st.booleans(), min_size=size, max_size=size))
  perm = np.array(draw(st.permutations(range(size))))
  return (np.array(values, np.float32).reshape(_SHAPE), np.array(valid).reshape(_SHAPE),
          perm)


@PROPERTY
@hypothesis.given(batches(), st.sampled_from([0.1, 0.2, 0.5, 1.0]))
def test_properties(case, rho):
  h, mask, perm = case
  top = np.asarray(_FNS["jit", rho, "top"](h, mask))
  bottom = np.asarray(_FNS["jit", rho, "bottom"](h, mask))
  np.testing.assert_array_equal(top, ref_forking_mask(h, mask, rho, "top"))
  assert not np.any((top | bottom) & ~mask)  # never on padding
  np.testing.assert_array_equal(top | bottom, mask)  # a partition of the valid tokens
  assert not np.any(top & bottom)
  assert top.sum() >= math.ceil(round(rho * mask.sum(), 9))  # ties only add
  # Equivariance: permuting the tokens (across the whole batch) permutes the mask.
  hp = h.reshape(-1)[perm].reshape(h.shape)
  mp = mask.reshape(-1)[perm].reshape(h.shape)
  np.testing.assert_array_equal(np.asarray(_FNS["jit", rho, "top"](hp, mp)).reshape(-1),
                                top.reshape(-1)[perm])
