"""The Monte-Carlo judge: continuations forked from cached prefixes equal a re-prefilled sampler; values,
shapes, keys, labels' replica agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.judges import JudgeContext, make_judge
from tcred.judges.labels import LabelRule
from tcred.judges import mc
from tcred.judges.mc import (decisive_tokens, label_agreement, replica_agreement, step_values, token_advantages,
                             token_values)
from tcred.sampling.rollout import encode_prompts
from tcred.sampling.sampler import sample_groups
from tcred.tasks.registry import make_task
from tcred.testing.explore import fake_continuation_means, token_batch

TASK = make_task("countdown")


def _setup(tiny_model):
  graphdef, params = nnx.split(tiny_model)
  rng = np.random.default_rng(0)
  problems = [TASK.sample(rng) for _ in range(2)]
  # Two responses per problem: a demonstration and its first step alone (a shared prefix; unfinished answer).
  responses = []
  for p in problems:
    demo = TASK.demonstration(p, rng)
    responses.append([demo, demo[:TASK.step_ends(demo)[0]]])
  return graphdef, params, problems, responses


def _greedy_reference(graphdef, params, problems, responses):
  """Q_k by re-prefilling prompt + prefix and decoding greedily (the study's way, truth.py), one compilation:
  every prefix continued for T tokens, a continuation counting only if it ends within T − at tokens."""
  tk, t_max = TASK.tokenizer, TASK.max_response_len
  prompt, valid = encode_prompts(TASK, problems)
  rows, meta = [], []
  for b, group in enumerate(responses):
    for text in group:
      ids = np.concatenate([tk.encode(text), [tk.eos_id]])
      ends = TASK.step_ends(text)
      for k, at in enumerate([0] + ends[:-1]):
        rows.append(np.concatenate([prompt[b][valid[b]], ids[:at]]))
        meta.append((b, text, k, at, ids))
  width = prompt.shape[1] + t_max
  left = np.full((len(rows), width), tk.pad_id, np.int32)
  left_valid = np.zeros((len(rows), width), bool)
  for n, row in enumerate(rows):
    left[n, width - len(row):], left_valid[n, width - len(row):] = row, True
  out = sample_groups(graphdef, params, jnp.asarray(left), jnp.asarray(left_valid), jax.random.key(0), group_size=1,
                      max_new_tokens=t_max, temperature=1.0, greedy=True, eos_id=tk.eos_id, pad_id=tk.pad_id)
  cont = np.asarray(out.tokens)[:, 0]
  want = {}
  for n, (b, text, k, at, ids) in enumerate(meta):
    budget = cont[n, :t_max - at]
    ended = np.isin(budget, tk.eos_ids).any()
    full = tk.decode(np.concatenate([ids[:at], budget]))
    want[b, text, k] = float(TASK.reward(problems[b], full)) if ended else 0.0
  return want


@pytest.mark.slow  # two samplers' compilations, ~30 s on a loaded 2-core machine
def test_forks_from_cached_prefixes_equal_re_prefilled_greedy_continuations(tiny_model):
  graphdef, params, problems, responses = _setup(tiny_model)
  # Near-greedy: temperature 1e-4 makes the Gumbel draw an argmax (the tiny model's logits have no ties).
  v = step_values(graphdef, params, TASK, problems, responses, continuations=2, key=jax.random.key(1),
                  temperature=1e-4)
  want = _greedy_reference(graphdef, params, problems, responses)
  ks = {(b, text): k for (b, text, k) in want}
  for b, group in enumerate(responses):
    for g, text in enumerate(group):
      k_steps = len(TASK.step_ends(text))
      np.testing.assert_array_equal(v.valid[b, g], np.arange(v.q.shape[-1]) <= k_steps)
      for k in range(ks[b, text] + 1):
        assert v.q[b, g, k] == want[b, text, k], (b, g, k)
      # Q_K: the response's own reward (a response that filled no budget ended with EOS).
      assert v.q[b, g, k_steps] == TASK.reward(problems[b], text)
  # The shared prefix (the prompt; the first step) gets one Q for every response holding it.
  assert np.all(v.q[:, 0, 0] == v.q[:, 1, 0])


def test_values_shapes_keys_and_cost(tiny_model):
  graphdef, params, problems, responses = _setup(tiny_model)
  kw = dict(continuations=3, temperature=1.0, rewards=np.array([[1.0, 0.0], [0.0, 1.0]]), fork_rows=12)
  a = step_values(graphdef, params, TASK, problems, responses, key=jax.random.key(5), **kw)
  b = step_values(graphdef, params, TASK, problems, responses, key=jax.random.key(5), **kw)
  k_max = max(len(TASK.step_ends(t)) for g in responses for t in g)
  assert a.q.shape == a.valid.shape == (2, 2, k_max + 1)
  np.testing.assert_array_equal(a.q, b.q)  # same key, same values
  q = a.q[a.valid]
  assert np.all((q >= 0) & (q <= 1)) and np.all(np.isnan(a.q[~a.valid]))
  last = a.valid.sum(-1) - 1
  np.testing.assert_array_equal(np.take_along_axis(a.q, last[..., None], -1)[..., 0], kw["rewards"])  # Q_K = reward
  # Cost: the prompts and responses prefilled once, then continuation tokens (at least one per continuation).
  tk = TASK.tokenizer
  prefilled = sum(len(tk.prompt_ids(p.prompt)) + len(tk.encode(t)) + 1 for p, g in zip(problems, responses) for t in g)
  distinct = len({(b, t[:e]) for b, g in enumerate(responses) for t in g for e in [0] + TASK.step_ends(t)[:-1]})
  assert a.tokens >= prefilled + distinct * 3
  # The judge: s = Q, with the context's policy and key.
  ctx = JudgeContext(graphdef, params, jax.random.key(5), 1.0, rewards=kw["rewards"])
  s = make_judge("mc", continuations=3, fork_rows=12).score_groups(TASK, problems, responses, ctx)
  np.testing.assert_array_equal(s.valid, a.valid)
  np.testing.assert_array_equal(s.scores[s.valid], a.q[a.valid].astype(np.float32))
  assert s.tokens == a.tokens and s.seconds > 0


def test_label_agreement_by_hand():
  # Two replicas of one response, Q_0..Q_3; abs-q labels [Q_k > 0]:
  #   a = [.5, .5, 0, 0] -> [T, F, F], first error 1;  b = [.5, .25, .25, 0] -> [T, T, F], first error 2.
  # 2 of 3 labels agree; first errors differ. The second response (K = 1) agrees: [1 > 0] vs [.5 > 0].
  q_a = np.array([[0.5, 0.5, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
  q_b = np.array([[0.5, 0.25, 0.25, 0.0], [1.0, 0.5, 0.0, 0.0]])
  valid = np.array([[True] * 4, [True, True, False, False]])
  got = label_agreement(q_a, q_b, valid, LabelRule(rule="abs-q"))
  assert got == (3 / 4, 1 / 2, 4, 2)
  # rel-ratio (γ = 0.75): a: [.5 > .375, 0 > .375, 0 > 0] = [T, F, F], first error 1; b: [.25 > .375,
  # .25 > .1875, 0 > .1875] = [F, T, F], first error 0: 1 of 3 agree. Second response: [1 > .75] = [T] (none)
  # vs [.5 > .75] = [F] (0): 0 of 1. Labels 1/4, first errors 0/2.
  got = label_agreement(q_a, q_b, valid, LabelRule(rule="rel-ratio"))
  assert got.labels == 1 / 4 and got.first_error == 0.0


def test_replica_agreement_of_one_key_is_one_and_lists_every_rule(tiny_model):
  graphdef, params, problems, responses = _setup(tiny_model)
  out = replica_agreement(graphdef, params, TASK, problems, responses, continuations=3, key=jax.random.key(2),
                          temperature=1.0, fork_rows=12)  # the shapes of the test above: no new compilation
  assert sorted(out) == ["abs-q", "rel-effective", "rel-ratio"]
  for agreement in out.values():
    assert 0.0 <= agreement.labels <= 1.0 and 0.0 <= agreement.first_error <= 1.0
    assert agreement.responses == 4 and agreement.steps == sum(len(TASK.step_ends(t)) for g in responses for t in g)


def test_mc_judge_settings_are_checked():
  with pytest.raises(ValueError, match="continuations must be an integer >= 1"):
    make_judge("mc", continuations=0)
  with pytest.raises(TypeError, match="score_groups"):
    make_judge("mc").prior(TASK, TASK.sample(np.random.default_rng(0)))


def test_token_values_by_hand(monkeypatch):
  """Every distinct prefix is continued once; V̂_k is its mean (here a hand-made policy's), lost prefixes 0
  without continuing, V̂_L the reward, NaN beyond; A_t and the decisive labels follow."""
  rng = np.random.default_rng(0)
  problems = [TASK.sample(rng) for _ in range(2)]
  responses = []
  for p in problems:
    demo = TASK.demonstration(p, rng)
    responses.append([demo, demo, demo[:TASK.step_ends(demo)[0]]])  # a duplicate and a shared prefix
  tokens, mask = token_batch(TASK, responses)
  rewards = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  lost = np.zeros(mask.shape, bool)
  lost[1, 0, 5:] = True  # say the oracle calls prefixes of >= 5 tokens of response (1, 0) lost
  calls = []
  monkeypatch.setattr(mc, "continuation_means", fake_continuation_means(calls))
  v = token_values(None, None, TASK, problems, tokens, mask, rewards, continuations=4, key=jax.random.key(0),
                   temperature=1.0, lost=lost)
  asked = calls[0]
  assert len(asked) == len(set(asked)) == v.prefixes  # each distinct prefix once
  lengths = mask.sum(-1)
  for i in range(2):
    for j in range(3):
      n = lengths[i, j]
      for k in range(n):
        want = 0.0 if lost[i, j, k] else ((7 * k + i) % 5) / 4
        assert v.values[i, j, k] == want, (i, j, k)
        if not lost[i, j, k]:
          assert (i, tokens[i, j, :k].tobytes()) in asked
      assert v.values[i, j, n] == rewards[i, j] and np.isnan(v.values[i, j, n + 1:]).all()
  # Prefixes the oracle calls lost are never continued; (1, 1) shares (1, 0)'s prefixes and is continued.
  assert v.prefixes == len({(i, tokens[i, j, :k].tobytes()) for i in range(2) for j in range(3)
                            for k in range(lengths[i, j]) if not lost[i, j, k]})
  adv = token_advantages(v.values, mask)
  np.testing.assert_allclose(adv[0, 0, :3], np.diff(v.values[0, 0, :4]))
  assert adv[0, 0, lengths[0, 0] - 1] == rewards[0, 0] - v.values[0, 0, lengths[0, 0] - 1]
  assert not adv[~mask].any()
  dec = decisive_tokens(v.values, mask, 0.5)
  np.testing.assert_array_equal(dec, mask & (np.abs(adv) >= 0.5))
  assert dec.any() and not dec.all()


def test_token_values_of_a_policy(tiny_model):
  """The tiny model's continuations (the shapes of test_values_shapes_keys_and_cost: no new compilation):
  the same key gives the same values, every value is a mean of K rewards, V̂_L the reward."""
  graphdef, params, problems, responses = _setup(tiny_model)
  tokens, mask = token_batch(TASK, responses)
  rewards = np.array([[1.0, 0.0], [0.0, 1.0]])
  kw = dict(continuations=3, temperature=1.0, fork_rows=12)
  a = token_values(graphdef, params, TASK, problems, tokens, mask, rewards, key=jax.random.key(5), **kw)
  b = token_values(graphdef, params, TASK, problems, tokens, mask, rewards, key=jax.random.key(5), **kw)
  np.testing.assert_array_equal(a.values, b.values)
  lengths = mask.sum(-1)
  inside = np.arange(tokens.shape[-1] + 1) < lengths[..., None]
  assert np.all(np.isin(a.values[inside] * 3, [0, 1, 2, 3]))  # means of 3 rewards
  np.testing.assert_array_equal(np.take_along_axis(a.values, lengths[..., None], -1)[..., 0], rewards)
  # The responses of a problem share their first step: those prefixes are continued once.
  assert a.prefixes == len({(i, tokens[i, j, :k].tobytes()) for i in range(2) for j in range(2)
                            for k in range(lengths[i, j])})
  assert a.tokens > a.prefixes * 3 and a.seconds > 0
  with pytest.raises(ValueError, match="continuations must be an integer >= 1"):
    token_values(graphdef, params, TASK, problems, tokens, mask, rewards, key=jax.random.key(5), continuations=0,
                 temperature=1.0)
