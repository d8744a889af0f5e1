"""The `judge` credit method: A_{i,t} = A_i + λ·d̂_{i,k(t)} against a NumPy reference; λ = 0 is `outcome`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.credit import make_credit
from tcred.credit.base import CreditInputs
from tcred.credit.judge import JUDGE_EXTRAS
from tcred.judges.credit import token_steps
from tcred.losses.pg import LossConfig
from tcred.testing import numpy_refs as ref
from tcred.training.optim import adamw
from tcred.training.step import Batch, TrainState, rl_train_step

B, G, T = 3, 4, 8


def _arrays():
  """Group 0: mixed rewards, ragged steps and padding; group 1: all-equal rewards and constant scores
  (all-equal score changes); group 2: a filler group (group_valid False)."""
  rng = np.random.default_rng(0)
  lengths = np.array([[8, 5, 3, 6], [4, 4, 7, 2], [6, 6, 6, 6]])
  ends = [[[2, 5, 7], [1, 4], [3], [2, 3, 5]], [[2], [1, 3], [2, 4, 6], [1]], [[3], [3], [3], [3]]]
  steps = np.stack([np.stack([token_steps(ends[b][g], lengths[b, g], T) for g in range(G)]) for b in range(B)])
  mask = np.arange(T)[None, None, :] < lengths[..., None]
  scores = np.zeros((B, G, T + 1), np.float32)
  valid = np.zeros((B, G, T + 1), bool)
  for b in range(B):
    for g in range(G):
      k = len(ends[b][g])
      valid[b, g, :k + 1] = True
      scores[b, g, :k + 1] = rng.random(k + 1) if b != 1 else 0.5
  rewards = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 1, 0, 0]], np.float32)
  group_valid = np.array([True, True, False])
  return rewards, scores, valid, steps, mask, group_valid


def _inputs(rewards, scores, valid, steps, mask, group_valid):
  zeros = jnp.zeros(mask.shape)
  extras = dict(zip(JUDGE_EXTRAS, map(jnp.asarray, (scores, valid, steps))))
  return CreditInputs(rewards=jnp.asarray(rewards), mask=jnp.asarray(mask), group_valid=jnp.asarray(group_valid),
                      entropy=zeros, logp=zeros, old_logp=zeros, extras=extras)


@pytest.mark.parametrize("variant, lam", [("jit", 0.0), ("jit", 0.5), ("jit", 2.0),
                                          pytest.param("nojit", 0.5, marks=pytest.mark.slow)])  # op by op: ~8 s
def test_judge_credit_equals_numpy_reference(variant, lam):
  arrays = _arrays()
  rewards, scores, valid, steps, mask, group_valid = arrays
  method = make_credit("judge", lam=lam)
  out = (jax.jit(method) if variant == "jit" else method)(_inputs(*arrays))
  want = ref.judge_credit(rewards, scores, valid, steps, mask, group_valid, lam)
  got = np.asarray(out.advantages)
  np.testing.assert_allclose(np.where(mask, got, 0.0), np.where(mask, want, 0.0), atol=1e-5)
  assert np.all(np.isfinite(got))
  np.testing.assert_array_equal(out.weights, (mask & group_valid[:, None, None]).astype(np.float32))
  assert np.all(got[1] == 0)  # all-equal rewards and score changes: no credit, no NaN
  assert np.all(got[2] == 0)  # the filler group
  if lam > 0:  # the process part moves group 0's tokens within a rollout
    assert np.ptp(np.where(mask[0], got[0], np.nan)[0][:8]) > 0


def test_group_of_one_and_no_steps_give_no_nan():
  # G = 1 with lone="reward": the outcome advantage is the raw reward and the process advantage normalises
  # the rollout's own steps (lone="zero", the default: no credit at all, like GRPO's lone rollout);
  # a rollout whose judge scored no step (only s_0 valid) gets no process credit.
  mask = np.arange(T)[None, None, :] < np.array([[[5]], [[3]]])
  steps = np.stack([token_steps([2, 5], 5, T)[None], token_steps([], 3, T)[None]])
  scores = np.zeros((2, 1, T + 1), np.float32)
  scores[0, 0, :3] = [0.5, 1.0, 0.0]  # deltas +0.5, −1: mean −0.25, std 0.75 -> +1, −1
  valid = scores > -1
  valid[0, 0, 3:] = False
  valid[1, 0, 1:] = False
  inputs = _inputs(np.array([[1.0], [0.0]], np.float32), scores, valid, steps, mask, np.array([True, True]))
  adv = np.asarray(jax.jit(make_credit("judge", lam=1.0, lone="reward"))(inputs).advantages)
  np.testing.assert_allclose(adv[0, 0, :5], [2, 2, 0, 0, 0], atol=1e-4)  # reward 1 + (+1, +1, −1, −1, −1)
  assert np.all(adv[1] == 0) and np.all(np.isfinite(adv))
  assert np.all(np.asarray(jax.jit(make_credit("judge", lam=1.0))(inputs).advantages) == 0)


def test_vmap_over_batches_equals_the_batched_call():
  arrays = _arrays()
  method = make_credit("judge", lam=0.7)
  batched = np.asarray(method(_inputs(*arrays)).advantages)
  one = jax.jit(jax.vmap(lambda *a: method(_inputs(*(x[None] for x in a))).advantages[0]))(*map(jnp.asarray, arrays))
  np.testing.assert_allclose(one, batched, atol=1e-6)


def test_lambda_zero_gives_grpo_credit_bit_for_bit():
  # The loss reads only the Credit (advantages, weights, normaliser): equal Credit, equal step.
  arrays = _arrays()
  inputs = _inputs(*arrays)
  for fn in (lambda m: m, jax.jit):
    judge, grpo = fn(make_credit("judge", lam=0.0))(inputs), fn(make_credit("outcome"))(inputs)
    np.testing.assert_array_equal(judge.advantages, grpo.advantages)
    np.testing.assert_array_equal(judge.weights, grpo.weights)
    assert judge.normaliser is None and grpo.normaliser is None


@pytest.mark.slow  # two train-step compilations (~30 s on a loaded 2-core machine)
def test_lambda_zero_trains_bit_for_bit_like_grpo(tiny_model):
  rewards, scores, valid, steps, mask, group_valid = _arrays()
  group_valid = np.ones(B, bool)
  k = jax.random.split(jax.random.key(3), 2)
  batch = Batch(prompt=jax.random.randint(k[0], (B, 4), 3, 99), prompt_valid=jnp.ones((B, 4), bool),
                response=jnp.where(mask, jax.random.randint(k[1], (B, G, T), 3, 99), 0), mask=jnp.asarray(mask),
                old_logp=jnp.full((B, G, T), -4.0) * mask, rewards=jnp.asarray(rewards),
                group_valid=jnp.asarray(group_valid),
                extras=dict(zip(JUDGE_EXTRAS, map(jnp.asarray, (scores, valid, steps)))))
  graphdef, params = nnx.split(tiny_model)
  tx = adamw(1e-2, warmup=0, weight_decay=0.0, max_grad_norm=0.0)
  results = []
  for credit in (make_credit("outcome"), make_credit("judge", lam=0.0)):
    state = TrainState(jax.tree.map(jnp.copy, params), tx.init(params), jnp.int32(0))
    state, metrics = rl_train_step(state, batch, None, graphdef=graphdef, tx=tx, credit=credit,
                                   loss_config=LossConfig(), temperature=1.0)
    results.append((jax.device_get(state.params), jax.device_get(metrics)))
  (p_out, m_out), (p_judge, m_judge) = results
  for a, b in zip(jax.tree.leaves(p_out), jax.tree.leaves(p_judge)):
    np.testing.assert_array_equal(a, b)
  for key, value in m_out.items():
    np.testing.assert_array_equal(m_judge[key], value, err_msg=key)


@pytest.mark.parametrize("settings, match", [
    (dict(judge="nope"), r"unknown judge 'nope'; allowed: \[.*'mc'.*'oracle'"),
    (dict(judge="mc", judge_settings="samples=3"), r"judge 'mc' has no setting 'samples'; allowed: \["),
    (dict(judge="mc", judge_settings="continuations=many"), r"continuations='many': expected a value of type int"),
    (dict(judge="mc", judge_settings="continuations=0"), r"continuations must be an integer >= 1"),
    (dict(judge="mc", judge_settings="continuations"), r"key=value pairs"),
    (dict(lam=-1.0), r"credit.lam must be a number >= 0"),
    (dict(mode="nope"), r"unknown credit.mode"),
])
def test_bad_judge_settings_name_the_problem(settings, match):
  with pytest.raises(ValueError, match=match):
    make_credit("judge", **settings)


def test_judge_settings_reach_the_judge():
  judge = make_credit("judge", judge="mc", judge_settings="continuations=3, fork_rows=64").make_judge()
  assert (judge.continuations, judge.fork_rows) == (3, 64)


def test_a_judge_is_prepared_from_the_base_policy_when_given():
  """A resumed run's first `prepare` sees the run's base policy, not the resumed one (a trained judge's cache
  entry is keyed by the policy it was trained from, so the run finds the judge its first step built)."""
  import dataclasses
  from typing import ClassVar

  from tcred.credit import judge as judge_credit
  from tcred.judges.base import Judge, JudgeContext

  seen = []

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Recorder(Judge):
    name: ClassVar[str] = "recorder-for-test"
    description: ClassVar[str] = "records the policy it is prepared from"

    def prepare(self, task, ctx):
      seen.append(ctx.params)
      return self

    def score(self, task, problem, response, ends):
      return np.ones(len(ends))

    def prior(self, task, problem):
      return 1.0

  class FakeTask:
    name = "fake"

  ctx = JudgeContext(None, "resumed", jax.random.key(0), 1.0, task_config="a", base_params="base")
  judge_credit.prepared_judge(Recorder(), FakeTask(), ctx)
  judge_credit.prepared_judge(Recorder(), FakeTask(), ctx._replace(task_config="b", base_params=None))
  assert seen == ["base", "resumed"]
