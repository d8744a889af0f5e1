"""Every registered credit method in the train step; equivalences with GRPO; NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.credit import credit_names, make_credit
from tcred.credit.base import CreditInputs
from tcred.credit.controls import CREDIT_KEY, credit_key_data
from tcred.credit.token_signals import dro_rewards
from tcred.signals.registry import normalised_magnitude as information_weights
from tcred.credit.tree import tree_extras
from tcred.judges.credit import token_steps
from tcred.sampling.tree import tree_arrays
from tcred.sampling.rollout import Trees
from tcred.losses.pg import LossConfig
from tcred.training.optim import adamw
from tcred.training.step import Batch, TrainState, rl_train_step

B, G, P, T, J = 2, 4, 4, 6, 4


def _extras(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  return {"mi": jax.random.uniform(k[0], (B, G, T)), "info_gain": jax.random.normal(k[1], (B, G, T)),
          "ref_logp": -jax.random.uniform(k[2], (B, G, J)) * 3, "ref_std": jnp.ones((B, J)),
          "answer_valid": jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)}


def _lengths():
  return jax.random.randint(jax.random.split(jax.random.key(3), 3)[0], (B, G, 1), 2, T + 1)


def _chain_forest(num_trees):
  """Tree extras for G independent chains: one tree per chain (num_trees = G) or all under one root (1)."""
  length = np.asarray(_lengths())[..., 0]
  tree_id = np.zeros((B, G), np.int32) if num_trees == 1 else np.tile(np.arange(G, dtype=np.int32), (B, 1))
  source, fork_pos = np.full((B, G), -1, np.int32), np.zeros((B, G), np.int32)
  arrays = [tree_arrays(source[b], fork_pos[b], length[b], tree_id[b], trees=num_trees, max_new_tokens=T)
            for b in range(B)]
  return {k: jnp.asarray(v) for k, v in tree_extras(Trees(source, fork_pos, tree_id, arrays, 0)).items()}


def _judge_extras():
  """Judge scores of two steps per rollout (ends at tokens 1 and 2)."""
  steps = np.stack([np.stack([token_steps([1, 2], int(n), T) for n in row]) for row in np.asarray(_lengths())[..., 0]])
  scores = np.zeros((B, G, T + 1), np.float32)
  scores[..., :3] = np.random.default_rng(0).random((B, G, 3))
  return {"judge_scores": jnp.asarray(scores), "judge_valid": jnp.asarray(np.arange(T + 1) < 3) & jnp.ones((B, G, 1), bool),
          "judge_steps": jnp.asarray(steps)}


def _batch(extras=None):
  k = jax.random.split(jax.random.key(3), 3)
  mask = jnp.arange(T)[None, None, :] < _lengths()
  return Batch(prompt=jax.random.randint(k[1], (B, P), 3, 99), prompt_valid=jnp.ones((B, P), bool),
               response=jnp.where(mask, jax.random.randint(k[2], (B, G, T), 3, 99), 0), mask=mask,
               old_logp=jnp.full((B, G, T), -4.0) * mask,
               rewards=jnp.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]]),
               group_valid=jnp.ones((B,), bool),
               extras={**_extras(), **_chain_forest(1), **_judge_extras(),
                       CREDIT_KEY: jnp.asarray(credit_key_data(jax.random.key(5), B))} if extras is None else extras)


def _train(model, credit, batch, steps=2):
  graphdef, params = nnx.split(model)
  params = jax.tree.map(jnp.copy, params)
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=0.0)
  state = TrainState(params, tx.init(params), jnp.int32(0))
  metrics = None
  for _ in range(steps):
    state, metrics = rl_train_step(state, batch, None, graphdef=graphdef, tx=tx, credit=credit,
                                   loss_config=LossConfig(), temperature=1.0)
  return state.params, metrics


# The generic signal methods equal their named instances at defaults (tests/credit/test_signal_methods.py), and
# surprisal-weight is mi-weight's code on another signal: their full train steps run with -m slow (CI time).
# judge: its credit is checked against a reference and trains bit-for-bit like grpo at λ = 0
# (tests/credit/test_judge_method.py), and the judge-oracle CLI test runs its train step.
# The controls: `shuffled` at its defaults wraps `verifier` and draws from the credit key in the train step;
# policy-value, verifier and random-mask are checked on hand-computed cases (tests/credit/test_controls.py).
_SLOW_TO_TRAIN = ("signal-mask", "signal-peaks", "signal-weight", "surprisal-weight", "judge", "policy-value",
                  "verifier", "random-mask")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_TO_TRAIN else n
                                  for n in credit_names()])
def test_every_credit_method_trains(tiny_model, name):
  params, m = _train(tiny_model, make_credit(name), _batch())
  assert np.isfinite(float(m["loss/total"])) and float(m["optim/skipped"]) == 0.0
  assert 0.0 <= float(m["credit/kept_token_frac"]) <= 1.0


def _assert_same(p1, p2):
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_entropy_mask_rho_1_trains_exactly_like_grpo(tiny_model):
  batch = _batch()
  grpo, _ = _train(tiny_model, make_credit("outcome"), batch)
  ent, m = _train(tiny_model, make_credit("entropy-mask", rho=1.0), batch)
  _assert_same(grpo, ent)
  assert float(m["credit/kept_token_frac"]) == 1.0


@pytest.mark.slow  # ~10 s (CI time)
def test_mi_weight_with_equal_gains_trains_exactly_like_grpo(tiny_model):
  extras = {**_extras(), "info_gain": jnp.full((B, G, T), 0.25)}  # exact in binary: weights are exactly 1
  grpo, _ = _train(tiny_model, make_credit("outcome"), _batch(extras))
  miw, _ = _train(tiny_model, make_credit("mi-weight"), _batch(extras))
  _assert_same(grpo, miw)


def test_tree_grpo_on_one_chain_per_tree_trains_exactly_like_grpo(tiny_model):
  # Trees of one leaf have no intra-tree term; the inter-tree term is GRPO's advantage.
  grpo, _ = _train(tiny_model, make_credit("outcome"), _batch())
  tree, _ = _train(tiny_model, make_credit("tree-grpo"), _batch({**_extras(), **_chain_forest(G)}))
  _assert_same(grpo, tree)


def test_treerl_on_chains_under_one_root_is_twice_dr_grpo():
  # One root, G chains as its children: A = 2·(r − mean r) on every token (|L(s)| = 1).
  batch = _batch()
  inputs = CreditInputs(rewards=batch.rewards, mask=batch.mask, group_valid=batch.group_valid,
                        entropy=jnp.zeros(batch.mask.shape), logp=jnp.zeros(batch.mask.shape),
                        old_logp=batch.old_logp, extras=batch.extras)
  tree = make_credit("treerl")(inputs)
  dr = make_credit("outcome", mode="dr-grpo")(inputs)
  np.testing.assert_allclose(tree.advantages, np.where(batch.mask, 2 * dr.advantages, 0.0), atol=1e-6)


def test_dro_with_zero_coef_trains_exactly_like_grpo(tiny_model):
  batch = _batch()
  grpo, _ = _train(tiny_model, make_credit("outcome"), batch)
  dro, _ = _train(tiny_model, make_credit("dro-r3", coef=0.0), batch)
  _assert_same(grpo, dro)


def test_entropy_mask_keeps_top_fraction_of_valid_tokens():
  mask = jnp.ones((1, 2, 5), bool).at[0, 1, 3:].set(False)  # 8 valid tokens
  ent = jnp.arange(10, dtype=jnp.float32).reshape(1, 2, 5)
  inputs = CreditInputs(rewards=jnp.array([[1.0, 0.0]]), mask=mask, group_valid=jnp.ones(1, bool), entropy=ent,
                        logp=jnp.zeros_like(ent), old_logp=jnp.zeros_like(ent), extras={})
  out = make_credit("entropy-mask", rho=0.25)(inputs)  # ceil(0.25 * 8) = 2 tokens: entropies 7 and 6
  kept = np.asarray(out.weights > 0)
  assert kept.sum() == 2 and kept[0, 1, 1] and kept[0, 1, 2]
  bottom = make_credit("entropy-mask", rho=0.25, keep="bottom")(inputs)
  assert np.asarray(bottom.weights > 0).sum() == 6


def test_information_weights_numpy_reference():
  ig = np.array([[0.5, -1.5, 0.0, 9.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  ref = np.zeros_like(ig)
  for i in range(2):
    mag = np.abs(ig[i][mask[i]])
    ref[i][mask[i]] = mag / mag.mean() if mag.mean() > 0 else 1.0
  np.testing.assert_allclose(information_weights(jnp.asarray(ig), jnp.asarray(mask)), ref, rtol=1e-6)


def test_dro_rewards_numpy_reference():
  ref_logp = np.array([[-1.0, -2.0, -0.5], [-3.0, -2.0, -0.5], [-2.0, -2.0, -9.0]], np.float32)
  valid = np.array([True, True, False])
  rewards = np.array([1.0, 0.0, 0.0], np.float32)
  sigma = ref_logp[:, valid].std(axis=0)
  w = sigma / sigma.mean()
  r3 = (ref_logp[:, valid] * w).sum(axis=1) / valid.sum()
  mixed, got_r3 = dro_rewards(jnp.asarray(ref_logp), jnp.asarray(valid), jnp.asarray(rewards), coef=0.5)
  np.testing.assert_allclose(got_r3, r3, rtol=1e-5)
  np.testing.assert_allclose(mixed, rewards + 0.5 * r3, rtol=1e-5)


@pytest.mark.parametrize("name,kwargs,field", [("entropy-mask", {"rho": 0.0}, "rho"),
                                               ("entropy-mask", {"keep": "middle"}, "keep"),
                                               ("mi-weight", {"mix": 2.0}, "mix"),
                                               ("variance-filter", {"quantile": 1.0}, "quantile"),
                                               ("outcome", {"mode": "ppo"}, "mode")])
def test_bad_credit_settings_name_the_field(name, kwargs, field):
  with pytest.raises(ValueError, match=field):
    make_credit(name, **kwargs)


def test_unknown_credit_method_lists_allowed():
  with pytest.raises(ValueError, match="allowed"):
    make_credit("nope")
