"""Tests of tcred.credit.advantages.group_advantages."""

import jax

jax.config.update("jax_enable_x64", False)

import functools

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.credit.advantages import ADVANTAGE_MODES, group_advantages
from tcred.testing.numpy_refs import group_advantages as ref_group_advantages

RTOL = 1e-5
ATOL = 1e-5
PROPERTY = hypothesis.settings(max_examples=25, deadline=None)


# One function object per (variant, mode), so jit caches are shared by tests.
_FNS = {}
for _mode in ADVANTAGE_MODES:
  _FNS["nojit", _mode] = functools.partial(group_advantages, mode=_mode)
  _FNS["jit", _mode] = jax.jit(_FNS["nojit", _mode])


@pytest.fixture(params=["nojit", "jit"])
def variant(request):
  return request.param


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_matches_reference(variant, mode):
  rng = np.random.default_rng(0)
  for g in (1, 5, 16):
    r = rng.normal(size=g).astype(np.float32)
    mask = rng.random(g) < 0.7
    fn = _FNS[variant, mode]
    np.testing.assert_allclose(fn(r), ref_group_advantages(r, mode), rtol=RTOL, atol=ATOL)
    got = fn(r, mask=mask)
    np.testing.assert_allclose(got, ref_group_advantages(r, mode, mask), rtol=RTOL,
                               atol=ATOL)


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_vmap_over_prompts(mode):
  rng = np.random.default_rng(1)
  r = rng.integers(0, 2, size=(6, 8)).astype(np.float32)
  mask = rng.random((6, 8)) < 0.8
  fn = jax.jit(jax.vmap(lambda x, m: _FNS["nojit", mode](x, mask=m)))
  got = fn(r, mask)
  want = np.stack([ref_group_advantages(r[b], mode, mask[b]) for b in range(6)])
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_hand_computed(variant):
  # rewards 1, 0, 0, 1: mean 0.5, population std 0.5.
  r = jnp.array([1.0, 0.0, 0.0, 1.0])
  grpo = _FNS[variant, "grpo"](r, eps=0.0) if variant == "nojit" else jax.jit(
      functools.partial(group_advantages, mode="grpo", eps=0.0))(r)
  np.testing.assert_allclose(grpo, [1.0, -1.0, -1.0, 1.0], rtol=RTOL)
  dr = _FNS[variant, "dr-grpo"](r)
  np.testing.assert_allclose(dr, [0.5, -0.5, -0.5, 0.5], rtol=RTOL)
  # Masked: only entries 0, 1, 3 count: mean 2/3, std sqrt(2)/3.
  m = jnp.array([True, True, False, True])
  got = _FNS[variant, "grpo"](r, mask=m)
  s = np.sqrt(2.0) / 3.0
  np.testing.assert_allclose(got, [(1 / 3) / s, (-2 / 3) / s, 0.0, (1 / 3) / s],
                             rtol=RTOL)


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_all_equal_and_size_one_give_exact_zeros(variant, mode):
  fn = _FNS[variant, mode]
  for value in (0.0, 1.0, 0.1, -3.7, 1e6):
    for g in (1, 3, 7):
      out = np.asarray(fn(jnp.full((g,), value, jnp.float32)))
      assert np.all(out == 0.0), out
    # All-equal among the valid entries, something else in the padding.
    r = jnp.array([value, 5.0, value, jnp.nan], jnp.float32)
    out = np.asarray(fn(r, mask=jnp.array([True, False, True, False])))
    assert np.all(out == 0.0), out


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_no_valid_entries_and_nan_padding(variant, mode):
  fn = _FNS[variant, mode]
  out = fn(jnp.array([jnp.nan, 1.0, 2.0]), mask=jnp.zeros(3, bool))
  assert np.all(np.asarray(out) == 0.0)
  out = np.asarray(fn(jnp.array([jnp.nan, 1.0, 2.0]), mask=jnp.array([False, True, True])))
  assert np.all(np.isfinite(out)) and out[0] == 0.0


def test_bad_mode_and_shapes():
  with pytest.raises(ValueError, match="grpo.*dr-grpo"):
    group_advantages(jnp.zeros(3), mode="ppo")
  with pytest.raises(ValueError):
    group_advantages(jnp.zeros((2, 3)))
  with pytest.raises(ValueError):
    group_advantages(jnp.zeros(3), mask=jnp.ones(4, bool))


# ---------------------------------------------------------------- properties

_G = 8
_jitted = {mode: _FNS["jit", mode] for mode in ADVANTAGE_MODES}


@st.composite
def groups(draw):
  g = draw(st.integers(1, _G))
  vals = draw(st.lists(st.sampled_from([0.0, 1.0, 0.5, -2.0, 3.25]) | st.floats(-10, 10),
                       min_size=g, max_size=g))
  mask = draw(st.lists(st.booleans(), min_size=g, max_size=g))
  pad = _G - g  # fixed padded length -> one compilation
  r = np.array(vals + [np.nan] * pad, np.float32)
  m = np.array(mask + [False] * pad)
  perm = np.array(draw(st.permutations(range(_G))))
  return r, m, perm


@PROPERTY
@hypothesis.given(groups(), st.sampled_from(ADVANTAGE_MODES))
def test_properties(case, mode):
  r, m, perm = case
  out = np.asarray(_jitted[mode](r, mask=m))
  assert np.all(np.isfinite(out))
  assert np.all(out[~m] == 0.0)  # zero credit on padding
  np.testing.assert_allclose(out, ref_group_advantages(r, mode, m), rtol=1e-4, atol=1e-4)
  # Equivariance under permuting the group.
  np.testing.assert_allclose(np.asarray(_jitted[mode](r[perm], mask=m[perm])), out[perm],
                             rtol=1e-5, atol=1e-5)
  if m.sum() == 1:  # group of size 1
    assert np.all(out == 0.0)
  if m.any():  # advantages are centred
    assert abs(out[m].sum()) < 1e-3 * max(1.0, np.abs(out).max())
