"""The signals of issues 23 (item 5) and 25 (item 3) beyond the registry-wide tests (`test_signal_registry.py`):
the GMTS gradient norms against explicit per-token gradients, the random control's draws and keys, the entropy
bound's share, Δlog p's reference policy, and their place in the study's rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from tcred.credit import make_credit
from tcred.credit.extras import check_reference, extras_plan, extras_token_count
from tcred.evaluation import identify as idf
from tcred.models.logprobs import token_grad_norms, token_logprobs_and_entropy
from tcred.signals import controls, registry
from tcred.testing import numpy_refs


@pytest.mark.parametrize("chunk,vocab_chunk,tau", [(4, 5, 1.0), (3, 13, 0.7), (64, 4, 1.3)])
def test_grad_norms_match_explicit_gradients(chunk, vocab_chunk, tau):
  """Closed form, streamed over vocabulary blocks (a shifted last block when V % block != 0) and token chunks
  (N padded up to a multiple), against each token's whole logits and explicit gradient."""
  rng = np.random.default_rng(chunk)
  h = rng.normal(size=(2, 5, 8)).astype(np.float32)
  u = rng.normal(size=(8, 13)).astype(np.float32)
  y = rng.integers(0, 13, (2, 5))
  fn = jax.jit(lambda h, u, y: token_grad_norms(h, u, y, temperature=tau, chunk_size=chunk,
                                                vocab_chunk_size=vocab_chunk))
  h_norm, u_norm = fn(h, u, y)
  assert h_norm.shape == u_norm.shape == (2, 5) and h_norm.dtype == jnp.float32
  want_h, want_u = numpy_refs.token_grad_norms(h.reshape(-1, 8), u, y.reshape(-1), tau)
  np.testing.assert_allclose(np.asarray(h_norm).ravel(), want_h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(u_norm).ravel(), want_u, rtol=1e-5, atol=1e-6)
  # = jax.grad of the fused log-prob itself (the function training differentiates)
  grad_h = jax.grad(lambda hh: token_logprobs_and_entropy(hh, u, y, temperature=tau)[0].sum())(h)
  np.testing.assert_allclose(np.asarray(h_norm), np.linalg.norm(grad_h, axis=-1), rtol=1e-5, atol=1e-6)


def test_grad_norms_by_hand():
  """Two tokens, p = (1/2, 1/2) (h = 0): ∂log p_0/∂h = (U_0 − (U_0 + U_1)/2) = (U_0 − U_1)/2; ∂/∂U = 0 (h = 0)."""
  u = np.array([[3.0, -1.0], [0.0, 4.0]], np.float32)  # D = 2, V = 2: columns U_0 = (3, 0), U_1 = (−1, 4)
  h_norm, u_norm = token_grad_norms(np.zeros((1, 2), np.float32), u, np.array([0]), temperature=1.0)
  np.testing.assert_allclose(np.asarray(h_norm), [np.hypot(2.0, 2.0)], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(u_norm), [0.0], atol=1e-7)


def test_random_control_is_uniform_keyed_and_fresh_per_batch():
  mask = np.ones((64, 64), bool)
  fn = jax.jit(controls.random_scores)
  key = np.asarray(jax.random.key_data(jax.random.key(3)))
  u = np.asarray(fn(key, mask)).ravel()
  assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3  # Uniform[0, 1) (4,096 draws)
  np.testing.assert_array_equal(np.asarray(fn(key, mask)), u.reshape(64, 64))  # a pure function of the key
  other = np.asarray(fn(np.asarray(jax.random.key_data(jax.random.key(4))), mask)).ravel()
  assert abs(scipy.stats.spearmanr(u, other).statistic) < 0.1  # another key, independent draws
  # training's keys: a pure function of the batch, one per group, new when the sampled log-probs change
  logp = -np.random.default_rng(0).uniform(0, 3, (3, 2, 4)).astype(np.float32)
  m = np.ones(logp.shape, bool)
  k1 = np.asarray(jax.jit(controls.batch_group_keys)(logp, m))
  assert k1.shape == (3, 2) and k1.dtype == np.uint32 and len({tuple(k) for k in k1}) == 3
  np.testing.assert_array_equal(np.asarray(controls.batch_group_keys(logp, m)), k1)
  assert not np.array_equal(np.asarray(controls.batch_group_keys(logp + 0.5, m)), k1)
  # padding does not enter the hash
  m2 = m.copy()
  m2[0, 0, 3] = False
  np.testing.assert_array_equal(np.asarray(controls.batch_group_keys(np.where(m2, logp, 9.0), m2)),
                                np.asarray(controls.batch_group_keys(logp, m2)))


def test_entropy_bound_share_by_hand():
  ig = np.array([[0.5, -2.0, 0.1, 3.0]], np.float32)
  ent = np.array([[1.0, 1.5, 0.0, 5.0]], np.float32)
  mask = np.array([[True, True, True, False]])
  excess = controls.entropy_bound_excess(ig, ent, mask)
  np.testing.assert_allclose(np.asarray(excess), [[0.0, 0.5, 0.1, 0.0]], rtol=1e-6)
  assert float(controls.bound_violation_share(excess, mask)) == pytest.approx(2 / 3)  # 2 of 3 valid tokens
  assert float(controls.bound_violation_share(excess, np.zeros_like(mask))) == 0.0


def test_delta_logp_needs_a_reference_policy():
  assert registry.get_signal("delta-logp").needs_extras == ("ref_policy_logp",)
  assert registry.get_signal("delta-logp").needs_reference
  with pytest.raises(ValueError, match="need a reference policy"):
    check_reference(("ref_policy_logp",), None)
  check_reference(("ref_policy_logp",), {"params": 0})
  check_reference(("grad_norm_hidden",), None)
  plan = extras_plan(("ref_policy_logp", "grad_norm_hidden"))
  assert plan.reference_forward and plan.policy_forward and not plan.answer_scoring and not plan.solution_forward
  # one plain response forward each (P + T per rollout), nothing else
  assert extras_token_count(("ref_policy_logp", "grad_norm_hidden"), batch=2, group=3, prompt_len=4,
                            response_len=5, answer_len=6, solution_len=7) == 2 * (2 * 3 * (4 + 5))
  # trainable by name once a run has a reference (its base): signal-mask on it asks for the extra
  assert make_credit("signal-mask", signal="delta-logp").needs_extras == ("ref_policy_logp",)
  assert make_credit("signal-mask", signal="gmts-hidden").needs_extras == ("grad_norm_hidden",)


def test_study_rows_and_roles():
  rows = idf.signal_names(trees=False)
  assert {"random", "entropy-bound", "gmts-hidden", "gmts-unembed"} <= set(rows)
  assert "delta-logp" not in rows  # needs a reference policy beside the policy under study
  assert registry.get_signal("random").role == "control" and registry.get_signal("entropy-bound").role == "diagnostic"
  assert "random" not in registry.signal_names(roles=("signal",))
  with pytest.raises(ValueError, match="role"):
    registry.TokenSignal(name="x", description="x", fn=lambda m: m, inputs=("mask",), role="nope")


@pytest.mark.slow  # ~20 s: compiles compute_extras with a model forward
def test_extras_give_the_policy_s_grad_norms_and_the_reference_s_logprobs(tiny_model):
  from flax import nnx

  from tcred.credit.extras import compute_extras
  from tcred.models.forward import _response_states, response_logprobs

  graphdef, params = nnx.split(tiny_model)
  ref = jax.tree.map(lambda x: x * 0.9, params)
  b, g, p, t, j = 2, 2, 3, 4, 2
  mask = jnp.arange(t)[None, None, :] < jnp.array([[[4], [2]], [[3], [1]]])
  args = (jnp.full((b, p), 5).at[:, 0].set(1), jnp.ones((b, p), bool), jnp.where(mask, 7, 0).at[:, :, 1].set(8) * mask,
          mask, jnp.full((b, j), 6), jnp.ones((b, j), bool), jnp.full((b, 3), 5), jnp.ones((b, 3), bool))
  names = ("grad_norm_hidden", "grad_norm_unembed", "ref_policy_logp")
  with pytest.raises(ValueError, match="reference policy"):
    compute_extras(graphdef, params, *args, names=names, temperature=1.0, cue_id=6)
  out = compute_extras(graphdef, params, *args, names=names, temperature=1.0, cue_id=6, ref_params=ref)
  want_ref, _ = response_logprobs(graphdef, ref, *args[:4], temperature=1.0, chunk_size=1024)
  np.testing.assert_allclose(np.asarray(out["ref_policy_logp"]), np.where(mask, want_ref, 0.0), rtol=1e-5, atol=1e-6)
  # the GMTS norms of the policy's own final states (numpy_refs: each token's whole logits and gradient)
  hidden, unembed, targets = _response_states(graphdef, params, *args[:4])
  want_h, want_u = numpy_refs.token_grad_norms(np.asarray(hidden).reshape(-1, hidden.shape[-1]), np.asarray(unembed),
                                               np.asarray(targets).ravel(), 1.0)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(out["grad_norm_hidden"]), np.where(valid, want_h.reshape(b, g, t), 0.0),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["grad_norm_unembed"]), np.where(valid, want_u.reshape(b, g, t), 0.0),
                             rtol=1e-4, atol=1e-5)
