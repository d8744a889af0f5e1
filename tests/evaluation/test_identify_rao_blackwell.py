"""The Rao-Blackwell advantage estimator of the identifiability study (`--advantage-estimator rao-blackwell`):
against a loop reference, on a hand-made policy whose true advantages are known, and in the report."""

import math

import numpy as np
import pytest

from tcred.evaluation import identify as idf
from tcred.evaluation.identify import report
from tcred.evaluation.identify.truth import rao_blackwell_advantages
from tcred.training.data import eval_problems

from tests.evaluation.test_identify_forking import (EOS, ONE, Q_A, TWO, FirstCharCountdown, fixed_policy,
                                                   hand_rollout)


def rb_reference(values, mask, p, same_wins, same_draws, draws):
  """Loops over tokens: A_t = (1 − p_t)(Q̂ − V̂₋ₐ) from the counts, by the definitions."""
  n, g, t = mask.shape
  adv = np.zeros((n, g, t))
  for i in range(n):
    for j in range(g):
      length = int(mask[i, j].sum())
      for k in range(length):
        v_after = values[i, j, k + 1]
        after_draws = draws[i, j, k + 1] if k + 1 < length else 0
        if after_draws == 0:  # the reward, or a lost prefix's exact 0
          q = v_after
        else:
          q = (v_after * after_draws + same_wins[i, j, k]) / (after_draws + same_draws[i, j, k])
        wins_here = values[i, j, k] * draws[i, j, k]
        others = draws[i, j, k] - same_draws[i, j, k]
        alt = (wins_here - same_wins[i, j, k]) / others if others > 0 else values[i, j, k]
        adv[i, j, k] = (1 - p[i, j, k]) * (q - alt)
  return adv


def test_rao_blackwell_equals_the_loop_reference_and_keeps_the_bound():
  rng = np.random.default_rng(0)
  n, g, t, k = 3, 4, 7, 8
  lengths = rng.integers(1, t + 1, size=(n, g))
  mask = np.arange(t) < lengths[..., None]
  draws = np.where(mask, k, 0).astype(float)
  draws[0, 0, 1:] = 0.0  # a lost prefix (not continued) from position 1 on: V = 0 there
  wins = rng.integers(0, k + 1, size=(n, g, t)).astype(float) * (draws > 0)
  same_draws = np.where(draws > 0, rng.integers(0, k + 1, size=(n, g, t)), 0).astype(float)
  same_draws[1, 1, :] = draws[1, 1, :]  # every continuation drew the token: V̂₋ₐ falls back to V̂(o<t)
  same_wins = np.minimum(wins, same_draws) * (rng.random((n, g, t)) < 0.7)
  same_wins = np.maximum(same_wins, wins - (draws - same_draws))  # consistent counts
  values = np.full((n, g, t + 1), np.nan)
  for i in range(n):
    for j in range(g):
      length = lengths[i, j]
      values[i, j, :length] = np.where(draws[i, j, :length] > 0, wins[i, j, :length] / k, 0.0)
      values[i, j, length] = rng.integers(0, 2)
  p = rng.random((n, g, t))
  adv, se, se_smooth = rao_blackwell_advantages(values, mask, p, same_wins, same_draws, draws)
  np.testing.assert_allclose(adv, rb_reference(values, mask, p, same_wins, same_draws, draws), atol=1e-12)
  assert (np.abs(adv) <= (1 - p) + 1e-12).all()  # the bound by construction
  assert (adv[~mask] == 0).all() and (se[~mask] == 0).all() and (se_smooth[~mask] == 0).all()
  assert (se >= 0).all() and (se_smooth[mask] > 0).any() and (se_smooth >= se - 1e-12)[mask & (draws > 0)].any()
  # the fallback row: with every draw on the token, V̂₋ₐ is V̂(o<t)
  row = mask[1, 1]
  q_exact = np.arange(t)[row] == lengths[1, 1] - 1
  assert np.isfinite(adv[1, 1, row]).all() and q_exact.any()


def _rollout_with_probs(task, problems, responses):
  rollout = hand_rollout(task, problems, responses)
  logp = np.zeros(rollout.tokens.shape, np.float32)
  for i in range(rollout.tokens.shape[0]):
    for j in range(rollout.tokens.shape[1]):
      for k in range(int(rollout.mask[i, j].sum())):
        logp[i, j, k] = math.log(Q_A[int(rollout.tokens[i, j, k])])
  return rollout._replace(logp=logp)


def test_rao_blackwell_truth_on_a_policy_with_known_advantages():
  """Under the fixed policy Q_A on a task decided by the first character, A_0 = 1[o_0 = '2'] − 0.35 and every
  later token has A = 0. The Rao-Blackwell estimate is exact wherever the values after the token are (position
  0 with '2': (1 − 0.35)(1 − 0); every later token: Q and V₋ₐ are both 1 or both 0) and within its standard
  error elsewhere; the difference estimator at position 0 carries V̂(empty)'s noise."""
  task = FirstCharCountdown()
  problems = eval_problems(task, 2)
  responses = [[[TWO, EOS], [ONE, TWO, EOS], [TWO, ONE, TWO, EOS]], [[EOS], [ONE, EOS], [TWO, TWO, EOS]]]
  rollout = _rollout_with_probs(task, problems, responses)
  config = idf.IdentifyConfig(prompts=2, rollouts=3, continuations=32, delta=0.5, rollouts_from="chains",
                              advantage_estimator="rao-blackwell")
  policy = fixed_policy(Q_A)
  truth = idf.ground_truth(*policy, task, problems, rollout, config)
  plain = idf.ground_truth(*policy, task, problems, rollout, config.__class__(
      **{**config.__dict__, "advantage_estimator": "difference"}))
  np.testing.assert_array_equal(truth.values, plain.values)  # the same continuations
  p = np.exp(rollout.logp)
  assert (np.abs(truth.advantages) <= 1 - p + 1e-6)[rollout.mask].all()
  later = rollout.mask & (np.arange(rollout.mask.shape[-1]) > 0)
  assert (truth.advantages[later] == 0).all() and (truth.advantage_se[later] == 0).all()
  first = rollout.tokens[..., 0]
  two = first == TWO
  np.testing.assert_allclose(truth.advantages[..., 0][two], 1 - Q_A[TWO], atol=1e-6)
  true = np.where(two, 1 - Q_A[TWO], -Q_A[TWO])
  err = np.abs(truth.advantages[..., 0] - true)
  assert (err <= 4 * truth.advantage_se_smoothed[..., 0] + 1e-9).all()
  # the same draws through the difference: V̂(empty) is a 32-sample mean, not exact
  assert np.abs(plain.advantages[..., 0] - true).max() >= err.max()


def test_rao_blackwell_in_the_noise_section():
  cfg = idf.IdentifyConfig(prompts=2, rollouts=2, rollouts_from="chains", advantage_estimator="rao-blackwell")
  assert "Rao-Blackwellised" in report.estimator_text(cfg)
  assert "difference" in report.estimator_text(idf.IdentifyConfig(prompts=2, rollouts=2, rollouts_from="chains"))
  with pytest.raises(ValueError, match="fixed K"):
    idf.IdentifyConfig(prompts=2, rollouts=2, rollouts_from="chains", advantage_estimator="rao-blackwell", auto_continuations=True)
  with pytest.raises(ValueError, match="allowed values are difference, rao-blackwell"):
    idf.IdentifyConfig(prompts=2, rollouts=2, rollouts_from="chains", advantage_estimator="exact")
