"""Tests of tcred.signals.variance (DRO, arXiv 2506.13351)."""

import jax

jax.config.update("jax_enable_x64", False)

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.signals.variance import (dense_reference_reward, query_keep, query_score,
                                    reference_token_std, reference_token_weights)
from tcred.testing.numpy_refs import dense_reference_reward as ref_reward
from tcred.testing.numpy_refs import query_keep as ref_query_keep
from tcred.testing.numpy_refs import query_score as ref_score
from tcred.testing.numpy_refs import reference_token_std as ref_std
from tcred.testing.numpy_refs import reference_token_weights as ref_weights

RTOL, ATOL = 1e-5, 1e-6
PROPERTY = hypothesis.settings(max_examples=25, deadline=None)
_G, _J = 4, 6

_PER_GROUP = {
    "std": reference_token_std,
    "weights": reference_token_weights,
    "reward": dense_reference_reward,
    "score": query_score,
}
_FNS = {("nojit", k): f for k, f in _PER_GROUP.items()}
_FNS.update({("jit", k): jax.jit(f) for k, f in _PER_GROUP.items()})


@pytest.fixture(params=["nojit", "jit"])
def variant(request):
  return request.param


# ------------------------------------------------------------ NumPy references


def _group(seed, g=_G, j=_J):
  rng = np.random.default_rng(seed)
  ref_logp = -rng.exponential(size=(g, j)).astype(np.float32)
  mask = np.arange(j) < j - 2  # two padding tokens
  ref_logp[:, ~mask] = np.nan  # garbage in the padding
  return ref_logp, mask


# ----------------------------------------------------------------- per group


def test_hand_computed(variant):
  # ℓ = [[-1, -2, *], [-3, -2, *]]: σ = [1, 0, 0]; mean σ over valid = 0.5 ->
  # w = [2, 0, 0]; R3 = [(2·-1 + 0·-2) / 2, (2·-3 + 0·-2) / 2] = [-1, -3]; score 1.
  ref_logp = jnp.array([[-1.0, -2.0, 7.0], [-3.0, -2.0, 9.0]])
  mask = jnp.array([True, True, False])
  sigma = _FNS[variant, "std"](ref_logp, mask)
  np.testing.assert_allclose(sigma, [1.0, 0.0, 0.0], rtol=RTOL)
  w = _FNS[variant, "weights"](sigma, mask)
  np.testing.assert_allclose(w, [2.0, 0.0, 0.0], rtol=RTOL)
  np.testing.assert_allclose(_FNS[variant, "reward"](ref_logp, w, mask), [-1.0, -3.0],
                             rtol=RTOL)
  np.testing.assert_allclose(_FNS[variant, "score"](sigma, mask), 1.0, rtol=RTOL)


def test_matches_reference(variant):
  for seed in range(3):
    ref_logp, mask = _group(seed)
    sigma = _FNS[variant, "std"](ref_logp, mask)
    np.testing.assert_allclose(sigma, ref_std(np.nan_to_num(ref_logp), mask), rtol=RTOL,
                               atol=ATOL)
    w = _FNS[variant, "weights"](sigma, mask)
    np.testing.assert_allclose(w, ref_weights(np.asarray(sigma), mask), rtol=RTOL,
                               atol=ATOL)
    r3 = _FNS[variant, "reward"](ref_logp, w, mask)
    np.testing.assert_allclose(r3, ref_reward(np.nan_to_num(ref_logp), np.asarray(w), mask),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_FNS[variant, "score"](sigma, mask),
                               ref_score(np.asarray(sigma), mask), rtol=RTOL)


def test_vmap_over_prompts():
  groups = [_group(seed) for seed in range(3)]
  ref_logp = np.stack([g[0] for g in groups])  # [B, G, J]
  mask = np.stack([g[1] for g in groups])  # [B, J]
  mask[1, 0] = False

  def pipeline(ref_logp, mask):
    sigma = reference_token_std(ref_logp, mask)
    w = reference_token_weights(sigma, mask)
    return sigma, w, dense_reference_reward(ref_logp, w, mask), query_score(sigma, mask)

  sigma, w, r3, score = jax.jit(jax.vmap(pipeline))(ref_logp, mask)
  for b in range(3):
    clean = np.nan_to_num(ref_logp[b])
    want_sigma = ref_std(clean, mask[b])
    np.testing.assert_allclose(sigma[b], want_sigma, rtol=RTOL, atol=ATOL)
    want_w = ref_weights(want_sigma, mask[b])
    np.testing.assert_allclose(w[b], want_w, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(r3[b], ref_reward(clean, want_w, mask[b]), rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(score[b], ref_score(want_sigma, mask[b]), rtol=RTOL)


def test_degenerate_groups(variant):
  # Identical rows (and a group of size 1) give σ exactly 0, weights 1, no NaN.
  row = np.array([-0.1, -0.7, -2.3, -0.3, -1e-3, -5.0], np.float32)
  mask = np.array([True, True, True, True, False, False])
  for g in (1, _G):
    ref_logp = np.tile(row, (g, 1))
    sigma = np.asarray(_FNS[variant, "std"](ref_logp, mask))
    assert np.all(sigma == 0.0)
    w = np.asarray(_FNS[variant, "weights"](sigma, mask))
    np.testing.assert_array_equal(w, mask.astype(np.float32))
    r3 = np.asarray(_FNS[variant, "reward"](ref_logp, w, mask))
    np.testing.assert_allclose(r3, np.full(g, row[:4].sum() / 4), rtol=RTOL)
    assert float(_FNS[variant, "score"](sigma, mask)) == 0.0
  # No valid token at all.
  none = np.zeros(_J, bool)
  ref_logp, _ = _group(7)
  sigma = np.asarray(_FNS[variant, "std"](ref_logp, none))
  w = np.asarray(_FNS[variant, "weights"](sigma, none))
  r3 = np.asarray(_FNS[variant, "reward"](ref_logp, w, none))
  assert np.all(sigma == 0) and np.all(w == 0) and np.all(r3 == 0)
  assert float(_FNS[variant, "score"](sigma, none)) == 0.0


def test_shape_errors():
  with pytest.raises(ValueError):
    reference_token_std(jnp.zeros((2, 3)), jnp.ones(4, bool))
  with pytest.raises(ValueError):
    reference_token_weights(jnp.zeros(3), jnp.ones(4, bool))
  with pytest.raises(ValueError):
    dense_reference_reward(jnp.zeros((2, 3)), jnp.zeros(4), jnp.ones(3, bool))
  with pytest.raises(ValueError):
    query_keep(jnp.zeros(3), jnp.zeros((4, 2)), quantile=0.5)
  with pytest.raises(ValueError, match="quantile"):
    query_keep(jnp.zeros(3), jnp.zeros((3, 2)), quantile=1.5)


# ----------------------------------------------------------------- the batch

_KEEP = {}
for _q in (0.0, 0.25, 0.5, 1.0):
  _KEEP["nojit", _q] = functools.partial(query_keep, quantile=_q)
  _KEEP["jit", _q] = jax.jit(_KEEP["nojit", _q])


def test_query_keep_hand_computed(variant):
  scores = jnp.array([0.1, 0.5, 0.3, 0.9])
  rewards = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # last: all equal
  # quantile 0.25: m = 1, threshold s_(1) = 0.3 -> drop 0.1; 0.9 dropped (all equal).
  np.testing.assert_array_equal(_KEEP[variant, 0.25](scores, rewards),
                                [False, True, True, False])
  # quantile 0.5: m = 2, threshold 0.5 -> drop 0.1 and 0.3.
  np.testing.assert_array_equal(_KEEP[variant, 0.5](scores, rewards),
                                [False, True, False, False])
  np.testing.assert_array_equal(_KEEP[variant, 0.0](scores, rewards),
                                [True, True, True, False])
  assert not np.any(_KEEP[variant, 1.0](scores, rewards))
  # Ties at the threshold are kept; a group of size 1 is always dropped.
  tied = jnp.array([0.2, 0.2, 0.2, 0.9])
  np.testing.assert_array_equal(_KEEP[variant, 0.25](tied, rewards[:, :]),
                                [True, True, True, False])
  assert not np.any(_KEEP[variant, 0.0](scores, rewards[:, :1]))


@PROPERTY
@hypothesis.given(  # no subnormal scores: XLA on CPU flushes them to 0, NumPy does not
    st.lists(st.sampled_from([0.0, 0.2, 1.0]) | st.floats(0, 3, width=32, allow_subnormal=False), min_size=8,
             max_size=8),
    st.lists(st.integers(0, 1), min_size=8 * 3, max_size=8 * 3),
    st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.permutations(range(8)))
def test_query_keep_properties(scores, rewards, quantile, perm):
  scores = np.array(scores, np.float32)
  rewards = np.array(rewards, np.float32).reshape(8, 3)
  perm = np.array(perm)
  keep = np.asarray(_KEEP["jit", quantile](scores, rewards))
  np.testing.assert_array_equal(keep, ref_query_keep(scores.tolist(), rewards, quantile))
  # Without ties exactly floor(q B) prompts fall below the threshold.
  m = math.floor(quantile * 8 + 1e-9)
  if len(set(scores.tolist())) == 8 and m < 8:
    assert np.sum(scores < np.sort(scores)[m]) == m
  np.testing.assert_array_equal(
      np.asarray(_KEEP["jit", quantile](scores[perm], rewards[perm])), keep[perm])


@st.composite
def groups(draw):
  g = draw(st.integers(1, _G))
  vals = draw(st.lists(st.sampled_from([-1.0, -0.5]) | st.floats(-20, 0, width=32),
                       min_size=g * _J, max_size=g * _J))
  mask = np.array(draw(st.lists(st.booleans(), min_size=_J, max_size=_J)))
  perm = np.array(draw(st.permutations(range(g))))
  return np.array(vals, np.float32).reshape(g, _J), mask, perm


@PROPERTY
@hypothesis.given(groups())
def test_group_properties(case):
  ref_logp, mask, perm = case
  fns = {k: _FNS["jit", k] for k in _PER_GROUP}
  sigma = np.asarray(fns["std"](ref_logp, mask))
  w = np.asarray(fns["weights"](sigma, mask))
  r3 = np.asarray(fns["reward"](ref_logp, w, mask))
  for x in (sigma, w, r3):
    assert np.all(np.isfinite(x))
  assert np.all(sigma[~mask] == 0.0) and np.all(w[~mask] == 0.0)  # no credit on padding
  assert np.all(sigma >= 0.0)
  np.testing.assert_allclose(sigma, ref_std(ref_logp, mask), rtol=1e-4, atol=1e-5)
  if mask.any():
    np.testing.assert_allclose(w[mask].mean(), 1.0, rtol=1e-5)
  if ref_logp.shape[0] == 1:
    assert np.all(sigma == 0.0)
  # Permuting the group: σ and w are invariant, R3 is permuted.
  sigma_p = np.asarray(fns["std"](ref_logp[perm], mask))
  np.testing.assert_allclose(sigma_p, sigma, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(fns["reward"](ref_logp[perm], w, mask)), r3[perm],
                             rtol=1e-5, atol=1e-6)
