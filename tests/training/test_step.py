import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.credit import make_credit
from tcred.losses.pg import LossConfig
from tcred.training.optim import adamw
from tcred.training.step import Batch, TrainState, rl_train_step

B, G, P, T = 2, 3, 4, 5


def _batch(seed=0, rewards=None):
  k = jax.random.split(jax.random.key(seed), 3)
  mask = jnp.arange(T)[None, None, :] < jax.random.randint(k[0], (B, G, 1), 2, T + 1)
  return Batch(
      prompt=jax.random.randint(k[1], (B, P), 3, 99).at[:, 0].set(1), prompt_valid=jnp.ones((B, P), bool),
      response=jnp.where(mask, jax.random.randint(k[2], (B, G, T), 3, 99), 0), mask=mask,
      old_logp=jnp.full((B, G, T), -4.0) * mask,
      rewards=jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]) if rewards is None else rewards,
      group_valid=jnp.ones((B,), bool), extras={})


def _state(model, tx):
  graphdef, params = nnx.split(model)
  params = jax.tree.map(jnp.copy, params)  # the step donates its state
  return graphdef, TrainState(params, tx.init(params), jnp.int32(0))


def _step(state, batch, graphdef, tx, credit=None, loss=LossConfig()):
  return rl_train_step(state, batch, None, graphdef=graphdef, tx=tx,
                       credit=credit or make_credit("outcome"), loss_config=loss, temperature=1.0)


@pytest.mark.slow  # ~11 s (CI time); the compile cache is exercised by every run test too
def test_second_call_does_not_recompile(tiny_model):
  tx = adamw(1e-3, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  graphdef, state = _state(tiny_model, tx)
  state, _ = _step(state, _batch(0), graphdef, tx)
  before = rl_train_step._cache_size()
  state, m = _step(state, _batch(1), graphdef, tx)
  assert rl_train_step._cache_size() == before
  assert int(state.step) == 2 and np.isfinite(m["loss/total"])


@pytest.mark.slow  # ~27 s (CI time); every method trains in tests/credit/test_methods.py
def test_update_raises_logprob_of_rewarded_rollouts(tiny_model):
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=0.0)
  graphdef, state = _state(tiny_model, tx)
  batch = _batch(0)
  from tcred.models.forward import response_logprobs
  lp0, _ = response_logprobs(graphdef, state.params, batch.prompt, batch.prompt_valid, batch.response,
                             batch.mask, temperature=1.0, chunk_size=64)
  batch = batch._replace(old_logp=jnp.where(batch.mask, lp0, 0.0))
  for _ in range(3):
    state, _ = _step(state, batch, graphdef, tx)
  lp1, _ = response_logprobs(graphdef, state.params, batch.prompt, batch.prompt_valid, batch.response,
                             batch.mask, temperature=1.0, chunk_size=64)
  seq_delta = jnp.sum(jnp.where(batch.mask, lp1 - lp0, 0.0), axis=-1)  # [B, G]
  winners = batch.rewards > batch.rewards.mean(axis=1, keepdims=True)
  assert float(jnp.mean(seq_delta[winners])) > float(jnp.mean(seq_delta[~winners]))


def test_all_equal_rewards_give_zero_gradient_step(tiny_model):
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=0.0)
  graphdef, state = _state(tiny_model, tx)
  before = jax.tree.map(np.asarray, state.params)
  state, m = _step(state, _batch(0, rewards=jnp.ones((B, G))), graphdef, tx)
  assert float(m["optim/grad_norm"]) == 0.0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_zero_gradient_after_a_step_moves_the_policy_unless_held(tiny_model):
  """After a real update, a zero-gradient step (all rewards equal) still moves the parameters along Adam's
  momentum; `hold_on_zero_grad` leaves parameters, optimizer state and step count as they were."""
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=0.0)
  moved = {}
  for hold in (False, True):
    graphdef, state = _state(tiny_model, tx)
    state, _ = rl_train_step(state, _batch(0), None, graphdef=graphdef, tx=tx, credit=make_credit("outcome"),
                             loss_config=LossConfig(), temperature=1.0, hold_on_zero_grad=hold)
    before = jax.tree.map(np.asarray, (state.params, state.opt_state))
    state, m = rl_train_step(state, _batch(0, rewards=jnp.ones((B, G))), None, graphdef=graphdef, tx=tx,
                             credit=make_credit("outcome"), loss_config=LossConfig(), temperature=1.0,
                             hold_on_zero_grad=hold)
    assert float(m["optim/grad_norm"]) == 0.0 and float(m["optim/skipped"]) == 0.0
    moved[hold] = any(not np.array_equal(a, b)
                      for a, b in zip(jax.tree.leaves(before[0]), jax.tree.leaves(state.params)))
    if hold:
      assert float(m["optim/held"]) == 1.0 and int(state.step) == 1
      for a, b in zip(jax.tree.leaves(before), jax.tree.leaves((state.params, state.opt_state))):
        np.testing.assert_array_equal(a, b)
    else:
      assert "optim/held" not in m and int(state.step) == 2
  assert moved == {False: True, True: False}


def test_non_finite_loss_skips_update(tiny_model):
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  graphdef, state = _state(tiny_model, tx)
  before = jax.tree.map(np.asarray, state.params)
  bad = _batch(0)._replace(old_logp=jnp.full((B, G, T), jnp.nan))
  state, m = _step(state, bad, graphdef, tx)
  assert float(m["optim/skipped"]) == 1.0 and int(state.step) == 0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_non_finite_updated_state_skips_update(tiny_model):
  """A finite loss and gradient whose update is non-finite (here an overflowed first moment of
  AdamW; before configs refused it, `rl.lr=inf` did the same) leaves the parameters unchanged and
  is counted as skipped. Same optimizer as the test above: the compiled step is reused."""
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  graphdef, state = _state(tiny_model, tx)
  before = jax.tree.map(np.asarray, state.params)
  inf_moments = jax.tree.map(lambda x: jnp.full_like(x, jnp.inf) if x.ndim >= 1 and x.dtype == jnp.float32 else x,
                             state.opt_state)
  state, m = _step(state._replace(opt_state=inf_moments), _batch(0), graphdef, tx)
  assert np.isfinite(float(m["loss/total"])) and np.isfinite(float(m["optim/grad_norm"]))
  assert float(m["optim/skipped"]) == 1.0 and int(state.step) == 0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_filler_groups_do_not_train(tiny_model):
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=0.0)
  graphdef, s1 = _state(tiny_model, tx)
  _, s2 = _state(tiny_model, tx)
  batch = _batch(0)
  only_first = batch._replace(group_valid=jnp.array([True, False]))
  zeroed = batch._replace(rewards=batch.rewards.at[1].set(0.0), group_valid=jnp.array([True, False]))
  s1, _ = _step(s1, only_first, graphdef, tx)
  s2, _ = _step(s2, zeroed, graphdef, tx)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_kl_penalty_is_zero_at_the_reference_and_grows_after_updates(tiny_model):
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=0.0)
  graphdef, state = _state(tiny_model, tx)
  ref = jax.tree.map(jnp.copy, state.params)
  loss = LossConfig(kl_coef=0.1)
  kls = []
  for i in range(3):
    state, m = rl_train_step(state, _batch(i), ref, graphdef=graphdef, tx=tx, credit=make_credit("outcome"),
                             loss_config=loss, temperature=1.0)
    kls.append(float(m["loss/kl"]))
  assert kls[0] == pytest.approx(0.0, abs=1e-6)
  assert kls[2] > 1e-6
