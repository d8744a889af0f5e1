"""Agreement between token signals (`tcred.signals.agreement`) on hand-made arrays, against scipy / NumPy, and in
the train step: the `agreement/*` scalars are added and nothing else changes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from tcred.credit import make_credit
from tcred.losses.pg import LossConfig
from tcred.signals import agreement as ag
from tcred.training.optim import adamw
from tcred.training.step import Batch, TrainState, rl_train_step

_JIT = {name: jax.jit(getattr(ag, name)) for name in ("top_fraction_jaccard", "spearman", "gini", "effective_ratio")}


def test_identical_signals_agree_and_disjoint_ones_do_not():
  mask = np.ones((2, 5), bool)
  a = np.arange(10, dtype=np.float32).reshape(2, 5)
  assert float(_JIT["top_fraction_jaccard"](a, a, mask)) == 1.0
  assert float(_JIT["spearman"](a, a, mask)) == pytest.approx(1.0)
  # reversed order: the top 20% (2 of 10 tokens) of a and of −a are disjoint, ranks exactly anti-correlated
  assert float(_JIT["top_fraction_jaccard"](a, -a, mask)) == 0.0
  assert float(_JIT["spearman"](a, -a, mask)) == pytest.approx(-1.0)
  # one of two top tokens shared: |{8, 9} ∩ {9, 0}| / |{8, 9, 0}| = 1/3
  b = a.copy()
  b[0, 0] = 100.0
  b[1, 3] = -1.0
  assert float(_JIT["top_fraction_jaccard"](a, b, mask)) == pytest.approx(1 / 3)
  # padding never counts: a huge value on a padded token changes nothing
  pad = mask.copy()
  pad[1, 4] = False
  c = a.copy()
  c[1, 4] = 1e9
  assert float(_JIT["top_fraction_jaccard"](a, c, pad)) == 1.0
  # undefined cases are 0, not NaN: no valid token, a constant signal
  assert float(_JIT["top_fraction_jaccard"](a, a, np.zeros_like(mask))) == 0.0
  assert float(_JIT["spearman"](a, np.ones_like(a), mask)) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties_and_padding(seed):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 5, (3, 4, 7)).astype(np.float32)  # many ties
  b = (a + rng.normal(size=a.shape)).astype(np.float32)
  mask = rng.random(a.shape) < 0.7
  want = scipy.stats.spearmanr(a[mask], b[mask]).statistic
  got = float(_JIT["spearman"](a, b, mask))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert float(jax.vmap(lambda x, y, m: ag.spearman(x, y, m))(a, b, mask)[0]) == pytest.approx(
      scipy.stats.spearmanr(a[0][mask[0]], b[0][mask[0]]).statistic, abs=1e-5)


def _gini_reference(x):
  """Mean absolute difference over all ordered pairs / (2 · mean), the textbook definition."""
  x = np.asarray(x, np.float64)
  if x.sum() == 0:
    return 0.0
  return np.abs(x[:, None] - x[None, :]).mean() / (2 * x.mean())


def test_gini_and_effective_ratio_against_references():
  rng = np.random.default_rng(0)
  x = rng.exponential(size=(4, 6)).astype(np.float32)
  mask = rng.random(x.shape) < 0.8
  np.testing.assert_allclose(float(_JIT["gini"](x, mask)), _gini_reference(x[mask]), rtol=1e-5)
  v = x[mask].astype(np.float64)
  np.testing.assert_allclose(float(_JIT["effective_ratio"](x, mask)), v.sum() ** 2 / (v.size * (v ** 2).sum()),
                             rtol=1e-5)
  # by hand: equal credit everywhere -> Gini 0, ratio 1; one token carries all of n = 4 -> Gini 3/4, ratio 1/4
  ones = np.ones((1, 4), np.float32)
  full = np.ones((1, 4), bool)
  assert float(_JIT["gini"](ones, full)) == 0.0 and float(_JIT["effective_ratio"](ones, full)) == 1.0
  spike = np.array([[0.0, 0.0, 5.0, 0.0]], np.float32)
  assert float(_JIT["gini"](spike, full)) == pytest.approx(0.75)
  assert float(_JIT["effective_ratio"](spike, full)) == pytest.approx(0.25)
  assert float(_JIT["gini"](0 * ones, full)) == 0.0 and float(_JIT["effective_ratio"](0 * ones, full)) == 0.0


def test_metric_names_cover_every_pair():
  mask = np.ones((1, 2, 5), bool)
  rng = np.random.default_rng(0)
  scores = {n: rng.normal(size=mask.shape).astype(np.float32) for n in ("entropy", "surprisal", "info-gain")}
  out = jax.eval_shape(lambda: ag.agreement_metrics(scores, mask, np.ones(mask.shape, np.float32)))  # names only
  assert sorted(out) == sorted(["agreement/credit_gini", "agreement/credit_effective_ratio"] + [
      f"agreement/{a}__{b}/{m}" for a, b in [("entropy", "surprisal"), ("entropy", "info-gain"),
                                             ("surprisal", "info-gain")] for m in ("jaccard", "spearman")])
  # the per-signal sets and ranks computed once give the pairwise functions' values
  two = {n: scores[n] for n in ("entropy", "info-gain")}
  credit = np.abs(scores["surprisal"])
  vals = jax.jit(lambda: ag.agreement_metrics(two, mask, credit))()
  assert float(vals["agreement/entropy__info-gain/jaccard"]) == float(
      _JIT["top_fraction_jaccard"](two["entropy"], two["info-gain"], mask))
  np.testing.assert_allclose(float(vals["agreement/entropy__info-gain/spearman"]),
                             scipy.stats.spearmanr(two["entropy"].ravel(), two["info-gain"].ravel()).statistic, rtol=1e-5)
  np.testing.assert_allclose(float(vals["agreement/credit_gini"]), _gini_reference(credit.ravel()), rtol=1e-5)
  assert ag.step_signal_names(()) == ("entropy", "surprisal", "rsi")  # no extras: the step's own forward only
  assert "info-gain" in ag.step_signal_names(("info_gain",)) and "random" not in ag.step_signal_names(("info_gain",))
  assert "entropy-bound" not in ag.step_signal_names(("info_gain",))  # a diagnostic, not a ranking


def _batch(b=2, g=3, p=4, t=5):
  mask = jnp.arange(t)[None, None, :] < jnp.array([[[5], [3], [2]], [[4], [5], [1]]])
  return Batch(prompt=jnp.full((b, p), 5).at[:, 0].set(1), prompt_valid=jnp.ones((b, p), bool),
               response=jnp.where(mask, 7, 0).at[:, :, 1].set(9) * mask, mask=mask,
               old_logp=jnp.full((b, g, t), -4.0) * mask, rewards=jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),
               group_valid=jnp.ones((b,), bool), extras={})


@pytest.mark.slow  # ~20-40 s: compiles the train step twice per method
@pytest.mark.parametrize("method", ["outcome", "entropy-mask"])
def test_train_step_adds_agreement_scalars_and_changes_nothing_else(tiny_model, method):
  tx = adamw(1e-3, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  graphdef, params = nnx.split(tiny_model)
  credit = make_credit(method)
  runs = {}
  for agreement in (False, True):
    state = TrainState(jax.tree.map(jnp.copy, params), tx.init(params), jnp.int32(0))
    runs[agreement] = rl_train_step(state, _batch(), None, graphdef=graphdef, tx=tx, credit=credit,
                                    loss_config=LossConfig(), temperature=1.0, agreement=agreement)
  (s0, m0), (s1, m1) = runs[False], runs[True]
  added = sorted(set(m1) - set(m0))
  assert set(m0) <= set(m1) and added == [
      "agreement/credit_effective_ratio", "agreement/credit_gini", "agreement/entropy__surprisal/jaccard",
      "agreement/entropy__surprisal/spearman"]
  for k in m0:  # the same update and the same metrics, bit for bit
    np.testing.assert_array_equal(np.asarray(m0[k]), np.asarray(m1[k]), err_msg=k)
  jax.tree.map(np.testing.assert_array_equal, s0.params, s1.params)
  assert all(np.isfinite(float(m1[k])) for k in added)
  assert 0.0 <= float(m1["agreement/entropy__surprisal/jaccard"]) <= 1.0
