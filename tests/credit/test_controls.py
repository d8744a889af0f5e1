"""The credit controls (issue 24): policy-value and verifier (positive), random-mask and shuffled (negative),
on hand-computed cases, plus their host arrays on hand-made countdown responses."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.credit import make_credit
from tcred.credit.base import CreditInputs
from tcred.credit.controls import (CREDIT_KEY, credit_key_data, random_token_mask, shuffle_permutation,
                                   shuffle_within_rows, verifier_step_rewards)
from tcred.judges.base import JudgeContext
from tcred.judges.credit import process_advantages, token_steps
from tcred.sampling.rollout import Groups
from tcred.sampling.sampler import Rollouts
from tcred.tasks.base import Problem
from tcred.tasks.registry import make_task

# ------------------------------------------------------------------ the doomed-rollout case of the issue

# Two rollouts of one prompt, three one-token steps each (then EOS, in the last step): oracle values
# [1, 1, 1, 1] (solved) and [1, 1, 0, 0] (the second step is fatal), rewards 1 and 0.
_T = 4
_SCORES = np.array([[[1, 1, 1, 1], [1, 1, 0, 0]]], np.float32)  # [B=1, G=2, K+1=4]


def _inputs(scores=_SCORES, rewards=((1.0, 0.0),), lengths=((4, 4),), ends=((1, 2, 3), (1, 2, 3)),
            group_valid=(True,), key_seed=0):
  scores = np.asarray(scores, np.float32)
  b, g, k1 = scores.shape
  lengths = np.asarray(lengths)
  t = _T if lengths.max() <= _T else int(lengths.max())
  steps = np.stack([np.stack([token_steps(list(ends[j]), int(lengths[i, j]), t) for j in range(g)])
                    for i in range(b)])
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  zeros = jnp.zeros(mask.shape)
  extras = {"judge_scores": jnp.asarray(scores), "judge_valid": jnp.ones((b, g, k1), bool),
            "judge_steps": jnp.asarray(steps),
            CREDIT_KEY: jnp.asarray(credit_key_data(jax.random.key(key_seed), b))}
  return CreditInputs(rewards=jnp.asarray(rewards, jnp.float32), mask=jnp.asarray(mask),
                      group_valid=jnp.asarray(group_valid), entropy=zeros, logp=zeros, old_logp=zeros, extras=extras)


def test_doomed_rollout_after_its_fatal_step():
  inputs = _inputs()
  methods = [make_credit("policy-value"), make_credit("policy-value", norm="group"),
             make_credit("verifier", outcome=False, lam=1.0),
             make_credit("verifier", outcome=False, lam=1.0, after_fatal="negative"), make_credit("verifier", lam=0.5)]
  judge, (pv, pv_group, vp, vn, v) = jax.jit(lambda x: (
      process_advantages(_SCORES[0], np.ones((2, 4), bool), x.extras["judge_steps"][0], x.mask[0]),
      [m(x).advantages[0] for m in methods]))(inputs)
  # Today's judge credit (kept as the `judge` method): group-normalised changes d = (0, 0, 0 | 0, −1, 0),
  # mean −1/6, std √5/6: a zero change scores (1/6) / (√5/6) = 1/√5 = 0.447, the doomed last step too.
  np.testing.assert_allclose(judge[1, 2], 1 / math.sqrt(5), atol=1e-5)
  # policy-value: A^π = V_k − V_{k−1}: 0, 0, 0 and 0, −1, 0 — nothing after the fatal step.
  np.testing.assert_allclose(pv, [[0, 0, 0, 0], [0, -1, 0, 0]], atol=1e-6)
  # Its norm="group" option is today's judge normaliser exactly.
  np.testing.assert_allclose(pv_group, judge, atol=1e-6)
  # verifier-process: r = +1, +1, +1 and +1, −1, 0 (after_fatal="negative": −1 on the last step).
  np.testing.assert_allclose(vp, [[1, 1, 1, 1], [1, -1, 0, 0]], atol=1e-6)
  np.testing.assert_allclose(vn, [[1, 1, 1, 1], [1, -1, -1, -1]], atol=1e-6)
  # verifier (outcome + λ·process, λ = 0.5): GRPO's ±1 plus 0.5·r; the doomed last step has the outcome alone.
  np.testing.assert_allclose(v, [[1.5, 1.5, 1.5, 1.5], [-0.5, -1.5, -1.0, -1.0]], atol=1e-5)


def test_verifier_step_rewards_hand_computed():
  values = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.float32)
  valid = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
  got = np.asarray(jax.jit(verifier_step_rewards)(values, valid))
  np.testing.assert_array_equal(got, [[0, 1, 1, -1, 0, 0], [0, 0, 0, 0, 0, 0], [0, -1, 0, 0, 0, 0]])
  neg = np.asarray(verifier_step_rewards(values, valid, after_fatal="negative"))
  np.testing.assert_array_equal(neg, [[0, 1, 1, -1, -1, -1], [0, -1, -1, 0, 0, 0], [0, -1, 0, 0, 0, 0]])
  # "local": a step after the fatal one gets its own label (+1 / −1, 0 unreadable); before it and at it the
  # labels are not read (the fatal step is −1 whatever its label says).
  labels = np.array([[9, -1, -1, 1, 1, -1], [9, 1, 0, -1, 1, 1], [9, 1, 1, 1, 1, 1]], np.float32)
  local = np.asarray(jax.jit(functools.partial(verifier_step_rewards, after_fatal="local"))(values, valid,
                                                                                            labels=labels))
  np.testing.assert_array_equal(local, [[0, 1, 1, -1, 1, -1], [0, 1, 0, 0, 0, 0], [0, -1, 0, 0, 0, 0]])
  with pytest.raises(ValueError, match="step labels"):
    verifier_step_rewards(values, valid, after_fatal="local")
  with pytest.raises(ValueError, match="step labels"):
    verifier_step_rewards(values, valid, labels=labels)


def test_policy_value_hand_computed_values_filler_and_lone_groups():
  # V = 0.5 (prompt), 0.75, 0.25, reward 0: A = +0.25, −0.5, −0.25 on steps of 2, 1 and 2 tokens (EOS in the last).
  scores = np.array([[[0.5, 0.75, 0.25, 0.0], [0.5, 0.5, 1.0, 1.0]]], np.float32)
  inputs = _inputs(scores, rewards=((0.0, 1.0),), lengths=((5, 4),), ends=((2, 3, 4), (1, 2, 3)))
  lone = _inputs(scores[:, :1], rewards=((0.0,),), lengths=((5,),), ends=((2, 3, 4),))
  pv, pv_reward = make_credit("policy-value"), make_credit("policy-value", lone="reward")
  out, filler, lone_zero, lone_reward = jax.jit(lambda x, y: (
      pv(x), pv(x._replace(group_valid=jnp.array([False]))), pv(y).advantages, pv_reward(y).advantages))(inputs, lone)
  np.testing.assert_allclose(np.asarray(out.advantages)[0],
                             [[0.25, 0.25, -0.5, -0.25, -0.25], [0, 0.5, 0, 0, 0]], atol=1e-6)
  np.testing.assert_array_equal(out.weights, inputs.mask)
  # value_se: mean over the 8 valid values of sqrt(V(1 − V)/16).
  v = scores.reshape(-1)
  np.testing.assert_allclose(out.metrics["value_se"], np.mean(np.sqrt(v * (1 - v) / 16)), rtol=1e-5)
  assert np.all(np.asarray(filler.advantages) == 0) and np.all(np.asarray(filler.weights) == 0)
  assert np.all(np.asarray(lone_zero) == 0)  # lone="zero"
  np.testing.assert_allclose(np.asarray(lone_reward)[0, 0], [0.25, 0.25, -0.5, -0.25, -0.25], atol=1e-6)


def _reference(values, valid, steps, mask, rewards, group_valid, *, lam, outcome, after_fatal, method, labels):
  """NumPy loops: the verifier's or policy-value's [B, G, T] advantages (module docstring of the controls)."""
  out = np.zeros(mask.shape)
  for b in range(mask.shape[0]):
    if not group_valid[b]:
      continue
    r = rewards[b]
    a = (r - r.mean()) / (r.std() + 1e-6) if outcome else np.zeros_like(r)
    for g in range(mask.shape[1]):
      k_max = int(valid[b, g].sum()) - 1
      per_step = np.zeros(k_max + 1)
      for k in range(1, k_max + 1):
        before, after = values[b, g, k - 1], values[b, g, k]
        if method == "policy-value":
          per_step[k] = after - before
        elif before >= 0.5:
          per_step[k] = 1.0 if after >= 0.5 else -1.0
        elif after_fatal == "local":
          per_step[k] = labels[b, g, k]
        else:
          per_step[k] = -1.0 if after_fatal == "negative" else 0.0
      for t in range(mask.shape[2]):
        if mask[b, g, t]:
          out[b, g, t] = a[g] + lam * (per_step[steps[b, g, t]] if steps[b, g, t] > 0 else 0.0)
  return out


@pytest.mark.parametrize("method, settings", [
    ("verifier", dict(lam=0.7)), ("verifier", dict(lam=1.0, outcome=False, after_fatal="negative")),
    ("verifier", dict(lam=0.5, after_fatal="local")), ("policy-value", {})])
def test_controls_equal_numpy_reference_and_vmap_per_prompt(method, settings):
  rng = np.random.default_rng(1)
  b, g, t = 3, 4, 8
  lengths = rng.integers(1, t + 1, size=(b, g))
  ends = [[sorted(rng.choice(np.arange(1, n + 1), size=min(int(n), int(rng.integers(0, 4))), replace=False).tolist())
           for n in row] for row in lengths]
  steps = np.stack([np.stack([token_steps(e, int(n), t) for e, n in zip(er, nr)]) for er, nr in zip(ends, lengths)])
  valid = np.zeros((b, g, t + 1), bool)
  values = np.zeros((b, g, t + 1), np.float32)
  for i in range(b):
    for j in range(g):
      k = len(ends[i][j])
      valid[i, j, :k + 1] = True
      if method == "verifier":  # monotone 0/1 oracle values: alive until a random fatal step
        values[i, j, :k + 1] = np.arange(k + 1) < rng.integers(0, k + 2)
      else:
        values[i, j, :k + 1] = rng.integers(0, 5, size=k + 1) / 4
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  rewards = rng.integers(0, 2, size=(b, g)).astype(np.float32)
  group_valid = np.array([True, True, False])
  labels = rng.integers(-1, 2, size=values.shape).astype(np.float32)  # right, wrong or unreadable
  zeros = jnp.zeros(mask.shape)
  extras = {"judge_scores": jnp.asarray(values), "judge_valid": jnp.asarray(valid), "judge_steps": jnp.asarray(steps)}
  if settings.get("after_fatal") == "local":
    extras["step_labels"] = jnp.asarray(labels)
  inputs = CreditInputs(rewards=jnp.asarray(rewards), mask=jnp.asarray(mask), group_valid=jnp.asarray(group_valid),
                        entropy=zeros, logp=zeros, old_logp=zeros, extras=extras)
  credit = make_credit(method, **settings)
  per_prompt = lambda x: jax.tree.map(lambda y: y[0], credit(jax.tree.map(lambda y: y[None], x)).advantages)
  got, vmapped = jax.jit(lambda x: (credit(x).advantages, jax.vmap(per_prompt)(x)))(inputs)
  want = _reference(values, valid, steps, mask, rewards, group_valid, lam=settings.get("lam", 1.0),
                    outcome=settings.get("outcome", method == "verifier"), after_fatal=settings.get("after_fatal"),
                    method=method, labels=labels)
  np.testing.assert_allclose(np.where(mask, got, 0.0), want, atol=1e-5)
  np.testing.assert_allclose(np.where(mask, vmapped, 0.0), want, atol=1e-5)


# ------------------------------------------------------------------ random mask


@pytest.mark.parametrize("rho", [0.2, 0.5, 1.0])
def test_random_mask_keeps_exactly_ceil_rho_n_of_each_response(rho):
  lengths = np.array([0, 1, 3, 5, 9, 10, 16])
  mask = np.arange(16)[None, :] < lengths[:, None]
  mask[4] = np.arange(16) % 2 == 1  # a row whose valid tokens are not a prefix (8 of them)
  kept = np.asarray(jax.jit(lambda k, m: random_token_mask(k, m, rho=rho))(jax.random.key(1), mask))
  n = mask.sum(1)
  np.testing.assert_array_equal(kept.sum(1), [math.ceil(round(rho * x, 9)) for x in n])
  assert not np.any(kept & ~mask)


def test_random_mask_is_uniform_over_positions_and_reproducible():
  mask = np.ones((1, 10), bool)
  draw = jax.jit(jax.vmap(lambda k: random_token_mask(k, mask, rho=0.2)))
  kept = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))[:, 0]  # [4000, 10], 2 tokens each
  freq = kept.mean(0)
  # Each position is kept with probability 2/10; 4000 draws: standard error 0.0063, 5 SE bounds 0.032.
  np.testing.assert_allclose(freq, 0.2, atol=0.032)
  pairs = {tuple(np.flatnonzero(r)) for r in kept[:2000]}
  assert len(pairs) == 45  # every 2-subset of 10 positions occurs
  again = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))[:, 0]
  np.testing.assert_array_equal(kept, again)  # the same key: the same mask
  assert np.any(kept != np.asarray(draw(jax.random.split(jax.random.key(1), 4000)))[:, 0])


def test_random_mask_method_outcome_advantages_and_rho_1_is_grpo():
  inputs = _inputs(rewards=((1.0, 0.0),), lengths=((4, 3),))
  methods = [make_credit("random-mask"), make_credit("outcome"), make_credit("random-mask", rho=1.0),
             make_credit("random-mask", normaliser="valid")]
  call = jax.jit(lambda x: [m(x) for m in methods])
  out, grpo, full, valid = call(inputs)
  np.testing.assert_array_equal(np.asarray(out.weights).sum(-1), [[1, 1]])  # ceil(0.2·4) = ceil(0.2·3) = 1
  np.testing.assert_allclose(out.advantages, grpo.advantages, atol=1e-6)
  np.testing.assert_array_equal(full.weights, grpo.weights)
  np.testing.assert_array_equal(valid.normaliser, inputs.mask)
  np.testing.assert_array_equal(out.weights, call(inputs)[0].weights)  # reproducible from the credit key
  other = inputs._replace(extras={**inputs.extras, CREDIT_KEY: jnp.asarray(credit_key_data(jax.random.key(9), 1))})
  draws = {tuple(np.flatnonzero(np.asarray(call(x)[0].weights)[0, 0]))
           for x in [other] + [other._replace(extras={**other.extras, CREDIT_KEY: jnp.asarray(
               credit_key_data(jax.random.key(s), 1))}) for s in range(20)]}
  assert len(draws) > 1  # another key: another mask


def test_credit_key_data_is_a_function_of_the_key():
  a = credit_key_data(jax.random.key(7), 3)
  assert a.shape == (3, 2) and a.dtype == np.uint32
  np.testing.assert_array_equal(a, credit_key_data(jax.random.key(7), 3))
  np.testing.assert_array_equal(a, credit_key_data(jax.random.PRNGKey(7), 3))  # a raw key: the same keys
  assert len({tuple(r) for r in a}) == 3
  assert np.any(a != credit_key_data(jax.random.key(8), 3))


# ------------------------------------------------------------------ shuffle


def test_shuffle_permutes_only_valid_entries_and_keeps_their_multiset():
  mask = np.array([[1, 1, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], bool)
  x = np.arange(18, dtype=np.float32).reshape(3, 6) + 0.5
  (y,) = jax.jit(shuffle_within_rows)(jax.random.key(3), mask, x)
  y = np.asarray(y)
  np.testing.assert_array_equal(y[~mask], x[~mask])  # padding unchanged
  for row in range(3):
    np.testing.assert_array_equal(np.sort(y[row][mask[row]]), np.sort(x[row][mask[row]]))
  a, b = jax.jit(shuffle_within_rows)(jax.random.key(3), mask, x, 2 * x)  # one permutation for every array
  np.testing.assert_array_equal(np.asarray(b), 2 * np.asarray(a))
  np.testing.assert_array_equal(np.asarray(a), y)  # reproducible


def test_shuffle_is_uniform_over_permutations():
  mask = np.array([0, 1, 1, 0, 1], bool)
  perms = np.asarray(jax.jit(jax.vmap(lambda k: shuffle_permutation(k, mask)))(
      jax.random.split(jax.random.key(0), 3000)))
  assert np.all(perms[:, ~mask] == np.flatnonzero(~mask))
  counts = {}
  for p in perms[:, mask]:
    counts[tuple(p)] = counts.get(tuple(p), 0) + 1
  assert len(counts) == 6  # 3! orders of the valid positions 1, 2, 4
  # 500 expected each; binomial SE ≈ 20.4, 5 SE ≈ 102.
  assert all(abs(c - 500) < 102 for c in counts.values()), counts


def test_shuffled_credit_keeps_each_responses_credits():
  scores = np.array([[[0.5, 0.75, 0.25, 0.0], [0.5, 0.5, 1.0, 1.0]]], np.float32)
  inputs = _inputs(scores, rewards=((0.0, 1.0),), lengths=((5, 4),), ends=((2, 3, 4), (1, 2, 3)))
  inputs = inputs._replace(entropy=jnp.asarray(np.random.default_rng(0).random(inputs.mask.shape)))
  m = np.asarray(inputs.mask)
  pairs_of = ((make_credit("verifier", lam=0.5, after_fatal="negative"), "lam=0.5;after_fatal=negative"),
              (make_credit("entropy-mask", rho=0.5), "rho=0.5"), (make_credit("outcome"), ""))
  methods = [(inner, make_credit("shuffled", method=inner.name, settings=settings)) for inner, settings in pairs_of]
  assert all(shuffled.inner == inner for inner, shuffled in methods)
  results = jax.jit(lambda x: [(inner(x), shuffled(x)) for inner, shuffled in methods])(inputs)
  for a, s in results[:2]:
    for g in range(2):
      pairs = lambda c: sorted(zip(np.asarray(c.advantages)[0, g][m[0, g]], np.asarray(c.weights)[0, g][m[0, g]]))
      np.testing.assert_allclose(pairs(s), pairs(a), atol=1e-6)
  # Outcome credit is the same on every token of a response: shuffling it changes nothing.
  o, so = results[2]
  np.testing.assert_array_equal(so.advantages, o.advantages)
  np.testing.assert_array_equal(so.weights, o.weights)


def test_shuffled_moves_policy_value_credit_off_its_step():
  # One response, 12 tokens, one decisive token (the fatal step's): over keys, the credit lands everywhere.
  scores = np.array([[[1, 1, 0, 0], [1, 1, 1, 1]]], np.float32)
  inputs = _inputs(scores, lengths=((12, 12),), ends=((5, 6, 11), (5, 6, 11)), rewards=((0.0, 1.0),))
  method = jax.jit(make_credit("shuffled", method="policy-value"))
  where = {int(np.flatnonzero(np.asarray(method(inputs._replace(extras={
      **inputs.extras, CREDIT_KEY: jnp.asarray(credit_key_data(jax.random.key(s), 1))})).advantages)[0, 0])[0])
           for s in range(60)}
  assert len(where) >= 8  # P(fewer than 8 of 12 positions in 60 uniform draws) < 1e-6


def test_shuffled_settings_reach_the_wrapped_method():
  # ";" separates the wrapped method's settings, so a judge's own comma-separated settings pass through.
  s = make_credit("shuffled", method="judge", settings="judge=mc;judge_settings=continuations=8,fork_rows=128;lam=0.25")
  assert s.inner == make_credit("judge", judge="mc", judge_settings="continuations=8,fork_rows=128", lam=0.25)
  assert s.host_cost == "judge" and s.needs_extras == () and not s.needs_tree
  assert make_credit("shuffled", method="verifier", settings="outcome=false").inner.outcome is False
  assert make_credit("shuffled", method="mi-weight").needs_extras == ("info_gain",)


@pytest.mark.parametrize("settings, message", [
    (dict(method="shuffled"), "credit.method"), (dict(method="no-such-method"), "allowed"),
    (dict(method="variance-filter"), "filters groups"), (dict(method="verifier", settings="lam"), "key=value"),
    (dict(method="verifier", settings="nope=1"), "allowed"), (dict(method="verifier", settings="lam=-1"), "lam"),
    (dict(method="verifier", settings="lam=abc"), "float"), (dict(method="verifier", settings="eps=inf"), "finite")])
def test_shuffled_refuses_bad_settings(settings, message):
  with pytest.raises(ValueError, match=message):
    make_credit("shuffled", **settings)


@pytest.mark.parametrize("name, settings", [
    ("verifier", dict(after_fatal="never")), ("verifier", dict(lam=-0.5)), ("verifier", dict(outcome=1)),
    ("policy-value", dict(continuations=0)), ("policy-value", dict(norm="std")), ("random-mask", dict(rho=0.0)),
    ("random-mask", dict(rho=1.5)), ("random-mask", dict(normaliser="all"))])
def test_controls_refuse_bad_settings(name, settings):
  with pytest.raises(ValueError, match="credit."):
    make_credit(name, **settings)


# ------------------------------------------------------------------ host arrays on hand-made responses


def _text_groups(task, texts, rewards):
  """One group of hand-made responses of `task` as sampled `Groups` (EOS after each)."""
  tk = task.tokenizer
  t = task.max_response_len
  tokens = np.full((1, len(texts), t), tk.pad_id, np.int32)
  mask = np.zeros((1, len(texts), t), bool)
  for j, text in enumerate(texts):
    ids = list(tk.encode(text)) + [tk.eos_id]
    tokens[0, j, :len(ids)] = ids
    mask[0, j, :len(ids)] = True
  rollouts = Rollouts(tokens=tokens, logp=np.zeros(tokens.shape, np.float32), mask=mask,
                      finished=np.ones((1, len(texts)), bool))
  return Groups(prompt=np.zeros((1, 1), np.int32), prompt_valid=np.ones((1, 1), bool), rollouts=rollouts,
                rewards=np.asarray([rewards], np.float32), texts=[list(texts)])


def test_verifier_host_arrays_on_hand_made_countdown_responses():
  task = make_task("countdown")
  problem = Problem(prompt="3 5 7>22:", answer="22", solution="3*5=15,15+7=22#22", data=((3, 5, 7), 22))
  texts = ["3*5=15,15+7=22#22",  # solved: every prefix value 1
           "3+5=8,8*7=56#56",  # 3+5=8 leaves {7, 8}: 22 unreachable (fatal first step)
           "3*5=15,15+7=22#2"]  # a prefix of the answer: the oracle still says 1, the reward says 0
  rewards = [task.reward(problem, t) for t in texts]
  assert rewards == [1.0, 0.0, 0.0]
  ctx = JudgeContext(None, None, jax.random.key(0), 1.0)
  extras = make_credit("verifier").host_extras(task, [problem], _text_groups(task, texts, rewards),
                                               ctx).arrays
  valid = extras["judge_valid"][0]
  np.testing.assert_array_equal(valid.sum(-1), [4, 4, 4])  # s_0 and three steps (two equations, the answer)
  np.testing.assert_array_equal(extras["judge_scores"][0][:, :4], [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]])
  r = np.asarray(verifier_step_rewards(extras["judge_scores"][0], valid))[:, 1:4]
  np.testing.assert_array_equal(r, [[1, 1, 1], [-1, 0, 0], [1, 1, -1]])
  # The steps cover the tokens: "3*5=15" is step 1, ",15+7=22" step 2, "#22" + EOS step 3.
  np.testing.assert_array_equal(extras["judge_steps"][0, 0, :18], [1] * 6 + [2] * 8 + [3] * 4)
  keys = make_credit("shuffled").host_extras(task, [problem], _text_groups(task, texts, rewards),
                                             ctx).arrays
  assert keys[CREDIT_KEY].shape == (1, 2) and set(keys) == {CREDIT_KEY, *extras}
  np.testing.assert_array_equal(keys["judge_scores"], extras["judge_scores"])


def test_local_verifier_on_hand_made_lock_chain_responses():
  """after_fatal="local" on lock-chain: the keys after a wrong one are judged by the codebook, their checksums by
  the written state; the credit on each token is the label of its step."""
  from tcred.tasks.lock_chain import LockChain, LockChainConfig
  task = LockChain(LockChainConfig(decisions=3, filler=1))
  problem = task.make_problem("KQB", (3, 7, 1))
  texts = [problem.solution,  # "K3=3a,Q7=0a,B1=1a#1"
           "K5=5a,Q7=2a,B1=3a#3",  # a wrong first key, the rest right on the written state
           "K3=3a,Q2=5a,B4=9a#9"]  # a wrong second key, then a wrong third key
  assert texts[0] == "K3=3a,Q7=0a,B1=1a#1"
  rewards = [task.reward(problem, t) for t in texts]
  ctx = JudgeContext(None, None, jax.random.key(0), 1.0)
  groups = _text_groups(task, texts, rewards)
  extras = make_credit("verifier", after_fatal="local").host_extras(task, [problem], groups, ctx).arrays
  np.testing.assert_array_equal(extras["step_labels"][0, :, :5], [[0, 1, 1, 1, 1], [0, -1, 1, 1, 1],
                                                                   [0, 1, -1, -1, 1]])
  assert "step_labels" not in make_credit("verifier").host_extras(task, [problem], groups, ctx).arrays
  mask = groups.rollouts.mask
  zeros = jnp.zeros(mask.shape)
  inputs = CreditInputs(rewards=jnp.asarray(groups.rewards), mask=jnp.asarray(mask), group_valid=jnp.array([True]),
                        entropy=zeros, logp=zeros, old_logp=zeros,
                        extras={k: jnp.asarray(v) for k, v in extras.items()})
  process = make_credit("verifier", outcome=False, lam=1.0, after_fatal="local")(inputs).advantages[0]
  zero = make_credit("verifier", outcome=False, lam=1.0)(inputs).advantages[0]
  # Row 2: "K3=3a" +1, ",Q2=5a" −1 (fatal), ",B4=9a" −1 (a wrong key on the written state), "#9" + EOS +1.
  np.testing.assert_array_equal(np.asarray(process)[2, :20], [1] * 5 + [-1] * 6 + [-1] * 6 + [1] * 3)
  np.testing.assert_array_equal(np.asarray(zero)[2, :20], [1] * 5 + [-1] * 6 + [0] * 9)
  np.testing.assert_array_equal(np.asarray(process)[1, :20], [-1] * 5 + [1] * 15)


def test_local_verifier_needs_a_task_with_step_labels():
  from tcred.experiments import get_experiment
  ok = get_experiment("lock-chain-k8-verifier-process").with_overrides(["credit.after_fatal=local"])
  assert ok.credit.after_fatal == "local"
  with pytest.raises(ValueError, match='after_fatal="local" needs a task that labels steps.*countdown'):
    get_experiment("countdown-verifier-process").with_overrides(["credit.after_fatal=local"])
