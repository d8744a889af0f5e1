"""Property tests (DESIGN §8) of the model-based token signals and the credit built on them.

- `answer_information_gain`: zero on padding and at the last token, finite, telescopes,
  equivariant under permuting the group, group size 1.
- `information_weights`: mean 1 over each sequence's valid tokens, zero on padding,
  all ones when every gain is 0, equivariant under permuting the group.
- `dro_rewards`: identical reference log-probs across the group give equal R3 and so
  zero GRPO advantage; equivariant under permuting the group; group size 1.
- `VarianceFilter.group_filter`: groups whose rewards are all equal are dropped.

The functions run jitted. Token and answer lengths are fixed (T, J) and only the
group size G varies, so a handful of compilations serve every example; ragged
lengths come from the masks, as in real batches.
"""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.advantages import group_advantages
from tcred.credit.token_signals import VarianceFilter, dro_rewards
from tcred.signals.registry import normalised_magnitude as information_weights
from tcred.signals.information import answer_information_gain

PROPERTY = hypothesis.settings(max_examples=20, deadline=None)
_T, _J = 6, 4  # fixed token and answer lengths (padding comes from the masks)
_MAX_G = 4

_IG = jax.jit(answer_information_gain)
_WEIGHTS = jax.jit(information_weights)
_DRO = jax.jit(lambda ref_logp, valid, rewards, coef: dro_rewards(ref_logp, valid, rewards, coef=coef))
_GRPO = jax.jit(lambda r: group_advantages(r, mode="grpo"))
_DR_GRPO = jax.jit(lambda r: group_advantages(r, mode="dr-grpo"))


def _floats(lo, hi):
  return st.floats(lo, hi, allow_nan=False, width=32)


@st.composite
def answer_groups(draw):
  """(answer_logp [G, T, J] with NaN in padding, prefix mask [G, T], permutation of G)."""
  g, t, j = draw(st.integers(1, _MAX_G)), _T, _J
  vals = draw(st.lists(st.sampled_from([0.0, -1.0]) | _floats(-20.0, 0.0),
                       min_size=g * t * j, max_size=g * t * j))
  lengths = np.array(draw(st.lists(st.integers(0, t), min_size=g, max_size=g)))
  mask = np.arange(t)[None, :] < lengths[:, None]  # [G, T]
  logp = np.array(vals, np.float32).reshape(g, t, j)
  logp = np.where(mask[..., None], logp, np.nan).astype(np.float32)  # garbage padding
  perm = np.array(draw(st.permutations(range(g))))
  return logp, mask, perm


@PROPERTY
@hypothesis.given(answer_groups())
def test_answer_information_gain_properties(case):
  logp, mask, perm = case
  g, t, _ = logp.shape
  ig = np.asarray(_IG(logp, mask))
  assert ig.shape == (g, t) and ig.dtype == np.float32
  assert np.all(np.isfinite(ig))
  lengths = mask.sum(axis=1)
  for i in range(g):
    # No credit on padding, nor at the last token (no later prefix to compare with).
    assert np.all(ig[i, max(lengths[i] - 1, 0):] == 0.0)
    # The gains telescope: Σ_t IG_t = log p(y*|x, o_<L) − log p(y*|x).
    if lengths[i] >= 2:
      s = logp[i, :lengths[i]].astype(np.float64).sum(axis=-1)
      np.testing.assert_allclose(ig[i].sum(dtype=np.float64), s[-1] - s[0], rtol=1e-4, atol=1e-3)
  # Permuting the group permutes the gains (each rollout is scored on its own).
  ig_p = np.asarray(_IG(logp[perm], mask[perm]))
  np.testing.assert_array_equal(ig_p, ig[perm])
  # Group of size 1: the same gains as that rollout inside the group, finite.
  one = np.asarray(_IG(logp[:1], mask[:1]))
  assert np.all(np.isfinite(one))
  np.testing.assert_array_equal(one, ig[:1])


@st.composite
def gain_groups(draw):
  """(info_gain [G, T] with NaN in padding, arbitrary mask [G, T], permutation of G)."""
  g, t = draw(st.integers(1, _MAX_G)), _T
  vals = draw(st.lists(st.sampled_from([0.0, 0.5, -0.5]) | _floats(-10.0, 10.0),
                       min_size=g * t, max_size=g * t))
  mask = np.array(draw(st.lists(st.booleans(), min_size=g * t, max_size=g * t))).reshape(g, t)
  ig = np.where(mask, np.array(vals, np.float32).reshape(g, t), np.nan).astype(np.float32)
  perm = np.array(draw(st.permutations(range(g))))
  return ig, mask, perm


@PROPERTY
@hypothesis.given(gain_groups())
@hypothesis.example((np.array([[np.nan, 1.1754944e-38, 0.0]], np.float32), np.array([[False, True, True]]),
                     np.array([0])))  # a mean below float32's normal range (was uniform weights)
def test_information_weights_properties(case):
  ig, mask, perm = case
  w = np.asarray(_WEIGHTS(ig, mask))
  assert w.shape == ig.shape and np.all(np.isfinite(w)) and np.all(w >= 0.0)
  assert np.all(w[~mask] == 0.0)  # zero on padding
  for i in range(ig.shape[0]):
    valid = mask[i]
    if not valid.any():
      continue
    # XLA's CPU reads float32 subnormals as zero (denormals-are-zero): so does the reference.
    mag = np.abs(ig[i][valid]).astype(np.float64)
    mag = np.where(mag < np.finfo(np.float32).tiny, 0.0, mag)
    if np.any(mag > 0):
      np.testing.assert_allclose(w[i][valid].mean(dtype=np.float64), 1.0, rtol=1e-5)
      # Proportional to |IG|.
      np.testing.assert_allclose(w[i][valid], mag / mag.mean(), rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(w[i][valid], 1.0)  # no signal: plain GRPO weights
  # Weights are per sequence: permuting the group permutes them exactly.
  w_p = np.asarray(_WEIGHTS(ig[perm], mask[perm]))
  np.testing.assert_array_equal(w_p, w[perm])


@st.composite
def dro_groups(draw):
  """(ref_logp [G, J] with NaN in padding, answer_valid [J], rewards [G], perm, coef)."""
  g, j = draw(st.integers(1, _MAX_G)), _J
  vals = draw(st.lists(st.sampled_from([-1.0, -0.5]) | _floats(-20.0, 0.0),
                       min_size=g * j, max_size=g * j))
  valid = np.array(draw(st.lists(st.booleans(), min_size=j, max_size=j)))
  rewards = np.array(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=g, max_size=g)), np.float32)
  ref_logp = np.where(valid[None, :], np.array(vals, np.float32).reshape(g, j), np.nan).astype(np.float32)
  perm = np.array(draw(st.permutations(range(g))))
  coef = draw(st.sampled_from([0.0, 0.5, 1.0]))
  return ref_logp, valid, rewards, perm, coef


def _dro(ref_logp, valid, rewards, coef):
  mixed, r3 = _DRO(ref_logp, valid, rewards, np.float32(coef))
  return np.asarray(mixed), np.asarray(r3)


@PROPERTY
@hypothesis.given(dro_groups())
def test_dro_rewards_properties(case):
  ref_logp, valid, rewards, perm, coef = case
  g = ref_logp.shape[0]
  mixed, r3 = _dro(ref_logp, valid, rewards, coef)
  assert mixed.shape == r3.shape == (g,)
  assert np.all(np.isfinite(mixed)) and np.all(np.isfinite(r3))
  np.testing.assert_allclose(mixed, rewards + coef * r3, rtol=1e-6, atol=1e-6)
  # Permuting the group permutes R3 and the mixed reward.
  mixed_p, r3_p = _dro(ref_logp[perm], valid, rewards[perm], coef)
  np.testing.assert_allclose(r3_p, r3[perm], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mixed_p, mixed[perm], rtol=1e-5, atol=1e-5)
  # Every rollout scores y* identically -> R3 equal across the group -> no R3 advantage;
  # with equal outcome rewards the whole group gets zero GRPO advantage.
  same = np.repeat(ref_logp[:1], g, axis=0)
  mixed_s, r3_s = _dro(same, valid, rewards, coef)
  assert np.all(r3_s == r3_s[0])
  np.testing.assert_array_equal(np.asarray(_GRPO(r3_s)), 0.0)
  np.testing.assert_allclose(np.asarray(_DR_GRPO(mixed_s)), np.asarray(_DR_GRPO(rewards)), atol=1e-4)
  mixed_e, _ = _dro(same, valid, np.full(g, rewards[0]), coef)
  np.testing.assert_array_equal(np.asarray(_GRPO(mixed_e)), 0.0)
  # Group of size 1: finite, and zero advantage.
  mixed_1, r3_1 = _dro(ref_logp[:1], valid, rewards[:1], coef)
  assert np.all(np.isfinite(mixed_1)) and np.all(np.isfinite(r3_1))
  np.testing.assert_array_equal(np.asarray(_GRPO(mixed_1)), 0.0)


@st.composite
def filter_batches(draw, b=6):
  """(rewards [B, G] with some all-equal rows, ref_std [B, J], answer_valid [B, J], quantile)."""
  g, j = draw(st.integers(1, _MAX_G)), _J
  rewards = np.array(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=b * g, max_size=b * g)),
                     np.float32).reshape(b, g)
  flat = np.array(draw(st.lists(st.booleans(), min_size=b, max_size=b)))
  rewards[flat] = rewards[flat, :1]  # force some groups to be all-equal
  sigma = np.array(draw(st.lists(_floats(0.0, 3.0), min_size=b * j, max_size=b * j)), np.float32)
  valid = np.array(draw(st.lists(st.booleans(), min_size=b * j, max_size=b * j))).reshape(b, j)
  quantile = draw(st.sampled_from([0.0, 0.25, 0.5]))
  return rewards, np.where(valid, sigma.reshape(b, j), 0.0).astype(np.float32), valid, quantile


@PROPERTY
@hypothesis.given(filter_batches())
def test_variance_filter_drops_all_equal_groups(case):
  rewards, ref_std, valid, quantile = case
  method = VarianceFilter(quantile=quantile)
  extras = {"ref_std": jnp.asarray(ref_std), "answer_valid": jnp.asarray(valid)}
  keep = np.asarray(method.group_filter(rewards, extras))
  assert keep.shape == (rewards.shape[0],) and keep.dtype == bool
  all_equal = np.all(rewards == rewards[:, :1], axis=1)  # includes G = 1
  assert not np.any(keep[all_equal])
  if quantile == 0.0:  # no σ filtering: exactly the groups with varied rewards survive
    np.testing.assert_array_equal(keep, ~all_equal)
