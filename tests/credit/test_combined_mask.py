"""The combined-signal credit method (`combined-mask`, issue 25 item 4): the top-ρ tokens by the equal-weight
rank average of several registered signals, against scipy's ranks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from tcred import experiments
from tcred.credit import make_credit
from tcred.credit.base import CreditInputs
from tcred.testing import numpy_refs


def _inputs(rng, b=2, g=3, t=6, extras=None):
  lengths = rng.integers(1, t + 1, size=(b, g, 1))
  mask = np.arange(t)[None, None, :] < lengths
  entropy = rng.integers(0, 4, (b, g, t)).astype(np.float32)  # ties
  return CreditInputs(rewards=jnp.asarray(rng.integers(0, 2, (b, g)), jnp.float32), mask=jnp.asarray(mask),
                      group_valid=jnp.array([True, False] + [True] * (b - 2)), entropy=jnp.asarray(entropy),
                      logp=jnp.asarray(-rng.uniform(0, 3, (b, g, t)), jnp.float32),
                      old_logp=jnp.zeros((b, g, t)), extras=extras or {})


def test_combined_rank_average_matches_scipy_and_keeps_its_top_fraction():
  rng = np.random.default_rng(0)
  info = jnp.asarray(rng.normal(size=(2, 3, 6)), jnp.float32)
  inputs = _inputs(rng, extras={"info_gain": info})
  method = make_credit("combined-mask", signals="entropy,surprisal,info-gain", rho=0.2)
  assert method.needs_extras == ("info_gain",)
  credit = jax.jit(method)(inputs)
  valid = np.asarray(inputs.mask) & np.asarray(inputs.group_valid)[:, None, None]  # filler groups never train
  parts = [np.asarray(inputs.entropy), -np.asarray(inputs.logp), np.abs(np.asarray(info))]
  combined = np.zeros(valid.shape)
  combined[valid] = np.mean([scipy.stats.rankdata(p[valid]) / valid.sum() for p in parts], axis=0)
  np.testing.assert_allclose(np.asarray(method.scores(inputs)), combined, rtol=1e-6, atol=1e-7)
  want = numpy_refs.forking_mask(combined, valid, 0.2)
  np.testing.assert_array_equal(np.asarray(credit.weights) > 0, want)
  np.testing.assert_allclose(float(credit.metrics["kept_combined_rank"]), combined[want].mean(), rtol=1e-6)


def test_combined_of_one_signal_twice_is_that_signal_s_mask():
  """Ranks are monotone: combining entropy with a signal of the same order keeps entropy's top set."""
  rng = np.random.default_rng(1)
  inputs = _inputs(rng)
  inputs = inputs._replace(entropy=jnp.asarray(rng.permutation(36).reshape(2, 3, 6), jnp.float32))
  both = make_credit("combined-mask", signals="entropy,hsic-mi", rho=0.2)
  alone = make_credit("entropy-mask", rho=0.2)
  inputs = inputs._replace(extras={"mi": inputs.entropy * 2.0 + 1.0})
  np.testing.assert_array_equal(np.asarray(jax.jit(both)(inputs).weights), np.asarray(jax.jit(alone)(inputs).weights))


def test_settings_are_validated_and_the_experiments_registered():
  for bad in ("entropy", "entropy,entropy", "entropy,", "entropy,no-such-signal"):
    with pytest.raises(ValueError, match="credit.signals"):
      make_credit("combined-mask", signals=bad)
  cfg = experiments.get_experiment("countdown-combined-top20")
  assert cfg.credit.name == "combined-mask" and cfg.credit.rho == 0.2 and cfg.credit.needs_extras == ("mi",)
  assert "graph-path-combined-top20" in experiments.get_suite("suite-quick").experiments
