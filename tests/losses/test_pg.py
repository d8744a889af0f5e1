import jax.numpy as jnp
import numpy as np
import pytest

from tcred.losses.pg import LossConfig, aggregate, kl_k3, ppo_clip_surrogate

# Two sequences of T = 3 tokens; weights are the masks.
VALUES = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
WEIGHTS = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_token_mean_by_hand():
  # (1 + 2 + 4) / 3 tokens
  assert float(aggregate(VALUES, WEIGHTS, mode="token-mean")) == pytest.approx(7 / 3)


def test_seq_mean_token_mean_by_hand():
  # mean((1 + 2) / 2, 4 / 1) = (1.5 + 4) / 2
  assert float(aggregate(VALUES, WEIGHTS, mode="seq-mean-token-mean")) == pytest.approx(2.75)


def test_dr_grpo_sum_norm_by_hand():
  # (1 + 2 + 4) / (2 sequences x T=3)
  assert float(aggregate(VALUES, WEIGHTS, mode="seq-mean-token-sum-norm")) == pytest.approx(7 / 6)


def test_token_mean_normalises_by_kept_weights():
  # An entropy mask keeping one token per sequence: the mean over the kept tokens only.
  kept = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  assert float(aggregate(VALUES, kept, mode="token-mean")) == pytest.approx(3.0)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_empty_selection_is_zero_not_nan(mode):
  assert float(aggregate(VALUES, jnp.zeros_like(VALUES), mode=mode)) == 0.0


def test_ppo_clip_by_hand():
  old = jnp.zeros(4)
  logp = jnp.log(jnp.array([1.5, 0.5, 1.5, 0.5]))
  adv = jnp.array([1.0, 1.0, -1.0, -1.0])
  surr, clipped = ppo_clip_surrogate(logp, old, adv, clip_low=0.2, clip_high=0.28)
  # A>0: min(1.5, 1.28) = 1.28; min(0.5, 0.8) = 0.5.  A<0: min(-1.5, -1.28) = -1.5; min(-0.5, -0.8) = -0.8
  np.testing.assert_allclose(surr, [1.28, 0.5, -1.5, -0.8], rtol=1e-6)
  np.testing.assert_array_equal(clipped, [True, False, False, True])


def test_kl_k3_is_zero_at_equality_and_positive_elsewhere():
  lp = jnp.log(jnp.array([0.2, 0.5]))
  np.testing.assert_allclose(kl_k3(lp, lp), 0.0, atol=1e-7)
  assert np.all(kl_k3(lp, lp + 0.3) > 0)


@pytest.mark.parametrize("kwargs,field", [({"aggregation": "sum"}, "aggregation"),
                                          ({"clip_low": -0.1}, "clip_low"), ({"clip_low": 1.0}, "clip_low")])
def test_bad_loss_config_names_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    LossConfig(**kwargs)
