"""The target of issue 12 (README "Add a method"): a new token signal that is both trainable by name and
studied by `tcred identify` is one pure function plus one registration, plus one line per experiment.

The throwaway signal below is exactly what the README walks through; nothing else in tcred is touched.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred import experiments
from tcred.credit import make_credit
from tcred.credit.base import CreditInputs
from tcred.evaluation import identify as idf
from tcred.evaluation.identify import signals as study_signals
from tcred.experiments import registry as experiment_registry
from tcred.experiments.defaults import register_method
from tcred.losses.pg import LossConfig
from tcred.signals.registry import TokenSignal, register_signal, unregister_signal
from tcred.training.optim import adamw
from tcred.training.step import Batch, TrainState, rl_train_step


# --- 1. one pure function of one group (README "Add a method") -------------------------------------------------
def confident_mistake(logp, entropy, mask):
  """`[G, T]`: −log p of the sampled token where the policy was sure of another one, `(−log p_t) · exp(−H_t)`."""
  return jnp.where(mask, -logp * jnp.exp(-entropy), 0.0)


@pytest.fixture
def registered(monkeypatch, request):
  # --- 2. one registration ---------------------------------------------------------------------------------------
  register_signal(TokenSignal(name="confident-mistake", description="−log p · exp(−H): surprising and confident",
                              fn=confident_mistake, inputs=("logp", "entropy", "mask")))
  request.addfinalizer(lambda: unregister_signal("confident-mistake"))
  experiment_registry.load()
  for name in ("_EXPERIMENTS", "_FAMILIES"):  # test-local registrations
    monkeypatch.setattr(experiment_registry, name, dict(getattr(experiment_registry, name)))
  # --- 3. one line per experiment (in a file of experiments/, or here) ------------------------------------------
  register_method("confident-top20", "top-20% confident mistakes", lambda c: dataclasses.replace(
      c, credit=make_credit("signal-mask", signal="confident-mistake", rho=0.2)), tasks=("countdown",))


def test_a_new_signal_is_trainable_by_name(registered):
  cfg = experiments.get_experiment("countdown-confident-top20")
  assert cfg.credit.needs_extras == () and not cfg.credit.needs_tree
  # the experiment's credit method on a batch, as the train step calls it: the top-20% tokens by the new signal
  rng = np.random.default_rng(0)
  mask = np.ones((1, 2, 5), bool)
  inputs = CreditInputs(rewards=jnp.array([[1.0, 0.0]]), mask=jnp.asarray(mask), group_valid=jnp.array([True]),
                        entropy=jnp.asarray(rng.uniform(0, 2, (1, 2, 5)), jnp.float32),
                        logp=jnp.asarray(-rng.uniform(0, 3, (1, 2, 5)), jnp.float32),
                        old_logp=jnp.zeros((1, 2, 5)), extras={})
  credit = jax.jit(cfg.credit)(inputs)
  score = confident_mistake(inputs.logp, inputs.entropy, mask)
  top2 = np.sort(np.asarray(score).ravel())[-2:]  # ceil(0.2 · 10 tokens) = 2 kept
  np.testing.assert_array_equal(np.asarray(credit.weights) > 0, np.asarray(score) >= top2[0])
  np.testing.assert_allclose(credit.metrics["kept_confident_mistake"], top2.mean(), rtol=1e-6)


@pytest.mark.slow
def test_a_new_signal_trains_a_tiny_model(registered, tiny_model):
  cfg = experiments.get_experiment("countdown-confident-top20")
  # one train step of the tiny model with the experiment's credit method, as `tcred run` takes it
  b, g, p, t = 2, 3, 4, 5
  mask = jnp.arange(t)[None, None, :] < jnp.array([[[5], [3], [2]], [[4], [5], [1]]])
  batch = Batch(prompt=jnp.full((b, p), 5).at[:, 0].set(1), prompt_valid=jnp.ones((b, p), bool),
                response=jnp.where(mask, 7, 0), mask=mask, old_logp=jnp.full((b, g, t), -4.0) * mask,
                rewards=jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), group_valid=jnp.ones((b,), bool), extras={})
  tx = adamw(1e-3, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  graphdef, params = nnx.split(tiny_model)
  params = jax.tree.map(jnp.copy, params)
  state, metrics = rl_train_step(TrainState(params, tx.init(params), jnp.int32(0)), batch, None, graphdef=graphdef,
                                 tx=tx, credit=cfg.credit, loss_config=LossConfig(), temperature=1.0)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss/total"]))
  assert np.isfinite(float(metrics["credit/kept_confident_mistake"]))


def test_a_new_signal_is_studied_by_identify(registered):
  assert "confident-mistake" in idf.signal_names(trees=False)
  assert idf.describe_signals()["confident-mistake"].startswith("−log p · exp(−H)")
  # the study's rows for its rollouts (here a made-up batch of 2 prompts × 3 rollouts)
  rng = np.random.default_rng(0)
  mask = np.arange(4)[None, None, :] < rng.integers(1, 5, size=(2, 3, 1))
  rollout = idf.Rollout(None, None, None, None, mask, np.zeros((2, 3), np.float32), None)
  policy = {"logp": -rng.uniform(0, 3, (2, 3, 4)).astype(np.float32),
            "entropy": rng.uniform(0, 2, (2, 3, 4)).astype(np.float32)}
  got = study_signals.compute_signals(["confident-mistake"], rollout, None, policy, {}, None)["confident-mistake"]
  want = np.where(mask, -policy["logp"] * np.exp(-policy["entropy"]), 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)
