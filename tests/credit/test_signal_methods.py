"""The generic signal credit methods (`signal-mask`, `signal-peaks`, `signal-weight`) and their named instances
(`entropy-mask`, `mi-peaks`, `mi-weight`, `surprisal-top20`, `surprisal-weight`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.credit import make_credit
from tcred.credit.base import CreditInputs
from tcred.credit.extras import extras_plan, extras_token_count, validate_extras
from tcred.experiments import get_experiment
from tcred.signals.information import MIInputs

B, G, T = 2, 3, 5


def _inputs(seed=0) -> CreditInputs:
  rng = np.random.default_rng(seed)
  mask = np.arange(T)[None, None, :] < rng.integers(1, T + 1, size=(B, G, 1))
  return CreditInputs(rewards=jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), mask=jnp.asarray(mask),
                      group_valid=jnp.asarray([True, True]),
                      entropy=jnp.asarray(rng.uniform(0, 3, (B, G, T)), jnp.float32),
                      logp=jnp.asarray(-rng.uniform(0, 5, (B, G, T)), jnp.float32),
                      old_logp=jnp.asarray(-rng.uniform(0, 5, (B, G, T)), jnp.float32),
                      extras={"mi": jnp.asarray(rng.uniform(size=(B, G, T)), jnp.float32),
                              "info_gain": jnp.asarray(rng.normal(size=(B, G, T)), jnp.float32)})


@pytest.mark.parametrize("named, generic", [
    (("entropy-mask", {}), ("signal-mask", {"signal": "entropy"})),
    (("entropy-mask", {"rho": 0.5, "keep": "bottom"}), ("signal-mask", {"signal": "entropy", "rho": 0.5,
                                                                       "keep": "bottom"})),
    (("surprisal-top20", {}), ("signal-mask", {"signal": "surprisal", "rho": 0.2})),
    (("mi-peaks", {"peak_rule": "top-k", "peak_k": 2}), ("signal-peaks", {"peak_rule": "top-k", "peak_k": 2})),
    (("mi-weight", {"mix": 0.5}), ("signal-weight", {"signal": "info-gain", "mix": 0.5})),
    (("surprisal-weight", {}), ("signal-weight", {"signal": "surprisal"})),
])
def test_named_methods_are_the_generic_rule_on_their_signal(named, generic):
  a, b = make_credit(named[0], **named[1]), make_credit(generic[0], **generic[1])
  assert a.needs_extras == b.needs_extras and "signal" not in dataclasses.asdict(a)  # configs keep their fields
  inputs = _inputs()
  x, y = jax.jit(lambda i: a(i))(inputs), jax.jit(lambda i: b(i))(inputs)
  np.testing.assert_array_equal(x.advantages, y.advantages)
  np.testing.assert_array_equal(x.weights, y.weights)


def test_metric_names_of_the_named_methods():
  """Metric names are part of the logged results: the named methods keep theirs."""
  inputs = _inputs()
  names = {m: set(jax.eval_shape(make_credit(m), inputs).metrics) for m in ("entropy-mask", "mi-peaks", "mi-weight",
                                                            "surprisal-top20", "surprisal-weight", "signal-peaks")}
  assert names == {"entropy-mask": {"kept_entropy"}, "mi-peaks": set(), "mi-weight": {"ig_weight_max"},
                   "surprisal-top20": {"kept_surprisal"}, "surprisal-weight": {"surprisal_weight_max"},
                   "signal-peaks": {"kept_hsic_mi"}}


def test_surprisal_weight_by_hand():
  # One group of G = 2, rewards (1, 0): GRPO A = ±0.5 / (0.5 + 1e-6). Rollout 0 has logp (−1, −2, −3), so
  # s = (1, 2, 3), mean 2, weights (0.5, 1, 1.5); rollout 1 has one valid token: weight 1.
  inputs = CreditInputs(rewards=jnp.array([[1.0, 0.0]]), mask=jnp.array([[[1, 1, 1], [1, 0, 0]]], bool),
                        group_valid=jnp.array([True]), entropy=jnp.zeros((1, 2, 3)),
                        logp=jnp.array([[[-1.0, -2.0, -3.0], [-0.5, -9.0, -9.0]]]), old_logp=jnp.zeros((1, 2, 3)),
                        extras={})
  out = jax.jit(make_credit("surprisal-weight"))(inputs)
  a = 0.5 / (0.5 + 1e-6)
  np.testing.assert_allclose(out.advantages[0, 0], [0.5 * a, a, 1.5 * a], rtol=1e-6)
  np.testing.assert_allclose(out.advantages[0, 1, 0], -a, rtol=1e-6)
  np.testing.assert_allclose(out.metrics["surprisal_weight_max"], 1.5, rtol=1e-6)
  # surprisal-top20: ceil(0.2 · 4 valid tokens) = 1 token kept, the largest −log p (3.0)
  top = jax.jit(make_credit("surprisal-top20"))(inputs)
  np.testing.assert_array_equal(top.weights[0], [[0, 0, 1], [0, 0, 0]])
  np.testing.assert_allclose(top.metrics["kept_surprisal"], 3.0)


def test_settings_are_validated_with_the_allowed_values():
  with pytest.raises(ValueError, match=r"credit.signal: unknown token signal 'nope'; allowed: \['entropy'"):
    make_credit("signal-mask", signal="nope")
  with pytest.raises(ValueError, match="credit.rho must be in"):
    make_credit("surprisal-top20", rho=0.0)
  with pytest.raises(ValueError, match="has no setting"):
    make_credit("surprisal-top20", signal="entropy")  # a named method's signal is fixed
  with pytest.raises(ValueError, match="credit.mode"):
    make_credit("signal-weight", mode="ppo")


def test_a_tree_signal_needs_tree_rollouts():
  credit = make_credit("signal-mask", signal="tree-sibling-gap")
  assert credit.needs_tree and credit.needs_extras == ()
  with pytest.raises(ValueError, match="needs tree rollouts"):
    dataclasses.replace(get_experiment("countdown-grpo"), credit=credit)


def test_surprisal_experiments_change_only_the_credit_method():
  for task in ("countdown", "graph-path", "long-addition"):
    base = get_experiment(f"{task}-grpo")
    for suffix in ("surprisal-top20", "surprisal-weight"):
      cfg = get_experiment(f"{task}-{suffix}")
      assert cfg.credit.name == suffix
      assert cfg.method == suffix
      assert dataclasses.replace(cfg, name=base.name, description=base.description, method=base.method,
                                 credit=base.credit) == base


def test_extras_are_checked_in_one_place_and_counted_from_the_plan():
  with pytest.raises(ValueError, match=r"unknown extra signal\(s\) \['nope'\]; allowed: \['info_gain', 'ref_logp', "
                                       r"'ref_std', 'mi', 'grad_norm_hidden', 'grad_norm_unembed', 'ref_policy_logp'\]"):
    validate_extras(["mi", "nope"])
  shapes = dict(batch=2, group=3, prompt_len=5, response_len=4, answer_len=3, solution_len=7)
  packed = 2 * 3 * (5 + 4 + 4 * 2)
  # MI of another layer cannot reuse answer scoring's final hidden states: a plain forward runs too, and is counted
  # (the hand-written count before the registry missed it).
  other = MIInputs(layer=0)
  assert extras_plan(("info_gain", "mi"), other).response_forward and not extras_plan(("info_gain", "mi")).response_forward
  assert extras_token_count(("info_gain", "mi"), **shapes, mi=other) == packed + 2 * 3 * (5 + 4) + 2 * 7
  assert extras_token_count(("info_gain", "mi"), **shapes) == packed + 2 * 7


def test_rsi_s_keeps_the_band_by_hand():
  """One group of G = 2. Rollout 0: −log p (0.05, 1, 5) over H (1, 1, 1): RSI (0.05, 1, 5), only the middle
  token in [0.1, 3]; rollout 1: −log p 0.2 over H 0 (floored): RSI 2e7, dropped; padding never kept."""
  inputs = CreditInputs(rewards=jnp.array([[1.0, 0.0]]), mask=jnp.array([[[1, 1, 1], [1, 0, 0]]], bool),
                        group_valid=jnp.array([True]), entropy=jnp.array([[[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]]),
                        logp=jnp.array([[[-0.05, -1.0, -5.0], [-0.2, -1.0, -1.0]]]), old_logp=jnp.zeros((1, 2, 3)),
                        extras={})
  for jit in (False, True):
    method = make_credit("rsi-s")
    out = (jax.jit(method) if jit else method)(inputs)
    np.testing.assert_array_equal(out.weights[0], [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(out.metrics["kept_rsi_frac"], 1 / 4)
  wide = make_credit("rsi-s", rsi_min=0.0, rsi_max=10.0)(inputs)
  np.testing.assert_array_equal(wide.weights[0], [[1, 1, 1], [0, 0, 0]])
  with pytest.raises(ValueError, match="0 <= rsi_min < rsi_max"):
    make_credit("rsi-s", rsi_min=2.0, rsi_max=1.0)
